"""Each module's `__all__` is its interface: it names what other modules import from it, and
only names that exist."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in (ROOT / "qa").rglob("*.py")
)


def _imports_from(module: str) -> dict[str, set[str]]:
    """Public names imported from `module` by the package's other modules: {name: importers}."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "qa").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == module and node.level == 0:
                for alias in node.names:
                    if not alias.name.startswith("_"):
                        found.setdefault(alias.name, set()).add(path.relative_to(ROOT).as_posix())
    return found


@pytest.mark.parametrize("name", MODULES)
def test_all_names_what_the_package_imports_and_nothing_missing(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert not [n for n in exported if not hasattr(module, n)], f"{name}.__all__ names missing objects"
    submodules = {m.rsplit(".", 1)[1] for m in MODULES if m.startswith(name + ".")}
    missing = {n: sorted(users) for n, users in _imports_from(name).items() if n not in exported and n not in submodules}
    assert not missing, f"imported from {name} but not in its __all__: {missing}"


def test_every_embedder_satisfies_the_embedder_protocol():
    from qa.distributed import RayEmbedder
    from qa.embed import Embedder, LocalEmbedder
    from tests.fakes import FakeEmbedder

    assert isinstance(FakeEmbedder(), Embedder)
    # The local and Ray embedders are checked on their classes: reading `dim` loads the model,
    # and a Ray embedder starts workers.
    members = [name for name in vars(Embedder) if not name.startswith("_") or name == "__len__"]
    members = [name for name in members if callable(getattr(Embedder, name)) or isinstance(getattr(Embedder, name), property)]
    assert {"dim", "max_tokens", "fingerprint", "describe", "encode_documents", "encode_queries", "encode_query"} <= set(members)
    for cls in (LocalEmbedder, RayEmbedder):
        assert not [name for name in members if not hasattr(cls, name)], cls
