"""Every notebooks/*.ipynb runs top to bottom in smoke mode (CONDGEN_SMOKE=1:
the embedded `digits` set and tiny budgets), without a cell error."""

import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 1200  # per cell; the shared 2-core CI machines vary a lot


def test_the_notebooks_are_there():
  assert len(NOTEBOOKS) >= 4, [p.name for p in NOTEBOOKS]


def test_notebooks_are_committed_without_outputs():
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
      if cell.cell_type == "code":
        assert not cell.get("outputs"), f"{path.name} holds outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
  monkeypatch.setenv("CONDGEN_SMOKE", "1")  # the kernel inherits the env
  assert os.environ["CONDGEN_SMOKE"] == "1"
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
      resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
  client.execute()  # raises CellExecutionError, with the traceback, on error
  errors = [f"{out.ename}: {out.evalue}"
            for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.output_type == "error"]
  assert not errors, errors
