"""Memory-mapped arrays brought into memory before the questions that read them.

An index keeps its float32 passage vectors and its sentence vectors memory-mapped: a question
reads a few hundred scattered rows of each, so neither has to be copied into the process. But
the first read of each page costs a page fault, and a disk read when the page is not in the
page cache. At a million passages, with an empty page cache, a fresh server's questions took
92 ms at p95 (31 ms on average) until every page had been read once; after `map_in`, 17 ms
(10 ms). `map_in` pays that once, up front, and off the question path (`Settings.map_in`).

The cost, measured on a virtual machine whose kernel pages idle memory out on its own
(DAMON reclaim): with the page cache already warm, the median question was ~0.5 ms slower with
3.3 GB mapped in than with only the pages questions had touched. Where that matters more than a
cold start, `QA_MAP_IN=false`.
"""

from __future__ import annotations

import ctypes
import mmap

import numpy as np

__all__ = ["map_in", "mapped_file"]

MADV_WILLNEED = 3  # start reading the file into the page cache (asynchronous)
MADV_POPULATE_READ = 22  # Linux 5.14+: read and map every page now, in the kernel
PAGE = mmap.PAGESIZE


def mapped_file(array: np.ndarray) -> mmap.mmap | None:
    """The `mmap` behind `array` (a view of a memory-mapped file), or None for ordinary memory."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    return None


def map_in(array: np.ndarray) -> int:
    """Read the pages of a memory-mapped `array` into memory and map them into this process now.

    Returns the bytes covered (0 for an array in ordinary memory). Runs in the kernel with the
    GIL released (ctypes), so it can run on a background thread while questions are answered;
    where `madvise` cannot populate (an older kernel, another OS), one byte of every page is
    read instead. The pages stay in the page cache, shared and reclaimable, not in the heap.
    """
    if mapped_file(array) is None or not array.nbytes:
        return 0
    start = array.ctypes.data - array.ctypes.data % PAGE  # madvise wants a page-aligned start
    length = array.ctypes.data + array.nbytes - start
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        madvise(start, length, MADV_WILLNEED)
        if madvise(start, length, MADV_POPULATE_READ) == 0:
            return array.nbytes
    except (AttributeError, OSError, TypeError):  # no libc madvise here
        pass
    flat = array.reshape(-1).view(np.uint8)
    int(flat[::PAGE].sum())  # touching a byte maps its page
    return array.nbytes
