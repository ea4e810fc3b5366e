"""XQuAD, the parallel cross-lingual QA set used by `qa eval`, and a cache of its embeddings.

XQuAD (Artetxe et al., 2020, CC BY-SA 4.0): 240 paragraphs and 1,190 questions, the same in
every language, so a question in one language can be scored against the paragraphs of another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache", "XQuAD", "find_xquad", "load_xquad"]


@dataclass
class XQuAD:
    """Aligned paragraphs and questions: index i means the same thing in every language."""

    langs: list[str]
    paragraphs: dict[str, list[str]]  # lang -> paragraph texts
    titles: list[str]  # per paragraph: its article title (English)
    questions: dict[str, list[str]]  # lang -> question texts
    answer_paragraph: np.ndarray  # per question: index of the paragraph that answers it
    question_ids: list[str]
    answers: dict[str, list[str]] = field(default_factory=dict)  # lang -> gold answer text per question
    article_of: np.ndarray | None = None  # per paragraph: its article's position in the files

    @property
    def n_paragraphs(self) -> int:
        return len(self.titles)

    @property
    def n_questions(self) -> int:
        return len(self.question_ids)


def find_xquad(start: Path | None = None) -> Path | None:
    """The folder of `xquad.<lang>.json` files: ./data/xquad or a `shared/data/xquad` above."""
    start = (start or Path.cwd()).resolve()
    for base in [start, *start.parents]:
        for candidate in (base / "data" / "xquad", base / "shared" / "data" / "xquad"):
            if any(candidate.glob("xquad.*.json")):
                return candidate
    return None


def load_xquad(folder: Path, langs: list[str] | None = None, max_articles: int = 0) -> XQuAD:
    """Load the aligned files; `max_articles` keeps only the first N articles (a fast subset)."""
    files = {p.name.split(".")[1]: p for p in sorted(Path(folder).glob("xquad.*.json"))}
    if not files:
        raise FileNotFoundError(f"No xquad.<lang>.json files in {folder}.")
    langs = langs or sorted(files)
    unknown = [lang for lang in langs if lang not in files]
    if unknown:
        raise FileNotFoundError(f"No XQuAD file for {unknown} in {folder}; there are {sorted(files)}.")
    paragraphs: dict[str, list[str]] = {}
    questions: dict[str, list[str]] = {}
    titles: list[str] = []
    answer_paragraph: list[int] = []
    question_ids: list[str] = []
    answers: dict[str, list[str]] = {}
    article_of: list[int] = []
    for n, lang in enumerate(langs):
        data = json.loads(files[lang].read_text(encoding="utf-8"))["data"]
        if max_articles:
            data = data[:max_articles]
        paras, qs, ids, where, golds = [], [], [], [], []
        for number, article in enumerate(data):
            for paragraph in article["paragraphs"]:
                if n == 0:
                    titles.append(article["title"].replace("_", " "))
                    article_of.append(number)
                for qa in paragraph["qas"]:
                    qs.append(qa["question"])
                    golds.append(qa["answers"][0]["text"] if qa.get("answers") else "")
                    ids.append(qa["id"])
                    where.append(len(paras))
                paras.append(paragraph["context"])
        if n == 0:
            question_ids, answer_paragraph = ids, where
        elif ids != question_ids or where != answer_paragraph:
            raise ValueError(f"xquad.{lang}.json is not aligned with xquad.{langs[0]}.json")
        paragraphs[lang], questions[lang], answers[lang] = paras, qs, golds
    return XQuAD(
        langs, paragraphs, titles, questions, np.array(answer_paragraph), question_ids, answers, np.array(article_of)
    )


class EmbeddingCache:
    """Vectors keyed by (model fingerprint, kind, text), kept in one .npz file.

    Embedding all of XQuAD takes a quarter of an hour on two cores; with the cache every later
    `qa eval` run only embeds what it has not seen.
    """

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.fingerprint = fingerprint
        self._vectors: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path) as data:
                for key, row in zip(data["keys"], data["vectors"]):
                    self._vectors[str(key)] = row
        self._dirty = False

    def _key(self, kind: str, text: str) -> str:
        return hashlib.sha1(f"{self.fingerprint}\0{kind}\0{text}".encode()).hexdigest()

    def get(self, kind: str, texts: list[str], embed) -> np.ndarray:
        """Vectors for `texts`, calling `embed(missing_texts)` only for those not cached."""
        keys = [self._key(kind, t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self._vectors}.items())
        if missing:
            vectors = embed([t for _, t in missing])
            for (key, _), vector in zip(missing, vectors):
                self._vectors[key] = np.asarray(vector, dtype=np.float32)
            self._dirty = True
            self.save()
        return np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def save(self) -> None:
        if not self._dirty:
            return
        from qa.index.format import atomic_write

        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._vectors))
        vectors = np.stack(list(self._vectors.values()))

        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.savez(handle, keys=keys, vectors=vectors)

        atomic_write(self.path, write, durable=False)  # a cache: rebuilt if lost
        self._dirty = False
