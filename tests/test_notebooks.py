"""Every notebooks/*.ipynb runs top to bottom in smoke mode (CONDGEN_SMOKE=1:
the embedded `digits` set and tiny budgets), without a cell error."""

import os
import pathlib
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 1200  # per cell; the shared 2-core CI machines vary a lot


def test_the_notebooks_are_there():
  assert len(NOTEBOOKS) >= 4, [p.name for p in NOTEBOOKS]


# What a committed output must not hold: this machine's absolute paths.
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:root|home|tmp|work|Users|var)/")


def _output_text(out) -> str:
  if out.output_type == "stream":
    return out.text
  if out.output_type == "error":
    return "\n".join(out.traceback)
  return "\n".join(v for k, v in out.get("data", {}).items()
                   if k.startswith("text/") and isinstance(v, str))


def test_committed_outputs_name_no_machine_paths():
  # Notebooks are committed executed in full mode (or without outputs):
  # what is shown names no absolute path of the machine that ran it.
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
      for out in cell.get("outputs", []):
        assert out.output_type != "error", f"{path.name} cell {i}: an error"
        found = MACHINE_PATH.search(_output_text(out))
        assert found is None, f"{path.name} cell {i}: {found.group(0)}..."


def test_the_machine_path_check_finds_paths():
  assert MACHINE_PATH.search("loaded /root/.cache/x.msgpack")
  assert MACHINE_PATH.search("workdir=/tmp/condgen_03_abc")
  assert not MACHINE_PATH.search("workdir=workdirs/notebooks/03 a/b/c")


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
