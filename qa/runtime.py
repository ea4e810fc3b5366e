"""Process-wide settings, applied in this one place and nowhere else.

Some settings belong to the process, not to an object: the thread pools of FAISS and torch, and
where log messages go. Constructors never set them (two engines would fight over them); they are
applied here, once per process, by the first use that needs them:

- `apply_threads(settings)`: FAISS's OpenMP pool to one thread (a question is a handful of small
  searches: waking OpenMP threads costs more than they save, and they fight torch for the cores;
  measured 10 ms instead of 0.5 ms at 10k passages) and torch's pool to `QA_THREADS` (0 = one per
  core: two processes each grabbing every core fight, and a 30 ms query turns into a second).
  Called by `qa.retrieval.get_engine`/`Engine.index` and by the embedder before its model loads.
- `configure_logging(settings)`: a stderr handler on the `qa` loggers at `QA_LOG_LEVEL`
  (`QA_DEBUG=1` means DEBUG). Called at the edge only (the `qa` command, `qa serve`): a program
  that imports qa as a library configures logging itself. Below DEBUG it also silences the
  libraries under us (transformers' "Loading weights" bar and warnings, the hub's bars, Python
  warnings): a newcomer reads them as something gone wrong; `-v` or `QA_LOG_LEVEL=debug` shows them.
- `configure_gradio()`: Gradio's environment variables, before Gradio is imported: no usage
  analytics sent anywhere, and its queue's event summary (pandas over the last 10,000 events
  after every event, for a monitoring page this app does not serve) made rare: under load it
  held the GIL for tens of ms at a time and delayed every other request. Values already in the
  environment win. Called by `qa.serve.app.create_app`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from qa.config import Settings

__all__ = ["apply_threads", "configure_gradio", "configure_logging"]

_lock = threading.Lock()
_faiss_done = False
_torch_threads: int | None = None


def apply_threads(settings: Settings, *, faiss: bool = True, torch: bool = False) -> None:
    """Size the FAISS and/or torch thread pools of this process (idempotent, thread-safe)."""
    global _faiss_done, _torch_threads
    with _lock:
        if faiss and not _faiss_done:
            import faiss as faiss_lib

            faiss_lib.omp_set_num_threads(1)
            _faiss_done = True
        if torch:
            threads = settings.threads or os.cpu_count() or 1
            if _torch_threads != threads:
                import torch as torch_lib

                torch_lib.set_num_threads(threads)
                _torch_threads = threads


def configure_gradio() -> None:
    """Set Gradio's process-wide environment variables (see above); call before importing it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000000")  # summarised once in a million events
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "100")


def configure_logging(settings: Settings) -> None:
    """Show the `qa` loggers' messages on stderr at `settings.log_level` (DEBUG with QA_DEBUG=1)."""
    level = logging.DEBUG if os.environ.get("QA_DEBUG") else getattr(logging, settings.log_level)
    logger = logging.getLogger("qa")
    logger.setLevel(level)
    handler = next((h for h in logger.handlers if isinstance(h, _Stderr)), None)
    if handler is None:
        handler = _Stderr()
        logger.addHandler(handler)
    detail = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(detail if level <= logging.DEBUG else "%(message)s"))
    if level > logging.DEBUG:
        _quiet_third_party()


def _quiet_third_party() -> None:
    # Environment first: transformers and huggingface_hub read these when first imported, which
    # at the edge (the `qa` command) is after this call. An explicit setting of the user wins.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "sentence_transformers", "huggingface_hub", "optimum", "openvino"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported (a test, a second call): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if not sys.warnoptions:  # `python -W ...` is an explicit wish: keep it
        import warnings

        warnings.simplefilter("ignore")


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever `sys.stderr` is when a message comes (a test's capture,
    a redirected stream), not to the one of when it was made."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass
