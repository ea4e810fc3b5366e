"""The server's state: settings, readiness of the index (loaded, or first built, in a background
thread when the server starts) and the one admission bound on questions."""

import logging
import threading
from typing import Any

from qa.config import Settings
from qa.errors import DatabaseError, IndexNotFoundError, QAError

__all__ = ["Service"]

log = logging.getLogger(__name__)

DATABASE_RETRY_SECONDS = 5  # between two loads while the database (QA_DATABASE_URL) is down


class Service:
    """The server's state: settings, readiness of the index, and the one admission bound on
    questions (REST API, Gradio API and chat alike)."""

    def __init__(self, settings: Settings):
        from qa.serve.admission import Admission

        self.settings = settings
        self.admission = Admission(
            settings.queue_concurrency, settings.queue_max_size, settings.queue_wait_seconds
        )
        self.state = "starting"  # starting → (building →) loading → ready | error
        self.message = ""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Load (or first build) the index in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="qa-load-index", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        from qa.index.build import build_index
        from qa.index.format import current_version
        from qa.retrieval import get_engine

        settings = self.settings
        try:
            # With a database (qa.postgres) the index is built there by `qa index --database`.
            if not settings.database_url and current_version(settings.index_dir) is None:
                self.state = "building"
                # Warnings: the first start takes minutes, and whoever runs the server should see why.
                log.warning("No index in %s: building one from %s.", settings.index_dir, settings.corpus_dir)
                report = build_index(settings.corpus_dir, settings=settings, progress=True)
                log.warning(
                    "Indexed %d articles into %d passages in %.1f s.",
                    report.articles,
                    report.passages,
                    report.seconds,
                )
            self.state = "loading"
            get_engine(settings).warm_up()
            self.state = "ready"
            log.info("Index loaded; ready for questions.")
        except QAError as exc:
            self.state, self.message = "error", str(exc)
            if settings.database_url and isinstance(exc, (DatabaseError, IndexNotFoundError)):
                # The shared store is down, or not built yet: say so (one line) and try again, as a
                # server behind a load balancer must come up by itself once the database does.
                log.error("Error: %s Trying again in %d s.", exc, DATABASE_RETRY_SECONDS)
                timer = threading.Timer(DATABASE_RETRY_SECONDS, self._load)
                timer.daemon = True
                timer.start()
            else:
                log.error("Error: %s", exc)
        except Exception as exc:
            self.state = "error"
            self.message = f"Loading the index failed ({type(exc).__name__}); see the server log."
            log.exception("Loading the index failed")

    def not_ready_reason(self) -> str | None:
        """None when questions can be answered, else a message saying why not."""
        if self.state == "ready":
            return None
        if self.state == "error":
            return f"The index cannot be loaded: {self.message}"
        if self.state == "building":
            return "The index is being built from the corpus. Try again in a minute or two."
        return "The index is still loading. Try again in a moment."

    def ui_status(self) -> tuple[bool, str]:
        """For the chat: (ready, i18n key of the reason)."""
        if self.state == "ready":
            return True, ""
        if self.state == "error":
            return False, "unavailable"
        return False, "building" if self.state == "building" else "loading"

    def health(self) -> tuple[int, dict[str, Any]]:
        """(status, body) of /healthz: 200 once questions can be answered, else 503 and why."""
        from qa.serve.api import public_message

        body: dict[str, Any] = {
            "status": "ok" if self.state == "ready" else self.state,
            "index_version": None,
            "passages": None,
            "model": self.settings.model,
        }
        if self.state == "ready":
            from qa.retrieval import get_engine

            try:
                index = get_engine(self.settings).index()
                body["index_version"] = index.version
                body["passages"] = len(index)
                body["model"] = index.manifest.model.name
            except QAError as exc:
                body.update(status="error", message=public_message(str(exc), self.settings))
                return 503, body
            return 200, body
        if self.message:
            body["message"] = public_message(self.message, self.settings)
        return 503, body
