""".ci/run runs exactly the README's test command and removes what it creates."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_and_cleans_up():
    script = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    tests = readme[readme.index("## Tests") :]
    command = re.search(r"```bash\n(.+?)\n```", tests).group(1)
    assert command == "python -m pytest -q"
    commands = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert commands[-1] == command
    assert "trap cleanup EXIT" in script and 'rm -rf "$work"' in script
    # everything it makes lives in $work: the venv, the tiny-model cache, temporary files
    assert 'venv="${CI_VENV:-$work/venv}"' in script
    assert 'FACEDIFFUSER_HOME="$work/home"' in script and 'TMPDIR="$work/tmp"' in script
