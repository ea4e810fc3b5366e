"""Regenerate docs/screenshot-chat.png from the real chat: a Japanese question and its cited reply.

Starts `qa serve` on a free loopback port over the index in QA_INDEX_DIR (build it first with
`qa index`), asks the question in Debian's Chromium (`apt-get install chromium fonts-noto-cjk`:
without the Noto CJK fonts Japanese renders as boxes), and saves the page.

    python scripts/screenshot_chat.py                  # writes docs/screenshot-chat.png
    python scripts/screenshot_chat.py --out /tmp/chat.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa.config import Settings
from tests.browser.chat import ask, wait_for_reply
from tests.browser.live import CHROMIUM, CHROMIUM_ARGS, start_server

QUESTION = "OpenAIの従業員770人のうち何人が辞めると脅したのか？"


def check_fonts() -> None:
    """Stop with the fix when no CJK font is installed (the screenshot would show boxes)."""
    found = subprocess.run(["fc-list", ":lang=ja"], capture_output=True, text=True, check=False).stdout
    if not found.strip():
        sys.exit("No Japanese font installed: `apt-get install -y fonts-noto-cjk`, then run this again.")


def main() -> None:
    """Take the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot-chat.png")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: `apt-get install -y chromium fonts-noto-cjk`.")
    check_fonts()
    from playwright.sync_api import sync_playwright

    settings = Settings()
    with tempfile.TemporaryDirectory() as workdir:
        server = start_server(settings.index_dir.resolve(), Path(workdir), corpus=settings.corpus_dir.resolve())
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 960}, locale="ja-JP")
                page.goto(server.url + "/")
                ask(page, QUESTION)
                wait_for_reply(page, timeout=120)
                page.wait_for_timeout(500)  # let the chat settle its scroll position
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            server.stop()
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
