"""XQuAD, the parallel cross-lingual QA set used by `qa eval`, and a cache of its embeddings.

XQuAD (Artetxe et al., 2020, CC BY-SA 4.0): 240 paragraphs and 1,190 questions, the same in
every language, so a question in one language can be scored against the paragraphs of another.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache", "XQuAD", "find_xquad", "load_squad", "load_xquad", "squad_files"]


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
    # Not parallel (`load_squad`): a paragraph or question missing in a language is None there.

    @property
    def parallel(self) -> bool:
        """Every paragraph and question exists in every language."""
        return not any(t is None for texts in (*self.paragraphs.values(), *self.questions.values()) for t in texts)

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


_LANG = re.compile(r"[a-z]{2,3}(?:[-_][a-z]{2,4})?")


def squad_files(folder: Path) -> dict[str, Path]:
    """The SQuAD-format files of `folder`, by language: `<name>.<lang>.json` or `<lang>.json`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No such folder: {folder}; pass --data a folder of <name>.<lang>.json files.")
    files: dict[str, Path] = {}
    for path in sorted(folder.glob("*.json")):
        lang = path.name[: -len(".json")].rsplit(".", 1)[-1].lower()
        if not _LANG.fullmatch(lang):
            raise ValueError(
                f"{path.name}: no language code in the name; name each file <name>.<lang>.json (e.g. dev.de.json)."
            )
        if lang in files:
            raise ValueError(f"{files[lang].name} and {path.name} are both '{lang}': keep one file per language.")
        files[lang] = path
    if not files:
        raise FileNotFoundError(f"No <name>.<lang>.json files in {folder}.")
    return files


def _squad_articles(path: Path, max_articles: int) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path.name} is not SQuAD JSON (a 'data' list of articles): {exc}") from None
    return data[:max_articles] if max_articles else data


def load_squad(folder: Path, langs: list[str] | None = None, max_articles: int = 0) -> XQuAD:
    """Any SQuAD-format set, one file per language (`squad_files`), parallel or not.

    A paragraph is the same across languages when it holds a question id already seen (XQuAD's
    parallel ids); otherwise it is a paragraph of its language only, and so are its questions.
    Unanswerable questions (SQuAD 2.0's `is_impossible`) are left out: no paragraph answers them.
    """
    files = squad_files(folder)
    langs = langs or sorted(files)
    unknown = [lang for lang in langs if lang not in files]
    if unknown:
        raise FileNotFoundError(f"No file for {unknown} in {folder}; there are {sorted(files)}.")
    titles: list[str] = []
    article_of: list[int] = []
    articles: dict[tuple, int] = {}
    texts: dict[str, dict[int, str]] = {lang: {} for lang in langs}
    asked: dict[str, dict[int, tuple[str, str]]] = {lang: {} for lang in langs}
    paragraph_of: dict[str, int] = {}  # question id -> paragraph
    question_ids: list[str] = []
    position: dict[str, int] = {}
    for lang in langs:
        for number, article in enumerate(_squad_articles(files[lang], max_articles)):
            for paragraph in article.get("paragraphs", []):
                qas = [q for q in paragraph.get("qas", []) if not q.get("is_impossible") and q.get("answers")]
                known = next((paragraph_of[q["id"]] for q in qas if q["id"] in paragraph_of), None)
                if known is None or known in texts[lang]:
                    key = (lang, number) if known is None else ("again", lang, number)
                    known = len(titles)
                    titles.append(str(article.get("title", "")).replace("_", " "))
                    article_of.append(articles.setdefault(key, len(articles)))
                texts[lang][known] = paragraph["context"]
                for q in qas:
                    if q["id"] not in position:
                        position[q["id"]] = len(question_ids)
                        question_ids.append(q["id"])
                        paragraph_of[q["id"]] = known
                    if paragraph_of[q["id"]] == known:
                        asked[lang][position[q["id"]]] = (q["question"], q["answers"][0]["text"])
    if not question_ids:
        raise ValueError(f"No answerable questions in {folder}.")
    n, m = len(titles), len(question_ids)
    return XQuAD(
        langs,
        {lang: [texts[lang].get(i) for i in range(n)] for lang in langs},
        titles,
        {lang: [asked[lang][i][0] if i in asked[lang] else None for i in range(m)] for lang in langs},
        np.array([paragraph_of[q] for q in question_ids]),
        question_ids,
        {lang: [asked[lang][i][1] if i in asked[lang] else "" for i in range(m)] for lang in langs},
        np.array(article_of),
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
