"""Text extraction and boilerplate rules, scored against hand-written article bodies.

Data: the article-extraction benchmark (181 real saved pages, news and articles in several
languages, with the hand-written `articleBody` of each), found in `data/aeb` or `shared/data/aeb`
in the current folder or above. Each page is read as `qa index` reads it (its declared encoding,
trafilatura, the fallback parser, the boilerplate rules) and scored by tokens against the body:
precision, recall and F1 of the multiset of tokens (words, lower-cased; each CJK character one
token), averaged over pages. trafilatura's defaults on the same pages, in the same run, are the
baseline.

Per rule, every line it dropped is counted, and counted as content when it is found in the
hand-written body (whitespace-normalised). A rule earns its place when >= 90 % of what it drops
is boilerplate.

Writes results/bench_extract.json (numbers, table, machine).
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS, aeb_ground_truth, machine, markdown_table, write_json
from qa.ingest import clean
from qa.ingest.articles import build_article
from qa.ingest.files import decode
from qa.readers.base import Skip
from qa.readers.html import extract_html

_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+")


def tokens(text: str) -> Counter:
    return Counter(_TOKEN.findall(unicodedata.normalize("NFKC", text).lower()))


def prf(predicted: str, truth: str) -> tuple[float, float, float]:
    got, want = tokens(predicted), tokens(truth)
    overlap = sum((got & want).values())
    precision = overlap / sum(got.values()) if got else (1.0 if not want else 0.0)
    recall = overlap / sum(want.values()) if want else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def squash(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split()).lower()


def rule_of(line: str) -> str | None:
    """The first boilerplate rule that drops `line` (as `is_boilerplate` applies them)."""
    line = clean.normalize_line(line)
    if not line or not clean.is_boilerplate(line):
        return None
    if not any(char.isalpha() for char in line):
        return "no letter"
    for rule in clean._BOILERPLATE_RULES:
        if rule(line):
            return rule.__name__.removeprefix("_is_").replace("_", " ")
    return None


def audit(title: str | None, body: str, truth: str, drops: dict) -> None:
    """Count each rule's dropped lines, and those of them that are in the hand-written body."""
    truth_squashed = squash(truth)

    def count(rule: str, line: str) -> None:
        drops[rule]["dropped"] += 1
        # A line without a word ("-", "___") carries no text: not content even when found in the body.
        if tokens(line) and squash(line) in truth_squashed:
            drops[rule]["content"] += 1
            if len(drops[rule]["examples"]) < 8:
                drops[rule]["examples"].append(line[:80])

    for line in body.split("\n"):
        rule = rule_of(line)
        if rule:
            count(rule, clean.normalize_line(line))
    paragraphs = _kept_paragraphs(body)
    kept = clean.clean_lines(body.split("\n"))
    for paragraph in paragraphs[len(kept):]:
        count("trailing heading cut", paragraph)
    if title and kept and kept[0] == clean.normalize_line(title):
        count("repeated title", kept[0])


def _kept_paragraphs(body: str) -> list[str]:
    before = clean._drop_trailing_headings
    clean._drop_trailing_headings = lambda paragraphs, *_: paragraphs  # the paragraphs before the cut
    try:
        return clean.clean_lines(body.split("\n"))
    finally:
        clean._drop_trailing_headings = before


def run(limit: int) -> dict:
    import trafilatura

    aeb, truth = aeb_ground_truth()
    scores: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    drops: dict = defaultdict(lambda: {"dropped": 0, "content": 0, "examples": []})
    per_page = []
    started = time.perf_counter()
    for n, (key, item) in enumerate(sorted(truth.items())):
        if limit and n >= limit:
            break
        data = gzip.decompress((aeb / "html" / f"{key}.html.gz").read_bytes())
        html, _ = decode(data, markup=True)
        title, body, *_ = extract_html(html)
        try:
            text = build_article(title, body.split("\n"), key).text
        except Skip:
            text = ""
        audit(title, body, item["articleBody"], drops)
        ours = prf(text, item["articleBody"])
        scores["qa"].append(ours)
        baseline = trafilatura.extract(html) or ""
        scores["trafilatura defaults"].append(prf(baseline, item["articleBody"]))
        per_page.append({"page": key[:12], "url": item.get("url"), "f1": round(ours[2], 4)})
    means = {
        name: {m: round(sum(s[i] for s in rows) / len(rows), 4) for i, m in enumerate(("precision", "recall", "f1"))}
        for name, rows in scores.items()
    }
    rules = {
        rule: {**row, "boilerplate_share": round(1 - row["content"] / row["dropped"], 3) if row["dropped"] else None}
        for rule, row in sorted(drops.items(), key=lambda kv: -kv[1]["dropped"])
    }
    return {
        "pages": len(per_page),
        "means": means,
        "rules": rules,
        "worst_pages": sorted(per_page, key=lambda p: p["f1"])[:10],
        "seconds": round(time.perf_counter() - started, 1),
    }


def table(result: dict) -> str:
    means = [
        [name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}"]
        for name, m in result["means"].items()
    ]
    rules = [
        [rule, row["dropped"], row["content"], _percent(row["boilerplate_share"])]
        for rule, row in result["rules"].items()
    ]
    return "\n".join([
        f"{result['pages']} pages",
        "",
        *markdown_table(["extractor", "precision", "recall", "F1"], means),
        "",
        *markdown_table(["rule", "lines dropped", "of them content", "boilerplate share"], rules),
    ])


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="score only the first N pages (0 = all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_extract.json")
    args = parser.parse_args()
    result = run(args.limit)
    text = table(result)
    print(text)
    print(f"in {result['seconds']} s")
    write_json(args.out, {**result, "table": text, "machine": machine()})


if __name__ == "__main__":
    main()
