"""End to end indexing: wall time of `qa index` into a fresh index folder, per embedding backend.

Each run is a fresh `qa index CORPUS` process (imports, model load, chunking, embedding of
passages, sentences and the question sample, BM25, statistics, writing), with
`QA_EMBED_BACKEND` set; backends alternate round after round and the best run of each is kept.
Baseline: `torch` (plain fp32 sentence-transformers). `--xquad N` indexes a larger corpus made of
the first N XQuAD articles in English, German, Chinese and Arabic (one `.txt` per article).

    python benchmarks/bench_index.py                          # corpus/, ~2 minutes on 2 cores
    python benchmarks/bench_index.py --xquad 24 --repeat 2    # 96 articles, ~10 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, describe_machine, machine, shown, table, write_json

REPORT = re.compile(r"into (\d+) passages and (\d+) sentences in ([\d.]+) s")


def xquad_corpus(folder: Path, articles: int, langs=("en", "de", "zh", "ar")) -> Path:
    """Write the first `articles` XQuAD articles of each language as .txt files (title, paragraphs)."""
    from qa.xquad import find_xquad

    source = find_xquad(ROOT)
    if source is None:
        raise SystemExit("No XQuAD data found (a data/xquad or shared/data/xquad folder here or above).")
    for lang in langs:
        data = json.loads((source / f"xquad.{lang}.json").read_text(encoding="utf-8"))["data"]
        for i, article in enumerate(data[:articles]):
            text = "\n\n".join(p["context"] for p in article["paragraphs"])
            (folder / f"{lang}-{i:02d}.txt").write_text(f"{article['title']} ({lang})\n\n{text}\n", encoding="utf-8")
    return folder


def index_once(corpus: Path, backend: str) -> dict:
    """One `qa index` process into a fresh folder: wall seconds and its own summary line."""
    with tempfile.TemporaryDirectory(prefix="bench-index-") as index_dir:
        env = {**os.environ, "QA_INDEX_DIR": index_dir, "QA_EMBED_BACKEND": backend}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "qa.cli", "index", str(corpus)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=3600, check=False)
        wall = time.perf_counter() - start
        manifest = next(Path(index_dir).glob("v-*/manifest.json"), None)
        used = json.loads(manifest.read_text())["model"].get("backend") if manifest else None
    match = REPORT.search(done.stdout + done.stderr)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"qa index failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")
    passages, sentences, seconds = int(match[1]), int(match[2]), float(match[3])
    return {"wall_s": round(wall, 2), "build_s": seconds, "passages": passages, "sentences": sentences, "backend_used": used}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--xquad", type=int, default=0, help="index the first N XQuAD articles of 4 languages instead")
    parser.add_argument("--backends", nargs="+", default=["torch", "auto"], help="QA_EMBED_BACKEND values; the first is the baseline")
    parser.add_argument("--repeat", type=int, default=2, help="rounds over all backends; the best run of each is kept")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_index.json")
    args = parser.parse_args(argv)

    info = machine()
    print(f"Machine: {describe_machine(info)}")
    with tempfile.TemporaryDirectory(prefix="bench-index-corpus-") as tmp:
        corpus = xquad_corpus(Path(tmp), args.xquad) if args.xquad else args.corpus
        where = corpus.resolve()
        label = (f"{args.xquad} XQuAD articles x 4 languages" if args.xquad
                 else str(where.relative_to(ROOT)) if where.is_relative_to(ROOT) else shown(where))
        runs: dict[str, list[dict]] = {b: [] for b in args.backends}
        for round_ in range(args.repeat):
            for backend in args.backends:
                run = index_once(corpus, backend)
                run["load_avg_1min"] = round(os.getloadavg()[0], 2)
                runs[backend].append(run)
                print(f"  round {round_ + 1}: {backend} ({run['backend_used']}) {run['wall_s']} s", flush=True)

    best = {b: min(r, key=lambda x: x["wall_s"]) for b, r in runs.items()}
    base = best[args.backends[0]]
    rows = []
    for backend, run in best.items():
        texts = run["passages"] + run["sentences"]
        rows.append([backend, run["backend_used"], run["wall_s"], run["build_s"], round(texts / run["wall_s"], 1),
                     round(base["wall_s"] / run["wall_s"], 2), " / ".join(str(r["wall_s"]) for r in runs[backend])])
    text = table(["QA_EMBED_BACKEND", "ran as", "wall s", "qa's own s", "passages+sentences/s", "x baseline", "all runs (s)"], rows,
                 title=f"qa index of {label} into a fresh folder: {base['passages']} passages and {base['sentences']} "
                       f"sentences (best of {args.repeat}, alternating; 'qa's own s' is the time qa index reports)")
    print("\n" + text)
    payload = {"benchmark": "bench_index", "machine": info, "corpus": label, "repeat": args.repeat, "runs": runs, "table": text}
    print(f"\nWrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
