"""Vectors stored compressed and read back as float32 rows: the passage and sentence vectors as
int8 codes with a scale per row (`Int8Rows`), and the writer that fills their files a block at a time."""

from __future__ import annotations

import numpy as np

__all__ = ["Int8Rows", "quantize_rows"]


class Int8Rows:
    """Vectors stored as int8 codes with one float32 scale per row (symmetric, row max = 127).

    The passage vectors and the sentence vectors (which outnumber passages about 5 to 1): a
    quarter of float32 on disk plus 4 B a row, memory-mapped. Each element is within half a
    step (scale / 2) of its float32 value, so a dot product with q is within scale·|q|₁/2 of the
    float32 one; on real vectors and questions it is 1.3e-4 at the median, 5e-4 at the 99th
    percentile (benchmarks/bench_vector_precision.py). Indexing and `np.asarray` give float32
    rows; `dots` scores rows in place (`qa.kernels.int8_row_dots`).
    """

    def __init__(self, codes: np.ndarray, scales: np.ndarray):
        self.codes = codes
        self.scales = scales
        self.shape = codes.shape
        self.dtype = np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes stored, codes and scales (not those of the float32 rows it reads as)."""
        return self.codes.nbytes + self.scales.nbytes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows) -> np.ndarray:
        return self.codes[rows].astype(np.float32) * self.scales[rows, None]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:].astype(dtype or np.float32)

    def dots(self, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """`self[rows] @ query` (float32), reading each row's codes in place: the same floats as
        `qa.kernels.row_dots` of the decoded rows."""
        from qa.kernels import int8_row_dots

        return int8_row_dots(self.codes, self.scales, np.asarray(rows, np.int64), np.asarray(query, np.float32))


def quantize_rows(
    vectors: np.ndarray, block: int = 65536, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, float32 scales) of `vectors`, a block at a time (millions of rows fit); the
    codes into `out` when given (e.g. a memory-mapped file)."""
    codes = np.empty(vectors.shape, np.int8) if out is None else out
    scales = np.empty(len(vectors), np.float32)
    for start in range(0, len(vectors), block):
        part = np.asarray(vectors[start : start + block], np.float32)
        scale = np.maximum(np.abs(part).max(axis=1), 1e-12) / 127
        codes[start : start + block] = np.rint(part / scale[:, None])
        scales[start : start + block] = scale
    return codes, scales
