"""Encoding detection of undeclared non-UTF-8 text: how confident charset-normalizer is when right
and when wrong, to set `qa.readers.encoding.MIN_DETECT_CONFIDENCE`.

Samples: real text (XQuAD paragraphs, the seed corpus) saved in the legacy encodings news is
archived in, whole (300-3,000 bytes) and cut to their first 120 characters; negatives are random
bytes without control characters (what a binary file that passes the control-character check
looks like). A guess is right when it decodes to exactly the original text (windows-1252 and
ISO-8859-15 read most German the same: either is right).

Prints, per encoding, how many guesses were right and the lowest confidence of a right guess; then
for each candidate threshold, the share of right guesses accepted and of wrong ones refused.
Writes results/bench_encoding.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS, ROOT, machine, markdown_table, write_json
from qa.readers.aeb import find_aeb
from qa.readers.encoding import display_name, guess
from qa.xquad import find_xquad

# (language, encodings): the legacy encodings a language's news is written in.
PLAN = {
    "zh": ["gb18030", "gbk", "gb2312"],
    "zh-Hant": ["big5"],
    "ja": ["shift_jis", "euc_jp"],
    "ko": ["euc_kr", "cp949"],
    "ru": ["cp1251", "koi8-r", "iso8859-5"],
    "de": ["cp1252", "cp1250", "iso8859-1", "iso8859-2", "iso8859-15"],
    "es": ["cp1252", "iso8859-1"],
    "fr": ["cp1252", "iso8859-15"],
    "el": ["cp1253", "iso8859-7"],
    "tr": ["cp1254", "iso8859-9"],
    "ar": ["cp1256", "iso8859-6"],
    "th": ["tis-620"],
}


def texts_of(lang: str, xquad: Path | None) -> list[str]:
    """Real paragraphs: XQuAD's for its languages, the seed corpus's for ja and fr."""
    texts: list[str] = []
    if xquad is not None and (xquad / f"xquad.{lang}.json").exists():
        data = json.loads((xquad / f"xquad.{lang}.json").read_text(encoding="utf-8"))
        for article in data["data"]:
            texts.extend(p["context"] for p in article["paragraphs"])
    for path in sorted((ROOT / "corpus").glob(f"{lang}-*.txt")):
        texts.extend(p for p in path.read_text(encoding="utf-8").split("\n") if len(p) > 100)
    if lang == "zh-Hant":  # no traditional Chinese in either set: a text written for the tests
        texts.extend((ROOT / "tests" / "data" / "zh_hant_news.txt").read_text(encoding="utf-8").split("\n\n"))
    if lang in ("ja", "ko"):  # Japanese and Korean articles of the extraction benchmark's ground truth
        texts.extend(aeb_texts(lang))
    return texts


def aeb_texts(lang: str) -> list[str]:
    aeb = find_aeb()
    if aeb is None:
        return []
    script = re.compile("[\u3040-\u30ff]" if lang == "ja" else "[\uac00-\ud7af]")
    bodies = json.loads((aeb / "ground-truth.json").read_text(encoding="utf-8"))
    return [line for item in bodies.values() for line in item["articleBody"].split("\n")
            if len(line) > 60 and len(script.findall(line)) > 10]


def samples(max_per: int) -> list[tuple[str, str, str, bytes]]:
    """(lang, encoding, text, bytes) for every paragraph that the encoding can hold."""
    xquad = find_xquad()
    out = []
    for lang, encodings in PLAN.items():
        texts = texts_of(lang, xquad)
        for encoding in encodings:
            n = 0
            for text in texts:
                for piece in (text, text[:120]):
                    try:
                        out.append((lang, encoding, piece, piece.encode(encoding)))
                    except UnicodeEncodeError:
                        break
                else:
                    n += 1
                if n >= max_per:
                    break
    return out


def negatives(n: int, texts: list[tuple[str, bytes]]) -> list[bytes]:
    """Random printable bytes, and files that mix two encodings (no single reading is right)."""
    rng = random.Random(0)
    alphabet = bytes(range(0x20, 0x7F)) + bytes(range(0xA0, 0x100))
    out = [bytes(rng.choice(alphabet) for _ in range(rng.choice((300, 2000)))) for _ in range(n)]
    for _ in range(n):
        (enc_a, a), (enc_b, b) = rng.sample(texts, 2)
        if enc_a != enc_b:
            out.append(a + b"\n" + b)
    return out


def run(max_per: int) -> dict:
    per = defaultdict(lambda: {"n": 0, "right": 0, "min_right_conf": 1.0, "guesses": defaultdict(int)})
    right_conf, wrong_conf = [], []
    started = time.perf_counter()
    all_samples = samples(max_per)
    for lang, encoding, text, data in all_samples:
        codec, confidence = guess(data)
        ok = codec is not None and _decodes_to(data, codec, text)
        row = per[f"{lang} {display_name(encoding)}"]
        row["n"] += 1
        row["guesses"][display_name(codec) if codec else "none"] += 1
        if ok:
            row["right"] += 1
            row["min_right_conf"] = min(row["min_right_conf"], confidence)
            right_conf.append(confidence)
        else:
            wrong_conf.append(confidence)
    random_conf = [guess(data)[1] for data in negatives(50, [(s[1], s[3]) for s in all_samples if len(s[2]) > 120])]
    thresholds = {}
    for threshold in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95):
        thresholds[str(threshold)] = {
            "right_accepted": round(sum(c >= threshold for c in right_conf) / max(len(right_conf), 1), 3),
            "wrong_refused": round(sum(c < threshold for c in wrong_conf) / max(len(wrong_conf), 1), 3),
            "negatives_refused": round(sum(c < threshold for c in random_conf) / len(random_conf), 3),
        }
    return {
        "per_encoding": {k: {**v, "guesses": dict(v["guesses"])} for k, v in per.items()},
        "right": len(right_conf),
        "wrong": len(wrong_conf),
        "thresholds": thresholds,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _decodes_to(data: bytes, codec: str, text: str) -> bool:
    try:
        return data.decode(codec) == text
    except (UnicodeDecodeError, LookupError):
        return False


def table(result: dict) -> str:
    encodings = [
        [key, row["n"], row["right"], f"{row['min_right_conf']:.2f}", _guesses(row["guesses"])]
        for key, row in result["per_encoding"].items()
    ]
    thresholds = [
        [threshold, *(f"{row[key]:.1%}" for key in ("right_accepted", "wrong_refused", "negatives_refused"))]
        for threshold, row in result["thresholds"].items()
    ]
    return "\n".join([
        *markdown_table(["text, encoding", "samples", "right", "lowest confidence when right", "guesses"],
                        encodings),
        "",
        *markdown_table(
            ["threshold", "right guesses accepted", "wrong guesses refused", "random or mixed bytes refused"],
            thresholds,
        ),
    ])


def _guesses(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-encoding", type=int, default=10, help="paragraphs per language and encoding")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_encoding.json")
    args = parser.parse_args()
    result = run(args.per_encoding)
    text = table(result)
    print(text)
    print(f"{result['right']} right, {result['wrong']} wrong guesses in {result['seconds']} s")
    write_json(args.out, {**result, "table": text, "machine": machine()})


if __name__ == "__main__":
    main()
