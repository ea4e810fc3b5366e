"""`qa.rank.fuse` for one question (the serving path): the same scores and mask as before, and
what it costs.

The earlier `fuse` is kept here as it was. On random candidates of the sizes a question has
(n_q = 1, `sentence_candidates` = 100; with and without tied scores), and, when an index is
built here (`qa index`), on the real inputs of `retrieve()` for real questions (tests/data's),
both are called alternately in one process: the outputs must be equal bit for bit; thread CPU
per call, p50 and mean.

    python benchmarks/bench_fuse.py [--calls 3000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.rank import NOT_SHORTLISTED, FusionWeights, fuse, shortlist


def before_fuse(dense, lexical, sentences, weights):
    """`fuse` at 7f1fe46."""
    scores = dense
    if lexical is not None and weights.lexical:
        scores = scores + weights.lexical * lexical
    mask = np.ones(scores.shape, dtype=bool)
    if sentences is None or not weights.sentence:
        return scores, mask
    if weights.sentence_candidates and weights.sentence_candidates < scores.shape[1]:
        mask[:] = False
        for row, first in zip(mask, scores):
            row[shortlist(first, weights.sentence_candidates)] = True
    best = sentences(mask)
    return np.where(mask, scores + weights.sentence * best, scores - NOT_SHORTLISTED), mask


def same(a, b) -> bool:
    return a[0].dtype == b[0].dtype and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def timed(inputs, calls: int) -> tuple[list[int], list[int], int]:
    """(before ns, now ns, calls that differ), alternating call by call over `inputs`."""
    before, now, differ = [], [], 0
    for i in range(calls):
        dense, lexical, sentences, weights = inputs[i % len(inputs)]
        t0 = time.thread_time_ns()
        old = before_fuse(dense, lexical, sentences, weights)
        t1 = time.thread_time_ns()
        new = fuse(dense, lexical, sentences, weights)
        t2 = time.thread_time_ns()
        before.append(t1 - t0)
        now.append(t2 - t1)
        differ += not same(old, new)
    return before, now, differ


def random_inputs(n: int, ties: bool, rng: np.random.Generator, count: int = 50) -> list:
    """Candidates as `Engine.score` passes them: float64 dense, float32 lexical (0 for most), and
    the sentence scores a full float64 array (made beforehand: the callback's own cost is not fuse's)."""
    inputs = []
    for _ in range(count):
        dense = rng.standard_normal((1, n))
        if ties:
            dense = np.round(dense * 4) / 4
        lexical = np.where(rng.random((1, n)) < 0.3, rng.random((1, n)), 0.0).astype(np.float32)
        best = rng.standard_normal((1, n))
        inputs.append((dense, lexical, lambda mask, best=best: best, FusionWeights(1.25, 1.0, 100)))
    return inputs


def real_inputs() -> list:
    """The inputs of `fuse` in `retrieve()` for tests/data's questions, on the index built here
    (none if there is none), each also with 10 and 30 sentence candidates (the demo corpus has
    fewer passages than the default 100)."""
    import qa.retrieval as engine
    from qa.config import Settings

    settings = Settings()
    if not (settings.index_dir / "CURRENT").exists():
        return []
    data = ROOT / "tests" / "data"
    texts = [
        text
        for name in ("seed_questions", "heldout_questions")
        for item in json.loads((data / f"{name}.json").read_text(encoding="utf-8"))
        for text in item["questions"].values()
    ]
    captured = []
    real = engine.fuse

    def capture(dense, lexical, sentences, weights):
        # The sentence stage's scores for every candidate, read once: each replay reads those of its mask.
        full = sentences(np.ones(dense.shape, dtype=bool))
        for n in (weights.sentence_candidates, 10, 30):
            w = FusionWeights(weights.lexical, weights.sentence, n)
            captured.append((dense, lexical, lambda mask, full=full: np.where(mask, full, 0.0), w))
        return real(dense, lexical, sentences, weights)

    engine.fuse = capture
    try:
        for text in texts:
            engine.retrieve(text, settings=settings)
    finally:
        engine.fuse = real
    return captured


def row(name: str, before: list[int], now: list[int], differ: int) -> None:
    p50b, p50n = statistics.median(before) / 1e3, statistics.median(now) / 1e3
    mb, mn = statistics.fmean(before) / 1e3, statistics.fmean(now) / 1e3
    print(
        f"| {name} | {len(now):,} | {differ} | {p50b:.1f} → {p50n:.1f} | {p50n / p50b:.2f} "
        f"| {mb:.1f} → {mn:.1f} | {mn / mb:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="timed calls of each kind")
    args = parser.parse_args()
    rng = np.random.default_rng(29)
    print("| candidates | calls | differ | p50 before → now µs | ratio | mean before → now µs | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    differ_total = 0
    for n in (300, 700, 1200):
        for ties in (False, True):
            before, now, differ = timed(random_inputs(n, ties, rng), args.calls)
            differ_total += differ
            row(f"{n} random{' (ties)' if ties else ''}", before, now, differ)
    real = real_inputs()
    if real:
        before, now, differ = timed(real, max(args.calls, len(real)))
        differ_total += differ
        row(f"real: {len(real) // 3} questions x 3 (n {min(len(r[0][0]) for r in real)}-{max(len(r[0][0]) for r in real)})",
            before, now, differ)
    if differ_total:
        raise SystemExit(f"{differ_total} calls differ")


if __name__ == "__main__":
    main()
