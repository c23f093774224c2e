"""The tutorials in notebooks/ run top to bottom on a fresh kernel of this venv.

Each notebook checks its own results against plain numpy (or the offline run) in its
cells, so a wrong result fails here like an exception does.
"""

from __future__ import annotations

import sys

import nbformat
import pytest

from _notebooks import NOTEBOOKS, execute

pytest.importorskip("ipykernel")
pytest.importorskip("panel")
pytest.importorskip("zmq")

NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def test_the_tutorials_are_there():
    assert NAMES == ["01-quickstart.ipynb", "02-dashboard.ipynb", "03-custom-udf.ipynb",
                     "04-live.ipynb", "05-distributed.ipynb",
                     "06-corrections-and-counting.ipynb",
                     "07-phase-and-ptychography.ipynb", "08-live-ptychography.ipynb",
                     "09-multi-stream-events.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has stored outputs"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", NAMES)
def test_runs_top_to_bottom(name, tmp_path):
    nb = execute(name, tmp_path, python=sys.executable)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
