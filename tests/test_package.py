"""The public surface: `import qa` is instant and exposes what its `__all__` promises."""

from __future__ import annotations

import subprocess
import sys


def test_import_qa_loads_nothing_heavy():
    code = "import sys, qa; print(sorted(m for m in ('torch', 'pydantic', 'faiss', 'numpy', 'gradio', 'numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_resolves():
    import qa

    for name in qa.__all__:
        assert getattr(qa, name) is not None, name


def test_retrieve_stays_the_function_after_its_module_is_imported():
    import qa
    import qa.retrieval  # noqa: F401  (a submodule named like the function would shadow it)
    from qa import retrieve

    assert callable(retrieve) and retrieve.__module__ == "qa"


def test_every_subpackage_is_packaged():
    """A subpackage missing from pyproject's `packages` would be left out of the wheel."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "qa").rglob("__init__.py")}
    assert found == listed
