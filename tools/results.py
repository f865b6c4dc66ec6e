#!/usr/bin/env python
"""Generate the README results table and plots from run directories.

    python tools/results.py runs=outputs readme=README.md plots=docs/results

``runs``: one or more folders (comma-separated) searched for run directories (``config.yaml`` +
``csv/metrics.csv``); ``readme``: the markdown file whose text between ``<!-- results-table:begin -->``
and ``<!-- results-table:end -->`` is replaced; ``plots``: where the PNG plots go.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfsup.eval.results import write_results  # noqa: E402

OPTIONS = {"runs": "outputs", "readme": "README.md", "plots": "docs/results"}

if __name__ == "__main__":
    options = dict(OPTIONS)
    for word in sys.argv[1:]:
        key, sep, value = word.partition("=")
        if not sep or key not in OPTIONS:
            raise SystemExit(f"unknown argument {word!r}; valid: {', '.join(f'{k}=...' for k in OPTIONS)}")
        options[key] = value
    body = write_results([Path(p) for p in options["runs"].split(",")], Path(options["readme"]), Path(options["plots"]))
    print(body)
