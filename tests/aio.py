"""Running a coroutine from a synchronous test."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


def run_async(coroutine):
    """`asyncio.run(coroutine)` on a thread of its own: a browser test that ran before in this
    process (Playwright's synchronous API) may have left an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
