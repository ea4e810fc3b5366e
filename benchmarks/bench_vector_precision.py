"""How far the stored passage vectors move a score: dot products of float16 (index format 5) and
of int8 codes with a scale per row (format 6, `qa.index.ann.Int8Rows`) against float32.

Real vectors: the XQuAD paragraphs and questions of the evaluation's embedding cache (every
language cached; `qa eval` fills it), questions centred on their language's question mean as the
engine centres them (`QA_QUERY_CENTERING`). Prints the error's distribution, in absolute terms
and in units of each question's score standard deviation (the scale the ranking standardizes
to), and how often the top 10 and the top 1 stay those of float32.

    python benchmarks/bench_vector_precision.py --questions 2000
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table


def cached_vectors(settings, embedder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(paragraph vectors, question vectors, question languages) of the embedding cache."""
    from qa.evaluate import embedding_cache
    from qa.xquad import find_xquad, load_xquad

    folder, path = find_xquad(Path.cwd()), embedding_cache(settings, embedder).path
    if folder is None or not path.exists():
        raise SystemExit("No XQuAD data or no embedding cache: run `qa eval` once first.")
    data = load_xquad(folder)
    with np.load(path) as npz:
        cached = dict(zip(npz["keys"].tolist(), npz["vectors"]))

    def key(kind: str, text: str) -> str:  # the key of qa.xquad.EmbeddingCache
        return hashlib.sha1(f"{embedder.fingerprint}\0{kind}\0{text}".encode()).hexdigest()

    passages, questions, langs = [], [], []
    for lang in data.langs:
        passages += [v for t in data.paragraphs[lang] if (v := cached.get(key("passage", t))) is not None]
        for text in data.questions[lang]:
            v = cached.get(key("query", text))
            if v is not None:
                questions.append(v)
                langs.append(lang)
    return np.array(passages, np.float32), np.array(questions, np.float32), np.array(langs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=2000, help="questions sampled (all languages)")
    args = parser.parse_args(argv)

    from qa.config import Settings
    from qa.embed import get_embedder
    from qa.index.ann import Int8Rows, quantize_rows

    settings = Settings()
    passages, questions, langs = cached_vectors(settings, get_embedder(settings))
    means = {lang: questions[langs == lang].mean(axis=0) for lang in np.unique(langs)}
    centred = np.stack([q - settings.query_centering * means[lang] for q, lang in zip(questions, langs)])
    picks = np.random.default_rng(0).choice(len(centred), min(args.questions, len(centred)), replace=False)
    queries = centred[picks].astype(np.float32)
    largest = np.abs(passages).max(axis=1) / np.sqrt((passages**2).mean(axis=1))
    print(f"{len(passages):,} paragraphs x {len(queries):,} questions, {passages.shape[1]} dimensions; largest "
          f"component / rms of a row: median {np.median(largest):.2f}, max {largest.max():.2f}")
    exact = queries @ passages.T
    spread = exact.std(axis=1, keepdims=True)
    top = np.argsort(-exact, axis=1)[:, :10]
    rows = []
    for name, stored in [
        ("float16", passages.astype(np.float16).astype(np.float32)),
        ("int8 + scale", np.asarray(Int8Rows(*quantize_rows(passages)))),
    ]:
        got = queries @ stored.T
        error = np.abs(got - exact)
        scaled = error / spread
        mine = np.argsort(-got, axis=1)[:, :10]
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, mine)])
        rows.append([
            name, f"{np.percentile(error, 50):.1e}", f"{np.percentile(error, 99):.1e}", f"{error.max():.1e}",
            f"{np.percentile(scaled, 99):.4f}", f"{scaled.max():.4f}", f"{overlap:.4f}", f"{np.mean(top[:, 0] == mine[:, 0]):.4f}",
        ])  # fmt: skip
    print(table(["stored as", "|error| p50", "p99", "max", "p99 in score std", "max in score std",
                 "top-10 overlap", "same top-1"], rows, title="Dot products against float32"))  # fmt: skip


if __name__ == "__main__":
    main()
