"""The README's two commands: the one that starts the chat and the one that runs the tests (CI's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)]


def test_the_readme_opens_with_the_quickstart_then_the_test_command():
    blocks = _bash_blocks(README)
    assert blocks[:2] == ["bash scripts/quickstart.sh", "bash scripts/test.sh"]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # The same extraction as .ci/run, run on the README.
    awk = re.search(r"commands=\$\(awk '(.*?)' README.md\)", ci).group(1)
    out = subprocess.run(["awk", awk, "README.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "bash scripts/test.sh"
    assert "fonts-noto-cjk" in ci and "chromium" in ci


def test_the_scripts_are_valid_bash():
    for script in ("quickstart.sh", "test.sh", "_venv.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], check=True)


def test_a_second_run_reuses_the_environment(tmp_path):
    # A project folder whose .venv exists, with a `pip` that only records how it was called.
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/pip.log\n')
    (bin_dir / "pip").chmod(0o755)
    (bin_dir / "activate").write_text(f'PATH="{bin_dir}:$PATH"\n')
    script = f". {ROOT}/scripts/_venv.sh; ensure_venv; ensure_installed '.[test]'"
    env = {**os.environ, "PYTHONPATH": ""}

    def pip_calls() -> list[str]:
        subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, check=True, env=env)
        return (tmp_path / "pip.log").read_text().splitlines()

    first = pip_calls()
    # The CPU torch first (when this python lacks it), then the project.
    assert first in (["install -e .[test]"], ["install torch==2.13.0", "install -e .[test]"])
    assert pip_calls() == first  # nothing installed again
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")  # a change: again
    assert pip_calls()[len(first):][-1] == "install -e .[test]"
