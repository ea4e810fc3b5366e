"""Fuzzed corpus files through `qa index` end to end (real CLI, real model, small corpus).

Random bytes, wrong encodings, HTML nested 10,000 deep, a 200 MB file (sparse, so instant) and
file names full of shell syntax: the build completes, each bad file is named in the summary with
its reason, and nothing in a file name is ever run. tests/test_ingest.py covers the readers
function by function; this is the user's view.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from qa.index.load import open_index
from tests.browser.live import ROOT

pytestmark = pytest.mark.slow

GOOD = (
    "Harbour wind farm opens\n\n"
    "The harbour wind farm started producing power on Tuesday, the city said. "
    "Its twelve turbines can supply forty thousand homes. "
    "The operator plans a second phase with eight more turbines next year.\n"
)

# file name -> (content, expected: "indexed" or a word of the skip reason)
FILES: dict[str, tuple[bytes, str]] = {
    "good.txt": (GOOD.encode(), "indexed"),
    "-rf --no-preserve-root.txt": (GOOD.replace("harbour", "river").encode(), "indexed"),
    "espacé ü 名前 عربي.md": (b"# " + GOOD.replace("harbour", "lake").encode(), "indexed"),
    "random.txt": (random.Random(1).randbytes(4096), ""),
    "$(touch pwned).md": (random.Random(2).randbytes(2048), ""),
    "a;rm -rf x.txt": (b"", ""),
    # Undeclared Latin-1: detected and read (it was refused before legacy encodings were read).
    "`touch pwned2`.html": ("Titre\n\nCaf\u00e9 cr\u00e8me à la fraise. ".encode("latin-1") * 20, "indexed"),
    "utf16-no-bom.txt": (GOOD.encode("utf-16-le"), ""),
    "name%2F..%2F..%2Fescape.txt": (b"\x00\x01\x02" * 100, ""),
    "deep.html": (b"<div>" * 10_000 + b"Deep text about the harbour wind farm turbines." + b"</div>" * 10_000, "any"),
    "bad.jsonl": (b'{"title": 1}\nnot json\n\xff\xfe\n', ""),
}
HUGE = "huge.txt"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-corpus")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for name, (content, _) in FILES.items():
        (corpus / name).write_bytes(content)
    with (corpus / HUGE).open("wb") as handle:
        handle.truncate(200 * 2**20)  # 200 MB, sparse: instant and no disk used
    canary = tmp / "x"
    canary.write_text("must survive")
    result = subprocess.run(  # noqa: PLW1510 (the test reads the exit status itself)
        [sys.executable, "-m", "qa.cli", "--index-dir", str(tmp / "index"), "index", "-q", str(corpus)],
        cwd=tmp,  # where `touch pwned` or `rm -rf x` would act
        env={**os.environ, "QA_CORPUS_DIR": str(corpus)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return tmp, corpus, result


def skipped_lines(stdout: str) -> dict[str, str]:
    lines = stdout.split("Skipped", 1)[1].splitlines()[1:] if "Skipped" in stdout else []
    out = {}
    for line in lines:
        source, _, reason = line.strip().partition(": ")
        out[source.split("#")[0]] = reason
    return out


def test_index_completes_and_reports_each_bad_file(indexed):
    tmp, _, result = indexed
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    index = open_index(tmp / "index")
    sources = {a.source for a in index.articles.values()}
    skipped = skipped_lines(result.stdout)
    for name, (_, expected) in FILES.items():
        if expected == "indexed":
            assert name in sources, (name, result.stdout)
        elif expected == "any":
            assert name in sources or name in skipped, (name, result.stdout)
        else:
            assert name in skipped and name not in sources, (name, result.stdout)
    assert HUGE in skipped and "too large" in skipped[HUGE], result.stdout


def test_file_names_are_never_run_by_a_shell(indexed):
    tmp, corpus, _ = indexed
    for folder in (tmp, corpus, ROOT, Path.cwd()):
        assert not (folder / "pwned").exists() and not (folder / "pwned2").exists()
    assert (tmp / "x").read_text() == "must survive"
    assert sorted(p.name for p in corpus.iterdir()) == sorted([*FILES, HUGE])  # nothing created or removed
    assert not list((tmp / "index").glob(".building-*"))
