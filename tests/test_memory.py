"""qa.index.memory: memory-mapped arrays read in and mapped before questions touch them."""

import resource
import sys

import numpy as np
import pytest

from qa.index import memory
from qa.index.memory import map_in, mapped_file

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread fault counts are Linux's")


def mapped(tmp_path, name="v.npy", mb=32):
    """A fresh memory map of an mb-MB float32 file (nothing of it mapped yet)."""
    rows = (mb << 20) // (384 * 4)
    np.save(tmp_path / name, np.arange(rows * 384, dtype=np.float32).reshape(rows, 384))
    return np.asarray(np.load(tmp_path / name, mmap_mode="r"))


def faults_reading(array) -> int:
    """Page faults of this thread while reading a byte of every page of `array`."""
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    int(array.reshape(-1).view(np.uint8)[:: memory.PAGE].sum())
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before


def test_ordinary_arrays_are_left_alone():
    array = np.ones((100, 4), np.float32)
    assert mapped_file(array) is None
    assert map_in(array) == 0


def test_finds_the_map_behind_a_plain_view(tmp_path):
    array = mapped(tmp_path, mb=1)
    assert type(array) is np.ndarray  # as qa.index.load loads it: not the np.memmap subclass
    assert mapped_file(array) is not None
    assert mapped_file(array[10:20]) is not None


@linux_only
def test_mapped_in_pages_cost_no_fault(tmp_path):
    cold, warm = mapped(tmp_path, "cold.npy"), mapped(tmp_path, "warm.npy")
    assert map_in(warm) == warm.nbytes
    # Without: a fault per page or per run of pages (the kernel maps up to 2 MB at a time).
    assert faults_reading(cold) >= 8
    assert faults_reading(warm) <= 2
    assert warm[-1, -1] == warm.size - 1  # and the data is what was written


@linux_only
def test_without_madvise_populate_pages_are_touched_instead(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "MADV_POPULATE_READ", -1)  # as on a kernel without it: EINVAL
    array = mapped(tmp_path)
    assert map_in(array) == array.nbytes
    assert faults_reading(array) <= 2
