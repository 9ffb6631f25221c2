"""README.md as a new user reads it: the set-up command, then the library
example, run as written in a fresh process outside the repository."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def library_example() -> str:
  section = README.split("\n## Use as a library\n", 1)[1].split("\n## ")[0]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  assert len(blocks) == 1, "the section holds one python block"
  return blocks[0]


def setup_train_command() -> list[str]:
  line = next(l for l in README.splitlines()
              if l.startswith("pip install -e") and "experiments.train" in l)
  return shlex.split(line.split("&&", 1)[1])


def test_the_readme_is_a_front_door():
  assert len(README.splitlines()) <= 250
  assert "```bash\npython -m pytest\n```" in README  # CI runs this command
  assert len(library_example().strip().splitlines()) <= 15


@pytest.mark.slow
def test_the_library_example_runs_outside_the_repository(tmp_path):
  cmd = setup_train_command()
  assert cmd[:3] == ["python", "-m", "experiments.train"]
  workdir = next(a for a in cmd if a.startswith("--workdir="))
  cmd[cmd.index(workdir)] = f"--workdir={tmp_path / workdir.split('=')[1]}"
  r = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  r = subprocess.run([sys.executable, "-c", library_example()], cwd=tmp_path,
                     capture_output=True, text=True, timeout=600, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  accuracy = re.search(r"class accuracy ([0-9.]+), FID ([0-9.]+)", r.stdout)
  assert accuracy and float(accuracy.group(1)) > 0.9, r.stdout
  # the custom loss: hinge + 0.5 fake^2 at (2, -3) and (-1, 0.5)
  assert "[4.5   3.625]" in r.stdout, r.stdout
