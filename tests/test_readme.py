"""Every command the README shows is run by a test.

Each ``python tools/...`` line of a ```bash block must appear verbatim, as a string, in a test file
that runs it (through ``tests.helpers.run_command``, which may append output paths, a temporary
data root or ``debug=fast``). The install and test commands are what ``.ci/run`` runs.
"""

from __future__ import annotations

import re

from tests.helpers import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line:
                commands.append(line)
    return commands


def test_every_readme_command_is_run_by_a_test():
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_readme.py")
    missing = [c for c in readme_commands() if c.startswith("python tools/") and f'"{c}"' not in sources]
    assert not missing, f"README commands no test runs: {missing}"


def test_ci_runs_exactly_the_readme_install_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = readme_commands()
    for expected in ('pip install -e ".[dev]"', "pytest -q", "pytest -q -m slow"):
        assert expected in commands, expected
        assert re.search(rf"^{re.escape(expected)}$", ci, flags=re.M), expected
