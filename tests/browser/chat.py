"""Helpers that drive the chat page."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Frame, Page

QUESTION = "#qa-question textarea"


def ask(page: Page | Frame, question: str, prefix: str = "") -> None:
    page.fill(f"{prefix}{QUESTION}", question)
    page.click(f"{prefix}#qa-ask")


def bot_messages(page: Page | Frame, prefix: str = ""):
    return page.locator(f"{prefix}#qa-chatbot [data-testid='bot']")


def wait_for_reply(page: Page | Frame, prefix: str = "", count: int = 1, timeout: float = 45) -> str:
    """Wait until there are `count` replies and the last one stopped growing; return its text."""
    messages = bot_messages(page, prefix)
    deadline = time.monotonic() + timeout
    last, stable = None, 0
    while time.monotonic() < deadline:
        if messages.count() >= count:
            text = messages.nth(count - 1).inner_text()
            stable = stable + 1 if text == last and text else 0
            last = text
            if stable >= 3:
                return text
        time.sleep(0.3)
    raise AssertionError(f"no complete reply {count} after {timeout} s; last text: {last!r}")


def record_replies(page: Page) -> None:
    """Record the text of the latest reply each time it changes (in `window.__replies`: to see
    it stream, or which sentences were shown on the way)."""
    page.evaluate(
        """() => {
        window.__replies = [];
        const chat = document.querySelector('#qa-chatbot');
        new MutationObserver(() => {
            const bots = chat.querySelectorAll("[data-testid='bot']");
            if (bots.length) window.__replies.push(bots[bots.length - 1].innerText);
        }).observe(chat, {subtree: true, childList: true, characterData: true});
    }"""
    )
