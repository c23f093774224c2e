"""Code blocks in docs/ that say "runs as a test" are run, so the docs cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```python\n(# runs as a test[^\n]*\n.*?)```", re.DOTALL)


def _blocks():
    for md in sorted(DOCS.glob("*.md")):
        for i, m in enumerate(BLOCK.finditer(md.read_text())):
            yield pytest.param(m.group(1), id=f"{md.name}-{i}")


@pytest.mark.parametrize("code", list(_blocks()))
def test_doc_example_runs(code):
    exec(compile(code, "<doc>", "exec"), {"__name__": "__doc_example__"})


def test_some_examples_are_tested():
    assert list(_blocks())
