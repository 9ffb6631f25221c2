import json
import pathlib
import re

import pytest

from condgen_jax.tools import report
from condgen_jax.tools.report import Anchor, Row

ROW = Row("mnist_x", "X-GAN", "acgan.py",
          overrides=(("d_conditioning", "film"), ("spectral_norm", True)),
          eval_flags=(("parzen", False),),
          anchor=Anchor("Parzen 132 ± 1.8", key="parzen_log_likelihood",
                        stderr_key="parzen_stderr"))
CPU = {"platform": "cpu", "device_count": 1, "cpu_cores": 2,
       "cpu": "AMD EPYC 7B13 64-Core Processor", "cpu_isa": "AVX2"}
GPU = {"platform": "gpu", "device_kind": "NVIDIA H200", "device_count": 1}


CONFIG = {"dataset": "mnist", "batch_size": 64, "model": "acgan",
          "d_conditioning": "film", "spectral_norm": True}  # ROW's run


def _write_run(root, name="mnist_x", step=400, sessions=((0, CPU),)):
  w = root / name
  (w / "samples").mkdir(parents=True)
  (w / "samples" / f"step_{step:08d}.png").write_bytes(b"png")
  (w / "config.json").write_text(json.dumps(CONFIG))
  (w / "metrics.jsonl").write_text("".join(
      json.dumps({"step": s, "wall_s": s * 1.5, "loss": 1.0}) + "\n"
      for s in (100, 200, 300, 400, 500)))
  (w / "sessions.jsonl").write_text("".join(
      json.dumps({"step": s, "hardware": h}) + "\n" for s, h in sessions))
  (w / "eval.json").write_text(json.dumps({
      "step": step, "class_accuracy": 0.98765, "fid": 12.345,
      "intra_fid": 20.0, "kid": 0.4567, "kid_std": 0.0312,
      "precision": 0.7, "recall": 0.65, "density": 0.9, "coverage": 0.8,
      "cas": 0.95, "parzen_log_likelihood": 150.04, "parzen_stderr": 2.06}))
  return w


def test_commands_are_the_rows_train_and_evaluate_lines():
  assert report.train_command(ROW, "results") == (
      "python -m experiments.train --config=experiments/configs/acgan.py "
      "--workdir=results/mnist_x --config.d_conditioning=film "
      "--config.spectral_norm=true")
  assert report.evaluate_command(ROW, "results") == (
      "python -m experiments.evaluate --workdir=results/mnist_x "
      "--parzen=false")
  other = Row("a", "A", "cvae.py", eval_file="eval_w2.json",
              eval_flags=(("guidance_scale", 2.0),))
  assert report.evaluate_command(other, "r dir") == (
      "python -m experiments.evaluate '--workdir=r dir/a' "
      "--guidance_scale=2.0 --out=eval_w2.json")
  assert report.commands([ROW], "results").splitlines() == [
      "set -e", "# mnist_x: X-GAN", report.train_command(ROW, "results"),
      report.evaluate_command(ROW, "results")]


def test_read_run_takes_the_evaluated_steps_wall_time_and_hardware(tmp_path):
  # a resume at step 300 on a GPU, one at 450 on a CPU (after the
  # evaluated step 400: not part of it)
  _write_run(tmp_path, sessions=((0, CPU), (300, GPU), (450, CPU)))
  run = report.read_run(ROW, tmp_path)
  assert run["step"] == 400 and run["batch_size"] == 64
  assert run["wall_s"] == 600.0  # the record at step 400, not 500
  assert run["hardware"] == "2-core AMD EPYC 7B13 (AVX2) + 1× NVIDIA H200"
  assert run["grid"] == tmp_path / "mnist_x" / "samples" / "step_00000400.png"
  assert report.read_run(Row("missing", "M", "cvae.py"), tmp_path) is None


def test_a_run_that_is_not_the_rows_is_refused(tmp_path):
  w = _write_run(tmp_path)
  (w / "config.json").write_text(json.dumps({**CONFIG, "d_conditioning":
                                             "projection"}))
  with pytest.raises(ValueError, match="holds a run with d_conditioning="
                     "'projection', but the row 'mnist_x' sets "
                     "d_conditioning='film'"):
    report.read_run(ROW, tmp_path)


def test_committed_records_name_no_machine_path():
  records = pathlib.Path(__file__).parents[1] / "docs" / "results"
  texts = {p.name: p.read_text() for p in records.glob("*.json")}
  assert len(texts) >= 20
  machine_path = re.compile(r"(?<![\w.])/(?:root|home|tmp|work|Users|var)/")
  assert [n for n, t in texts.items() if machine_path.search(t)] == []


def test_table_row_values(tmp_path):
  _write_run(tmp_path)
  cells = report.table_row(report.read_run(ROW, tmp_path))
  assert cells == ["X-GAN", "0.988", "12.3", "20.0", "0.46 ± 0.03", "0.700",
                   "0.650", "0.900", "0.800", "0.950", "400 × 64", "10 min",
                   "2-core AMD EPYC 7B13 (AVX2)",
                   "Parzen 132 ± 1.8 (ours 150 ± 2.1)"]
  assert len(cells) == len(report.COLUMNS)


def test_matched_accuracy_and_missing_values(tmp_path):
  w = _write_run(tmp_path)
  (w / "eval.json").write_text(json.dumps(
      {"step": 400, "class_accuracy": 0.1, "matched_class_accuracy": 0.951}))
  row = Row("mnist_x", "InfoGAN", "infogan.py",
            accuracy_key="matched_class_accuracy", anchor=Anchor("5 % error"))
  cells = report.table_row(report.read_run(row, tmp_path))
  assert cells[1] == "0.951 (matched)"
  assert cells[2:10] == ["–"] * 8
  assert cells[-1] == "5 % error"


def test_a_record_reads_back_as_the_run(tmp_path):
  _write_run(tmp_path / "root")
  run = report.read_run(ROW, tmp_path / "root")
  path = report.write_record(run, tmp_path / "records")
  assert path == tmp_path / "records" / "mnist_x.json"
  kept = json.loads(path.read_text())
  assert kept["results"]["fid"] == 12.345 and kept["wall_s"] == 600.0
  assert kept["config"] == CONFIG
  back = report.read_record(ROW, tmp_path / "records", grid="g.png")
  assert back["grid"] == "g.png"
  assert report.table_row(back) == report.table_row(run)
  assert report.read_record(Row("other", "O", "cvae.py"),
                            tmp_path / "records") is None
  path.rename(path.with_name("other.json"))
  with pytest.raises(ValueError, match="record of 'mnist_x', not of the row "
                     "'other'"):
    report.read_record(Row("other", "O", "cvae.py"), tmp_path / "records")


def test_format_wall():
  assert report.format_wall(None) == "–"
  assert report.format_wall(95.4) == "95 s"
  assert report.format_wall(1830) == "30 min"


def test_tables_group_by_dataset_in_row_order(tmp_path):
  _write_run(tmp_path, "a")
  w = _write_run(tmp_path, "b")
  (w / "config.json").write_text(json.dumps(
      {"dataset": "fashion_mnist", "batch_size": 32}))
  _write_run(tmp_path, "c")
  runs = [report.read_run(Row(n, n.upper(), "x.py"), tmp_path)
          for n in "abc"]
  text = report.tables(runs)
  mnist, fashion = text.split("**Fashion-MNIST**")
  assert mnist.startswith("**MNIST**")
  assert [l.split(" | ")[0] for l in mnist.splitlines()
          if l.startswith("| ") and "---" not in l] == ["| model", "| A", "| C"]
  assert "| B |" in fashion and "| A |" not in fashion
  grids = report.grid_table(runs, "img", per_line=1)
  assert grids.count("![A](img/a.png)") == 1 and "![B](img/b.png)" in grids
  assert "Fashion-MNIST, one row per requested class:" in grids


def test_replace_between():
  text = "intro\n<!-- report:begin -->\nold\nrows\n<!-- report:end -->\nend\n"
  assert report.replace_between(text, "new\n") == (
      "intro\n<!-- report:begin -->\nnew\n<!-- report:end -->\nend\n")
  with pytest.raises(ValueError, match="expected one"):
    report.replace_between("no markers\n", "x")
  with pytest.raises(ValueError, match="expected one"):
    report.replace_between("<!-- report:end -->\n<!-- report:begin -->\n", "")


def test_attribute_runs_get_the_seen_and_held_out_table(tmp_path):
  w = _write_run(tmp_path)
  (w / "config.json").write_text(json.dumps(
      {"dataset": "colored_mnist", "batch_size": 128}))
  (w / "eval.json").write_text(json.dumps({
      "step": 400, "attributes": ["digit", "color"],
      "held_out": [[0, 0], [1, 1]], "fid": 5.55,
      "digit_accuracy_seen": 0.99, "digit_accuracy_held_out": 0.951,
      "color_accuracy_seen": 1.0, "color_accuracy_held_out": 0.9,
      "joint_accuracy_seen": 0.99, "joint_accuracy_held_out": 0.85}))
  run = report.read_run(Row("mnist_x", "CVAE", "cvae.py"), tmp_path)
  assert report.attribute_table_row(run) == [
      "CVAE", "2 combinations", "0.990 / 0.951", "1.000 / 0.900",
      "0.990 / 0.850", "5.5", "400 × 128", "10 min",
      "2-core AMD EPYC 7B13 (AVX2)"]
  text = report.tables([run])
  assert text.startswith("**Colored MNIST") and "digit acc. seen" in text
  assert report.grid_table([run], "img").startswith(
      "Colored MNIST, conditioned on attributes: one row per digit")


def test_image_runs_get_their_own_table_and_grids(tmp_path):
  w = _write_run(tmp_path)
  (w / "config.json").write_text(json.dumps(
      {"dataset": "mnist", "batch_size": 128, "condition_kind": "image",
       "image_task": "quadrants", "quadrants_given": 2}))
  (w / "eval.json").write_text(json.dumps(
      {"step": 400, "test_ncll": 45.678, "class_accuracy": 0.9012}))
  row = Row("mnist_x", "CVAE", "cvae_sop.py",
            anchor=Anchor("44.96 (Sohn et al. 2015)"))
  _write_run(tmp_path, "labels")
  runs = [report.read_run(row, tmp_path),
          report.read_run(Row("labels", "GAN", "acgan.py"), tmp_path)]
  assert report.image_table_row(runs[0]) == [
      "CVAE", "2 quadrants given", "45.68", "–", "0.901", "400 × 128",
      "10 min", "2-core AMD EPYC 7B13 (AVX2)", "44.96 (Sohn et al. 2015)"]
  labels, images = report.tables(runs).split("**MNIST, conditioned on images**")
  assert "| GAN |" in labels and "| CVAE |" not in labels
  assert "| CVAE | 2 quadrants given |" in images and "| GAN |" not in images
  grids = report.grid_table(runs, "img")
  assert grids.index("![GAN](img/labels.png)") < grids.index(
      "input | output | target")
  assert "![CVAE, 2 quadrants given](img/mnist_x.png)" in grids
  config = {"image_task": "quadrants", "quadrants_given": 1}
  assert report.condition_text(config) == "1 quadrant given"
  assert report.condition_text({"image_task": "colorize"}) == "gray image"
