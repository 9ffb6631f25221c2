"""plots: series read from results dicts, and the trade-off PNG."""

import json

import numpy as np
import pytest
from PIL import Image

from condgen_jax.tools import plots

RESULTS = [{"guidance_scale": 2.0, "class_accuracy": 1.0, "fid": 17.7},
           {"guidance_scale": 0.0, "class_accuracy": 0.9, "fid": 14.7},
           {"guidance_scale": 0.5, "class_accuracy": 0.976, "fid": 7.0}]


def test_series_are_sorted_by_the_setting():
  xs, ys = plots.series(RESULTS, "guidance_scale", "fid")
  assert xs == [0.0, 0.5, 2.0]
  assert ys == [14.7, 7.0, 17.7]


def test_a_missing_metric_names_the_file_and_the_keys_it_has():
  bad = RESULTS[:2] + [{"guidance_scale": 1.0, "fid": 3.0, "model": "x"}]
  with pytest.raises(ValueError, match=r"c\.json has no numeric "
                     r"'class_accuracy'; its numeric keys: \['fid', "
                     r"'guidance_scale'\]"):
    plots.series(bad, "guidance_scale", "class_accuracy",
                 names=["a.json", "b.json", "c.json"])


def test_tradeoff_writes_a_png_with_both_series(tmp_path):
  out = tmp_path / "sub" / "plot.png"
  data = plots.tradeoff(RESULTS, "guidance_scale", ["class_accuracy", "fid"],
                        out, title="t")
  assert data["class_accuracy"] == ([0.0, 0.5, 2.0], [0.9, 0.976, 1.0])
  image = np.asarray(Image.open(out).convert("RGB")).astype(int)
  assert image.shape == (int(3.4 * 120), 5 * 120, 3)
  # both line colours are drawn: tab:blue (31, 119, 180), tab:red (214, 39, 40)
  for rgb in ((31, 119, 180), (214, 39, 40)):
    assert (np.abs(image - rgb).sum(-1) < 30).sum() > 50


def test_tradeoff_takes_one_or_two_metrics(tmp_path):
  with pytest.raises(ValueError, match="one or two metrics"):
    plots.tradeoff(RESULTS, "guidance_scale", ["a", "b", "c"],
                   tmp_path / "p.png")


def test_read_results_reads_each_file_and_names_a_missing_one(tmp_path):
  path = tmp_path / "e.json"
  path.write_text(json.dumps(RESULTS[0]))
  assert plots.read_results([str(path)]) == [RESULTS[0]]
  with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
    plots.read_results([str(tmp_path / "nope.json")])


def test_table_has_a_row_per_setting_in_ascending_order():
  text = plots.table(RESULTS, "guidance_scale", ["class_accuracy", "fid"])
  assert text == ("| guidance_scale | class_accuracy | fid |\n"
                  "| --- | --- | --- |\n"
                  "| 0 | 0.9 | 14.7 |\n"
                  "| 0.5 | 0.976 | 7 |\n"
                  "| 2 | 1 | 17.7 |\n")


def test_table_by_a_second_setting_has_a_column_per_value():
  results = [{"nfe": 20, "sampler": "ddim", "fid": 6.0},
             {"nfe": 10, "sampler": "ddim", "fid": 9.5},
             {"nfe": 20, "sampler": "heun", "fid": 5.25}]
  text = plots.table(results, "nfe", ["fid"], by="sampler")
  assert text == ("| nfe | fid (ddim) | fid (heun) |\n"
                  "| --- | --- | --- |\n"
                  "| 10 | 9.5 | – |\n"
                  "| 20 | 6 | 5.25 |\n")


def test_table_rejects_a_repeated_setting():
  results = [{"nfe": 20, "fid": 6.0}, {"nfe": 20, "fid": 5.0}]
  with pytest.raises(ValueError, match=r"b\.json repeats nfe=20\."):
    plots.table(results, "nfe", ["fid"], names=["a.json", "b.json"])
