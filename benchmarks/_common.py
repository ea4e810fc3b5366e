"""Shared helpers of the benchmark scripts: machine description, timing, tables, JSON output,
temporary folders."""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

# The temporary folders of this run (`scratch_dir`) and the process that made each: removed at exit.
_SCRATCH: dict[Path, int] = {}
_SCRATCH_HOOKED = False


def machine() -> dict:
    """CPU model, cores, RAM and library versions: what a number means depends on them."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    for name, module in (("torch", "torch"), ("faiss", "faiss"), ("sentence_transformers", "sentence_transformers")):
        try:
            info[name] = __import__(module).__version__
        except ImportError:
            info[name] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def describe_machine(info: dict) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM, load {info['load_avg_1min']}; "
        f"torch {info.get('torch')} ({info.get('torch_threads')} threads), faiss {info.get('faiss')}, "
        f"sentence-transformers {info.get('sentence_transformers')}"
    )


def percentiles(samples_s: list[float]) -> dict:
    """p50/p95/p99 and mean of timings given in seconds, in milliseconds."""
    a = np.asarray(samples_s) * 1000
    return {
        "n": int(a.size),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def table(headers: list[str], rows: list[list], title: str = "") -> str:
    """A plain-text table with right-aligned numbers and left-aligned text."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_is_number(row[i]) or row[i] == "-" for row in rows) for i in range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if numeric[i] else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def markdown_table(headers: list[str], rows: list[list]) -> list[str]:
    """The lines of a Markdown table (header, `|---|` rule, rows); cells are formatted by the caller."""
    return [_markdown_row(headers), "|" + "---|" * len(headers), *(_markdown_row(row) for row in rows)]


def _markdown_row(cells: list) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return str(value)


def write_json(out: Path, payload: dict) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    return out


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def aeb_ground_truth() -> tuple[Path, dict]:
    """The article-extraction benchmark's folder and its hand-written bodies; exits when it is not here."""
    from qa.readers.aeb import find_aeb

    aeb = find_aeb()
    if aeb is None:
        raise SystemExit("No data/aeb (ground-truth.json and html/) here or in a folder above.")
    return aeb, json.loads((aeb / "ground-truth.json").read_text(encoding="utf-8"))


def bench_index_dir() -> Path:
    """An index of corpus/ kept for the benchmarks (built once, outside the repository)."""
    from qa.config import Settings

    return Settings().cache_dir / "bench" / "index"


def ensure_index(corpus: Path | None = None) -> Path:
    """Build the benchmark index of corpus/ if it is not there yet (about a minute on 2 cores)."""
    from qa.config import Settings
    from qa.errors import QAError
    from qa.index.build import build_index
    from qa.index.load import open_index

    index_dir = bench_index_dir()
    try:
        open_index(index_dir)
    except QAError:  # none yet, or one written by an older version of qa
        print(f"Building the benchmark index of {corpus or ROOT / 'corpus'} in {shown(index_dir)} (once)...", flush=True)
        build_index(corpus or ROOT / "corpus", settings=Settings(index_dir=index_dir))
    return index_dir


def shown(path: Path) -> str:
    """A path as recorded in results: the home folder as ~, so results name no machine."""
    return str(path).replace(str(Path.home()), "~", 1)


def scratch_dir(prefix: str, dir: Path | str | None = None) -> Path:
    """A new empty temporary folder (`tempfile.mkdtemp(prefix=prefix, dir=dir)`), removed with all
    it holds when the script ends, however it ends: normally, on an error, on Ctrl-C or on SIGTERM.
    A benchmark killed half-way would otherwise leave whole indexes behind (gigabytes at 1M
    passages). `remove_scratch` removes one as soon as it is done with (each size's index).
    Returns the folder."""
    global _SCRATCH_HOOKED
    if not _SCRATCH_HOOKED:
        atexit.register(_remove_all_scratch)
        _exit_on_sigterm()
        _SCRATCH_HOOKED = True
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    _SCRATCH[folder] = os.getpid()
    return folder


def remove_scratch(folder: Path) -> None:
    """Remove a `scratch_dir` folder and all it holds now, rather than at exit."""
    _SCRATCH.pop(folder, None)
    shutil.rmtree(folder, ignore_errors=True)


def keep_scratch(folder: Path) -> None:
    """Leave a `scratch_dir` folder in place at exit: it holds what an error message names."""
    _SCRATCH.pop(folder, None)


def _remove_all_scratch() -> None:
    # Only the process that made a folder removes it: a forked child that exits normally must
    # not remove its parent's folders.
    for folder, pid in list(_SCRATCH.items()):
        if pid == os.getpid():
            remove_scratch(folder)


def _exit_on_sigterm() -> None:
    """Make SIGTERM (`kill`, `timeout`) exit through `SystemExit`, so that `finally` blocks and
    `atexit` run, as they do on Ctrl-C. Left alone where a handler is already set, or off the
    main thread (where none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, frame) -> None:
    raise SystemExit(128 + signum)
