"""The embedding backend: which one runs where, its fallbacks, and (slow) that its vectors are fp32's."""

from __future__ import annotations

import json
import logging
import threading
import typing
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.embed import backend as embed_backend
from qa.embed.backend import BACKENDS, choose_backend, cpu_has_bf16

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("setting", "device", "openvino", "bf16", "expected"),
    [
        ("auto", "cpu", True, True, "openvino-bf16"),
        ("auto", "cpu", True, False, "openvino-f32"),
        ("auto", "cuda", True, True, "torch-fp16"),
        ("auto", "cuda:1", False, False, "torch-fp16"),
        ("torch", "cpu", True, True, "torch-fp32"),
        ("torch", "cuda", True, True, "torch-fp16"),
        ("torch-bf16", "cpu", True, True, "torch-bf16"),
        ("torch-bf16", "cpu", True, False, "torch-bf16"),  # asked for explicitly: honoured
        ("openvino", "cpu", True, True, "openvino-bf16"),
        ("openvino", "cpu", True, False, "openvino-f32"),
        ("openvino", "cuda", True, True, "openvino-bf16"),  # asked for explicitly: on the CPU
        ("openvino-f32", "cpu", True, True, "openvino-f32"),
        ("openvino", "cuda", False, True, "torch-fp16"),  # not installed: the GPU as auto would
    ],
)
def test_backend_choice(setting, device, openvino, bf16, expected):
    assert choose_backend(setting, device, openvino=openvino, bf16=bf16) == expected


@pytest.mark.parametrize(
    ("setting", "bf16", "expected"),
    [
        ("auto", True, "torch-bf16"),
        ("auto", False, "torch-fp32"),
        ("openvino", True, "torch-bf16"),
        ("openvino-f32", True, "torch-fp32"),
    ],
)
def test_missing_openvino_falls_back_to_torch_with_a_warning(setting, bf16, expected, caplog):
    with caplog.at_level(logging.WARNING, logger="qa.embed.backend"):
        assert choose_backend(setting, "cpu", openvino=False, bf16=bf16) == expected
    assert "openvino" in caplog.text and "not installed" in caplog.text and expected in caplog.text


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="onnx"):
        choose_backend("onnx", "cpu", openvino=True, bf16=True)
    with pytest.raises(ValueError, match="embed_backend"):
        Settings(embed_backend="onnx")


def test_settings_offer_exactly_the_backends():
    assert typing.get_args(Settings.model_fields["embed_backend"].annotation) == BACKENDS
    assert Settings().embed_backend == "auto"


def test_bf16_detection_reads_cpu_flags():
    assert cpu_has_bf16("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 rdpid\n")
    assert cpu_has_bf16("flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n")
    assert not cpu_has_bf16("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_fp16\n")
    assert not cpu_has_bf16("")


def test_each_backend_gets_its_own_embedder():
    from qa.embed import get_embedder

    plain = get_embedder(Settings(embed_backend="torch"))
    assert plain is not get_embedder(Settings(embed_backend="openvino"))
    assert plain is get_embedder(Settings(embed_backend="torch"))


def test_each_query_batch_size_gets_an_embedder_that_honours_it():
    from qa.embed import get_embedder

    batching = get_embedder(Settings(query_batch_size=32))
    assert batching.settings.query_batch_size == 32
    assert get_embedder(Settings(query_batch_size=1)).settings.query_batch_size == 1


def test_openvino_failure_falls_back_to_torch(monkeypatch, caplog):
    from qa.embed import LocalEmbedder, ModelInfo

    def fail(*args, **kwargs):
        raise RuntimeError("cannot convert this model")

    monkeypatch.setattr(embed_backend, "openvino_transformer", fail)
    embedder = LocalEmbedder(Settings(embed_backend="openvino"))
    embedder._info = ModelInfo("some/model", "some/model", "hub:some/model")
    with caplog.at_level(logging.WARNING, logger="qa.embed"):
        assert embedder._accelerate(object(), "openvino-bf16", 2) == "torch-bf16"
        assert embedder._accelerate(object(), "openvino-f32", 2) == "torch-fp32"
    assert "cannot convert this model" in caplog.text and "torch-bf16" in caplog.text


def test_eval_cache_is_per_backend(tmp_path):
    from qa.evaluate import embedding_cache

    class Embedder:
        fingerprint = "fp"

        def __init__(self, backend):
            self.backend = backend

    settings = Settings(cache_dir=tmp_path)
    assert embedding_cache(settings, Embedder("torch-fp32")).path.name == "xquad-embeddings.npz"
    fast = embedding_cache(settings, Embedder("openvino-bf16")).path
    assert fast.name == "xquad-embeddings.openvino-bf16.npz" and fast.parent == tmp_path / "eval"


def test_index_embeds_in_length_order_and_returns_input_order():
    from qa.index.build import EMBED_SLICE, embed_with_progress
    from tests.fakes import FakeEmbedder

    texts = [("x" * (i * 37 % 101)) + str(i) for i in range(3 * EMBED_SLICE + 5)]
    fake = FakeEmbedder()
    vectors = embed_with_progress(fake, texts, progress=False)
    np.testing.assert_array_equal(vectors, np.stack([fake._vector(t) for t in texts]))
    assert [len(t) for t in fake.embedded] == sorted(len(t) for t in texts)  # slices of similar lengths


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_parallel_encoding_keeps_the_order(parts):
    texts = [f"text {i}" for i in range(11)]
    calls = []

    def encode(part):
        calls.append(len(part))
        return np.array([[int(t.split()[1]), len(t)] for t in part], dtype=np.float32)

    rows = embed_backend.encode_in_parallel(encode, texts, parts)
    assert rows[:, 0].tolist() == list(range(11))
    assert sorted(calls) == sorted(len(texts[i::parts]) for i in range(parts))
    assert embed_backend.encode_in_parallel(encode, ["text 0"], 2).shape == (1, 2)  # too few to split


# --------------------------------------------------------------------------- the real model


def _texts() -> tuple[list[str], list[str]]:
    """Real passages of the demo corpus (various lengths, so batches are padded) and questions."""
    from qa.chunk import chunk_article
    from qa.ingest import load_corpus

    articles, _ = load_corpus(Path(__file__).parent.parent / "corpus")
    def count(texts):
        return [len(t) // 4 for t in texts]

    passages = [c.text for a in articles for c in chunk_article(a, count, 200, 1)]
    passages = passages[::4] + ["Emmett Shear.", "OpenAI"]
    items = json.loads((DATA / "seed_questions.json").read_text(encoding="utf-8"))
    questions = [q for item in items for q in item["questions"].values()]
    return passages, questions


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())


@pytest.mark.slow
def test_chosen_backend_agrees_with_fp32(tmp_path):
    """The default backend's vectors are fp32's: an index built with either is searched with the other."""
    from qa.embed import LocalEmbedder

    passages, questions = _texts()
    fp32 = LocalEmbedder(Settings(embed_backend="torch"))
    chosen = LocalEmbedder(Settings())
    assert fp32.backend == "torch-fp32"
    assert chosen.describe()["fingerprint"] == fp32.describe()["fingerprint"]
    assert chosen.describe()["dim"] == fp32.describe()["dim"]
    assert _min_cosine(chosen.encode_documents(passages), fp32.encode_documents(passages)) >= 0.999
    assert _min_cosine(chosen.encode_queries(questions), fp32.encode_queries(questions)) >= 0.999
    # One at a time (no padding) gives the same as in a batch.
    alone = np.stack([chosen.encode_queries([q])[0] for q in questions[:5]])
    assert _min_cosine(alone, chosen.encode_queries(questions[:5])) >= 0.9999


@pytest.mark.slow
def test_chosen_backend_embeds_from_several_threads():
    from qa.embed import LocalEmbedder

    _, questions = _texts()
    embedder = LocalEmbedder(Settings(query_batch_size=1))
    expected = embedder.encode_queries(questions)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = embedder.encode_queries(questions[i::4])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert _min_cosine(results[i], expected[i::4]) >= 0.9999
