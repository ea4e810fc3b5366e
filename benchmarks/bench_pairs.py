"""`Engine.search` of two versions of qa, alternating on indexes built once: many short pairs
instead of one long one, so that a change of a few percent shows through the machine's drift.

Each side is a checkout of qa (its own code, on `PYTHONPATH`) and an index of the same synthetic
passages written by that checkout (`bench_query.build_synthetic` of its own `benchmarks/`, the
same seed and material: `--build` writes them). Then, `--pairs` times, each side in a fresh
process: the index loaded and read in (`map_in`), every question asked once untimed, then
`--repeat` rounds of the questions, each timed in CPU time of the calling thread, with numpy's
BLAS and FAISS at one thread (what a question costs, not what the other core was doing); between
two questions a fixed memory-bound product (200,000 x 384 float32 times a vector) is timed too,
as a check that the machine ran at the same speed on both sides. The sides take turns (now,
before, now, ...), and the table gives each run and the ratios of each pair.

    python benchmarks/bench_pairs.py --build --passages 1000000 --now . --before ../qa-old \\
        --work /var/tmp/pairs                       # ~6 min a side to write at 1M
    python benchmarks/bench_pairs.py --pairs 5 --now . --before ../qa-old --work /var/tmp/pairs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

BUILD = """
import pickle, sys, tempfile
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(sys.argv[1]) / "benchmarks"))
import bench_query
from _common import ensure_index
from qa.config import Settings
from qa.embed import get_embedder
n, out = int(sys.argv[2]), Path(sys.argv[3])
with tempfile.TemporaryDirectory(prefix="qa-bench-") as empty:
    settings = Settings(index_dir=Path(empty))
    material = bench_query.real_material(settings, get_embedder(settings), ensure_index(), 40)
texts, langs, base, questions, qvecs, qlangs, held_out, _ = material
if len(sys.argv) > 4:
    pickle.dump(questions, open(sys.argv[4], "wb"))
out.mkdir(parents=True, exist_ok=True)
bench_query.build_synthetic(n, texts, langs, base, qvecs, qlangs, held_out, np.random.default_rng(42), out,
                            Settings(index_dir=out))
"""

TIME = """
import json, pickle, sys, time
from pathlib import Path
import numpy as np
code, index_dir, questions, repeat = Path(sys.argv[1]), Path(sys.argv[2]), pickle.load(open(sys.argv[3], "rb")), int(sys.argv[4])
import qa.retrieval
assert Path(qa.retrieval.__file__).resolve().is_relative_to(code.resolve()), qa.retrieval.__file__
if (code / "qa" / "index").is_dir():
    from qa.index.load import open_index
else:  # the flat layout of older versions
    from qa.store import open_index
import faiss
from threadpoolctl import threadpool_limits
from qa.config import Settings
faiss.omp_set_num_threads(1)
index = open_index(index_dir)
index.map_in()
engine = qa.retrieval.Engine(Settings(index_dir=Path(sys.argv[5])))
engine._index = index  # its manifest names the synthetic model: skip the model check
reference = np.random.default_rng(0).standard_normal((200_000, 384), dtype=np.float32)
v = reference[0].copy()
with threadpool_limits(1, user_api="blas"):
    for q, _ in questions:
        engine.search(q, 5)
    times, refs = [], []
    for _ in range(repeat):
        for q, _ in questions:
            t = time.thread_time_ns(); engine.search(q, 5); times.append(time.thread_time_ns() - t)
            t = time.thread_time_ns(); reference @ v; refs.append(time.thread_time_ns() - t)
print(json.dumps({"p50_ms": float(np.median(times)) / 1e6, "mean_ms": float(np.mean(times)) / 1e6,
                  "p95_ms": float(np.percentile(times, 95)) / 1e6, "reference_p50_ms": float(np.median(refs)) / 1e6,
                  "questions": len(times)}))
"""


def run_side(code: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, "-c", *args], check=False, cwd=code, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"{code}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--now", type=Path, required=True, help="checkout of the version measured")
    parser.add_argument("--before", type=Path, required=True, help="checkout of the baseline")
    parser.add_argument("--work", type=Path, required=True, help="folder of the two indexes and the questions")
    parser.add_argument("--build", action="store_true", help="write each side's index first")
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sides = {"now": args.now.resolve(), "before": args.before.resolve()}
    args.work.mkdir(parents=True, exist_ok=True)
    questions = args.work / "questions.pkl"
    if args.build:
        for name, code in sides.items():
            t = time.perf_counter()
            extra = [str(questions)] if name == "now" else []
            run_side(code, BUILD, str(code), str(args.passages), str(args.work / name), *extra)
            print(f"{name}: index of {args.passages:,} passages written by {code} in {time.perf_counter() - t:.0f} s")
    (args.work / "empty").mkdir(parents=True, exist_ok=True)
    runs = []
    for pair in range(1, args.pairs + 1):
        order = ("now", "before") if pair % 2 else ("before", "now")
        for name in order:
            line = run_side(sides[name], TIME, str(sides[name]), str(args.work / name), str(questions),
                            str(args.repeat), str(args.work / "empty"))  # fmt: skip
            runs.append({"pair": pair, "side": name, "load": os.getloadavg()[0], **json.loads(line)})
            print(f"pair {pair} {name:6} p50 {runs[-1]['p50_ms']:.3f} ms, reference {runs[-1]['reference_p50_ms']:.2f} ms")
    print("\n| pair | now p50 ms | before p50 ms | now / before | reference now / before |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    ratios = []
    for pair in range(1, args.pairs + 1):
        now, before = (next(r for r in runs if r["pair"] == pair and r["side"] == s) for s in ("now", "before"))
        ratios.append(now["p50_ms"] / before["p50_ms"])
        print(f"| {pair} | {now['p50_ms']:.3f} | {before['p50_ms']:.3f} | {ratios[-1]:.3f} | "
              f"{now['reference_p50_ms'] / before['reference_p50_ms']:.3f} |")  # fmt: skip
    means = {s: float(np.mean([r["p50_ms"] for r in runs if r["side"] == s])) for s in sides}
    print(f"\nmean of the p50s: now {means['now']:.3f} ms, before {means['before']:.3f} ms "
          f"({means['now'] / means['before']:.3f}); pair ratios {min(ratios):.3f}-{max(ratios):.3f}, median {np.median(ratios):.3f}")
    payload = {"benchmark": "bench_pairs", "sides": {k: str(v) for k, v in sides.items()}, "runs": runs}
    if args.out:
        args.out.write_text(json.dumps(payload, indent=2))
    return payload


if __name__ == "__main__":
    main()
