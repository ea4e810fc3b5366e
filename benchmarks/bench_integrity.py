"""Index integrity: what checking the index files costs.

1. Checksum throughput of the candidates (standard library, numpy, numba) over 256 MB in memory,
   best of 3, as a ratio of CRC-32 (the one the manifest uses) in the same run.
2. Verifying an index at load at a million passages: files of the sizes a 1M index has
   (benchmarks/README.md, section 2: 5.7 GB in all; synthetic bytes, the checksum does not care
   what they hold) are hashed as `open_index` does, with the files in the page cache and after
   dropping them from it (posix_fadvise on these files only), against just reading the same
   bytes in the same run.
3. The per-question check of the memory-mapped files (`Index.damage`: one read of an inotify
   descriptor; an fstat of each file where there is none)
   against the same run's question time, on a real index of corpus/ with the real model.

    python benchmarks/bench_integrity.py                 # ~2-3 minutes on 2 cores, 5.7 GB in a temp folder
    python benchmarks/bench_integrity.py --scale 0.1     # files of a 100k index
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, describe_machine, machine, remove_scratch, scratch_dir, table, write_json

# Bytes per passage of each file of the 1M index measured in benchmarks/README.md (section 2).
BYTES_PER_PASSAGE = {
    "vectors.npy": 1536,
    "sentence_vectors.npy": 1786,  # int8 codes, 4.7 sentences a passage (sent.vec 1,805 B/p with the scales)
    "sentence_scales.npy": 19,
    "sentences.npy": 113,
    "groups.npy": 8,
    "bm25/counts.npy": 62,  # term counts, uint8 (float32 scores before: 250)
    "bm25/indices.npy": 250,
    "bm25/indptr.npy": 4,
    "bm25/lengths.npy": 2,
    "bm25/vocab.json": 328,
    "articles.jsonl": 1300,
    "passages.jsonl": 82,
}
LOAD_1M_SECONDS = 35.1  # open_index at 1M before checksums (README section 2, an earlier run)
SEED_QUESTIONS = ROOT / "tests" / "data" / "seed_questions.json"


def best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def hash_candidates() -> dict:
    """Name -> (function over a memoryview, note)."""
    import numba

    weights = np.random.default_rng(1).integers(0, 2**63, 1 << 16, dtype=np.uint64) | np.uint64(1)

    def weighted_sum(view):  # position-weighted sum of 64-bit words: linear, not a standard hash
        words = np.frombuffer(view, np.uint64)
        out, total = np.empty(len(weights), np.uint64), np.uint64(0)
        with np.errstate(over="ignore"):
            for start in range(0, len(words), len(weights)):
                part = words[start : start + len(weights)]
                np.multiply(part, weights[: len(part)], out=out[: len(part)])
                total = total * np.uint64(0x9E3779B97F4A7C15) + out[: len(part)].sum()
        return total

    @numba.njit(nogil=True)
    def four_lanes(words):  # multiply-xor in 4 lanes: fast, but home-made
        h0 = h1 = h2 = h3 = np.uint64(0)
        prime = np.uint64(0x9E3779B97F4A7C15)
        for i in range(0, len(words) // 4 * 4, 4):
            h0 = (h0 ^ words[i]) * prime
            h1 = (h1 ^ words[i + 1]) * prime
            h2 = (h2 ^ words[i + 2]) * prime
            h3 = (h3 ^ words[i + 3]) * prime
        return h0 ^ (h1 * np.uint64(3)) ^ (h2 * np.uint64(5)) ^ (h3 * np.uint64(7))

    four_lanes(np.zeros(8, np.uint64))  # compiled before timing
    candidates = {
        "zlib.crc32 (the manifest's)": (lambda v: zlib.crc32(v), "standard library; releases the GIL"),
        "zlib.adler32": (lambda v: zlib.adler32(v), "weak on short or sparse changes"),
    }
    for name in ("sha1", "sha256", "md5", "blake2b"):
        candidates[f"hashlib.{name}"] = (lambda v, n=name: hashlib.new(n, v).digest(), "cryptographic")
    candidates["numpy weighted sum"] = (weighted_sum, "not a standard checksum")
    candidates["numba 4-lane multiply-xor"] = (
        lambda v: four_lanes(np.frombuffer(v, np.uint64)),
        "home-made; JIT compile",
    )
    try:
        import xxhash

        candidates["xxhash.xxh3_64"] = (lambda v: xxhash.xxh3_64(v).digest(), "third-party package")
    except ImportError:
        pass
    return candidates


def measure_hashes(size: int) -> list[dict]:
    data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
    view = memoryview(data)
    rows = []
    for name, (fn, note) in hash_candidates().items():
        seconds = best_of(lambda fn=fn: fn(view))
        rows.append({"candidate": name, "gb_per_s": round(size / seconds / 1e9, 2), "note": note})
    base = rows[0]["gb_per_s"]
    for row in rows:
        row["x_crc32"] = round(row["gb_per_s"] / base, 2)
    return rows


def write_files(folder: Path, passages: int) -> dict[str, int]:
    """Files of the sizes an index of `passages` passages has (a repeated random block)."""
    block = np.random.default_rng(2).integers(0, 256, 64 << 20, dtype=np.uint8).tobytes()
    sizes = {}
    for name, per_passage in BYTES_PER_PASSAGE.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        size = per_passage * passages
        with path.open("wb") as handle:
            left = size
            while left:
                left -= handle.write(block[: min(left, len(block))])
        sizes[name] = size
    return sizes


def drop_from_page_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_only(path: Path) -> None:
    buffer = bytearray(8 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while n := os.preadv(fd, [buffer], offset):
            offset += n
    finally:
        os.close(fd)


def measure_verify(folder: Path, passages: int) -> list[dict]:
    from qa.index.format import STAMPS, Manifest
    from qa.index.verify import check_files as _check_files
    from qa.index.verify import file_checksum

    sizes = write_files(folder, passages)
    paths = [folder / name for name in sizes]
    total = sum(sizes.values())
    checksums = {}

    def at_build() -> None:  # what the writer does: each file in turn
        checksums.update({name: file_checksum(folder / name) for name in sizes})

    def at_load(stamped: bool = False) -> None:  # what open_index does
        if not stamped:  # every file hashed, as at the first load of a copied index
            (folder / STAMPS).unlink(missing_ok=True)
        manifest = Manifest.model_construct(  # (not validated: only the files and checksums are read)
            format_version=0,
            model={},
            chunking={},
            corpus={},
            index={},
            files=sizes,
            checksums=checksums,
            versions={},
            created_at="",
        )
        _check_files(folder, manifest)

    cases = [
        ("cold", "read only (the I/O floor)", lambda: [read_only(path) for path in paths]),
        ("cold", "verify at load (open_index)", at_load),
        ("warm", "read only (the I/O floor)", lambda: [read_only(path) for path in paths]),
        ("warm", "checksums at build", at_build),
        ("warm", "verify at load (open_index)", at_load),
        # The files unchanged since their checksums matched (verified.json): one fstat each.
        ("warm", "load, every file stamped", lambda: at_load(stamped=True)),
    ]
    at_build()
    rows, raw = [], []
    for cache, what, fn in cases:
        if cache == "cold":
            drop_from_page_cache(paths)
        else:
            for path in paths:
                read_only(path)
        start = time.perf_counter()
        fn()
        raw.append(time.perf_counter() - start)
        rows.append(
            {
                "page_cache": cache,
                "what": what,
                # Significant digits, not decimals: at small scales (--scale 0.001) a case takes
                # milliseconds, which 2 decimals rounded to 0.
                "gb": significant(total / 1e9),
                "seconds": significant(raw[-1]),
                "gb_per_s": significant(total / raw[-1] / 1e9) if raw[-1] > 0 else None,
            }
        )
    for row, seconds in zip(rows, raw):
        floor = next(
            s for r, s in zip(rows, raw) if r["page_cache"] == row["page_cache"] and r["what"].startswith("read only")
        )
        # Ratios from the unrounded times; None where a time is below the clock's resolution.
        row["x_read_only"] = round(seconds / floor, 2) if floor > 0 else None
        row["pct_of_1m_load"] = significant(100 * seconds / LOAD_1M_SECONDS * 1_000_000 / passages)
    return rows


def significant(value: float, digits: int = 3) -> float:
    """`value` rounded to `digits` significant digits."""
    return float(f"{value:.{digits}g}")


def measure_check(index_dir: Path, rounds: int) -> tuple[list[dict], int, int]:
    """Per question: the engine's checks against the question itself, same run, real model."""
    from qa.config import Settings
    from qa.index.format import file_stamp, pointer_file
    from qa.retrieval import Engine

    engine = Engine(Settings(index_dir=index_dir))
    engine.warm_up()
    index = engine.index()
    pointer = pointer_file(index_dir)
    fd = next(iter(index.mapped.values())).fd

    def timed_calls(fn, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return out

    facts = json.loads(SEED_QUESTIONS.read_text(encoding="utf-8"))
    questions = [question for fact in facts for question in fact["questions"].values()]
    fresh, cached = [], []
    for n in range(rounds):
        for question in questions:
            start = time.perf_counter()
            engine.search(question, 5)
            (cached if n else fresh).append(time.perf_counter() - start)
    rows = [
        (f"question, embedded (Engine.search, k=5; {len(fresh)} seed questions)", fresh),
        ("question, embedding cached (the baseline)", cached),
        ("pointer stat (the check before this change)", timed_calls(lambda: file_stamp(pointer), 20_000)),
        ("one os.fstat", timed_calls(lambda: os.fstat(fd), 20_000)),
        (f"Index.damage() ({len(index.mapped)} mapped file(s))", timed_calls(index.damage, 20_000)),
        # What damage() did before the inotify watch (qa.index.watch), and still does without one.
        (f"an fstat of each of the {len(index.mapped)} mapped file(s)", timed_calls(index._changed_file, 20_000)),
        ("Engine.index() (pointer stat + damage)", timed_calls(engine.index, 20_000)),
    ]
    # With --rounds 1 no question is asked with its embedding cached: no baseline, no ratio.
    base = float(np.median(cached)) if cached else None
    out = []
    for name, samples in rows:
        if not samples:
            continue
        p50 = float(np.median(samples))
        out.append(
            {
                "what": name,
                "n": len(samples),
                "p50_us": round(p50 * 1e6, 3),
                "mean_us": round(float(np.mean(samples)) * 1e6, 3),
                "x_question_p50": round(p50 / base, 6) if base else None,
            }
        )
    return out, len(index), len(index.mapped)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="index size in millions of passages (files of that size)"
    )
    parser.add_argument("--hash-mb", type=int, default=256, help="in-memory buffer hashed by each candidate")
    parser.add_argument(
        "--dir", type=Path, default=None, help="folder for the generated files (default: a temp folder)"
    )
    parser.add_argument(
        "--index-dir",
        type=Path,
        default=None,
        help="a built index of corpus/ (default: built in a temp folder)",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of the seed questions (the first embeds them)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_integrity.json")
    args = parser.parse_args(argv)
    info = machine()
    print(describe_machine(info), flush=True)

    hashes = measure_hashes(args.hash_mb << 20)
    print(
        table(
            ["candidate", "GB/s", "x crc32", "note"],
            [[r["candidate"], r["gb_per_s"], r["x_crc32"], r["note"]] for r in hashes],
            f"Checksum throughput over {args.hash_mb} MB in memory (best of 3)",
        ),
        flush=True,
    )

    passages = int(args.scale * 1_000_000)
    if passages < 1:
        parser.error(f"--scale {args.scale} gives no passage: use at least 0.000001 (one passage).")
    folder = scratch_dir("qa-integrity-", dir=args.dir)
    try:
        verify = measure_verify(folder, passages)
    finally:
        remove_scratch(folder)
    print(
        table(
            [
                "page cache",
                "what",
                "GB",
                "s",
                "GB/s",
                "x read only",
                f"% of a {LOAD_1M_SECONDS:.0f} s load at 1M",
            ],
            [
                [
                    r["page_cache"],
                    r["what"],
                    r["gb"],
                    r["seconds"],
                    "-" if r["gb_per_s"] is None else r["gb_per_s"],
                    "-" if r["x_read_only"] is None else r["x_read_only"],
                    r["pct_of_1m_load"],
                ]
                for r in verify
            ],
            f"Verifying the files of a {passages:,}-passage index ({len(BYTES_PER_PASSAGE)} files)",
        ),
        flush=True,
    )

    temp = None
    index_dir = args.index_dir
    if index_dir is None:
        from qa.config import Settings
        from qa.index.build import build_index

        temp = scratch_dir("qa-integrity-index-")
        index_dir = temp / "index"
        print("Building an index of corpus/ for the per-question check...", flush=True)
        build_index(ROOT / "corpus", settings=Settings(index_dir=index_dir))
    try:
        check, n_passages, n_mapped = measure_check(index_dir, args.rounds)
    finally:
        if temp is not None:
            remove_scratch(temp)
    print(
        table(
            ["what", "n", "p50 us", "mean us", "x baseline p50"],
            [
                [r["what"], r["n"], r["p50_us"], r["mean_us"], "-" if r["x_question_p50"] is None else r["x_question_p50"]]
                for r in check
            ],
            f"Per question, index of corpus/ ({n_passages} passages, real model)",
        ),
        flush=True,
    )

    payload = {
        "machine": info,
        "hashes": hashes,
        "verify": verify,
        "verify_passages": passages,
        "check": check,
        "check_passages": n_passages,
        "mapped_files": n_mapped,
    }
    print(f"\nWrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
