"""The entry points as a user runs them: subprocesses, exit codes, files."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.dataset=digits", "--config.batch_size=32",
        "--config.hidden=(32,16)", "--config.latent_dim=4",
        "--config.log_every=10", "--config.checkpoint_every=10",
        "--config.sample_every=10"]


def run(module, *args, env=None):
  return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, **(env or {})})


def tree_digest(folder: pathlib.Path) -> str:
  h = hashlib.sha1()
  for p in sorted(folder.rglob("*")):
    h.update(str(p.relative_to(folder)).encode())
    if p.is_file():
      h.update(p.read_bytes())
  return h.hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  r = run("train", "--config=experiments/configs/cvae.py",
          f"--workdir={workdir}", "--config.num_steps=20", *TINY)
  assert r.returncode == 0, r.stderr[-2000:]
  return workdir


def test_train_writes_the_workdir(trained):
  assert (trained / "config.json").exists()
  assert (trained / "samples" / "step_00000020.png").exists()
  assert (trained / "checkpoints" / "20").exists()
  last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
  assert last["step"] == 20 and "images_per_s" in last


def test_sample_contract(trained, tmp_path):
  out = tmp_path / "s.npz"
  r = run("sample", f"--workdir={trained}", "--num_per_class=3",
          f"--out={out}", f"--png={tmp_path / 's.png'}", "--seed=5")
  assert r.returncode == 0, r.stderr[-2000:]
  s = np.load(out)
  assert s["images"].shape == (30, 8, 8, 1) and s["images"].dtype == np.float32
  assert 0.0 <= s["images"].min() and s["images"].max() <= 1.0
  np.testing.assert_array_equal(s["labels"], np.repeat(np.arange(10), 3))
  assert s["labels"].dtype == np.int32
  assert (tmp_path / "s.png").exists()
  again = tmp_path / "t.npz"
  run("sample", f"--workdir={trained}", "--num_per_class=3", f"--out={again}",
      "--seed=5")
  np.testing.assert_array_equal(np.load(again)["images"], s["images"])


def test_evaluate_writes_eval_json(trained):
  r = run("evaluate", f"--workdir={trained}")
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.loads((trained / "eval.json").read_text())
  assert result["num_test_examples"] == 360
  assert 0 < result["test_neg_elbo"] < 100


def test_resume_by_running_the_same_command_again(trained):
  r = run("train", "--config=experiments/configs/cvae.py",
          f"--workdir={trained}", "--config.num_steps=30", *TINY)
  assert r.returncode == 0, r.stderr[-2000:]
  steps = [json.loads(l)["step"] for l in
           (trained / "metrics.jsonl").read_text().splitlines()]
  assert steps == [10, 20, 30]


@pytest.mark.parametrize("override,message", [
    ("--config.dataset=cifar10", "Unknown dataset 'cifar10'"),
    ("--config.prior=vamp", "Unknown prior 'vamp'"),
    ("--config.conditioning=tile", "Unknown conditioning 'tile'"),
    ("--config.model=vqvae", "Unknown model 'vqvae'"),
    ("--config.no_such_key=1", "no_such_key"),
])
def test_bad_config_values_are_one_clear_error(trained, override, message):
  before = tree_digest(trained)
  r = run("train", "--config=experiments/configs/cvae.py",
          f"--workdir={trained}", *TINY, override)
  assert r.returncode != 0
  assert message in r.stderr
  assert "Traceback" not in r.stderr
  assert tree_digest(trained) == before


def test_missing_data_is_one_clear_error(tmp_path):
  r = run("train", "--config=experiments/configs/cvae.py",
          f"--workdir={tmp_path / 'w'}", "--config.dataset=fashion_mnist",
          env={"CONDGEN_DATA_DIR": str(tmp_path / "empty"),
               "TFDS_DATA_DIR": str(tmp_path / "tfds")})
  assert r.returncode == 2
  assert "Dataset 'fashion_mnist' not found" in r.stderr
  assert "Traceback" not in r.stderr


def test_another_models_workdir_is_refused_and_kept(trained, tmp_path):
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "config.json").write_text(json.dumps({"model": "cgan_mlp",
                                                   "dataset": "digits"}))
  (foreign / "checkpoints").mkdir()
  (foreign / "checkpoints" / "keep.txt").write_text("precious")
  before = tree_digest(foreign)
  r = run("train", "--config=experiments/configs/cvae.py",
          f"--workdir={foreign}", *TINY)
  assert r.returncode == 2
  assert "model='cgan_mlp'" in r.stderr and "model='cvae'" in r.stderr
  assert tree_digest(foreign) == before


def test_sample_rejects_nonpositive_count(trained, tmp_path):
  r = run("sample", f"--workdir={trained}", "--num_per_class=0",
          f"--out={tmp_path / 'x.npz'}")
  assert r.returncode == 2 and "num_per_class" in r.stderr
  assert not (tmp_path / "x.npz").exists()


def _one_error_line(r, *fragments):
  """Exit 2, no traceback, one `error:` line holding every fragment."""
  assert r.returncode == 2, r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  errors = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1, r.stderr[-2000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


@pytest.mark.parametrize("content,fragment", [
    (None, "no such file"),
    ("def get_config(:\n", "SyntaxError: invalid syntax (line 1)"),
])
def test_a_missing_or_broken_config_file_is_one_error(tmp_path, content,
                                                      fragment):
  config = tmp_path / "c.py"
  if content is not None:
    config.write_text(content)
  r = run("train", f"--config={config}", f"--workdir={tmp_path / 'w'}")
  _one_error_line(r, f"cannot load '{config}'", fragment)
  assert not (tmp_path / "w").exists()


def test_a_workdir_that_is_a_file_is_one_error(tmp_path):
  (tmp_path / "w").write_text("not a folder")
  r = run("train", "--config=experiments/configs/cvae.py",
          f"--workdir={tmp_path / 'w'}", *TINY)
  _one_error_line(r, "is a file, not a folder")
  assert (tmp_path / "w").read_text() == "not a folder"


def _chattr(flag, path):
  return subprocess.run(["chattr", flag, str(path)],
                        capture_output=True).returncode == 0


@pytest.mark.parametrize("frozen", ["workdir", "metrics.jsonl"])
def test_a_read_only_workdir_or_log_is_one_error_and_nothing_changes(
    trained, frozen):
  target = trained if frozen == "workdir" else trained / frozen
  before = tree_digest(trained)
  if not _chattr("+i", target):
    pytest.skip("chattr +i is not supported here")
  try:
    r = run("train", "--config=experiments/configs/cvae.py",
            f"--workdir={trained}", "--config.num_steps=40", *TINY)
  finally:
    _chattr("-i", target)
  _one_error_line(r, "PermissionError", "not writable")
  assert tree_digest(trained) == before


def test_a_changed_seed_is_one_error_until_allowed(trained):
  before = tree_digest(trained)
  r = run("train", "--config=experiments/configs/cvae.py",
          f"--workdir={trained}", "--config.num_steps=20", "--config.seed=7",
          *TINY)
  _one_error_line(r, "seed: 0 -> 7", "--config.allow_config_change=True")
  assert tree_digest(trained) == before


def test_a_key_the_old_run_lacks_is_compared_as_its_default(trained,
                                                            tmp_path):
  # A run written before `binarize` existed trained at its default (True).
  old = tmp_path / "old"
  shutil.copytree(trained, old)
  config = json.loads((old / "config.json").read_text())
  assert config.pop("binarize") is True
  (old / "config.json").write_text(json.dumps(config))
  before = tree_digest(old)
  r = run("train", "--config=experiments/configs/cvae.py",
          f"--workdir={old}", "--config.num_steps=20",
          "--config.binarize=False", *TINY)
  _one_error_line(r, "binarize: True -> False",
                  "--config.allow_config_change=True")
  assert tree_digest(old) == before


@pytest.mark.parametrize("override,fragment", [
    ("--config.learning_rate=0", "learning_rate must be finite and > 0"),
    ("--config.learning_rate=-10", "learning_rate must be finite and > 0"),
    ("--config.best_metric=test_class_acc", "Unknown best_metric"),
    ("--config.batch_size=0", "batch_size must be an integer >= 1"),
])
def test_bad_values_are_one_error_before_anything_is_written(
    tmp_path, override, fragment):
  r = run("train", "--config=experiments/configs/cvae.py",
          f"--workdir={tmp_path / 'w'}", *TINY, override)
  _one_error_line(r, fragment)
  assert not (tmp_path / "w").exists()


def test_idx_files_that_are_not_gzip_are_one_error(tmp_path):
  folder = tmp_path / "data" / "mnist"
  folder.mkdir(parents=True)
  for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    (folder / name).write_bytes(b"this is not gzip")
  r = run("train", "--config=experiments/configs/cvae.py",
          f"--workdir={tmp_path / 'w'}",
          f"--config.data_dir={tmp_path / 'data'}",
          env={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
  _one_error_line(r, "train-images-idx3-ubyte.gz is not a readable gzip")
  assert not (tmp_path / "w").exists()


def test_sample_creates_the_out_folder_and_writes_the_exact_path(trained,
                                                                tmp_path):
  out = tmp_path / "new" / "deeper" / "x"
  png = tmp_path / "other" / "g.png"
  r = run("sample", f"--workdir={trained}", "--num_per_class=2",
          f"--out={out}", f"--png={png}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert out.is_file() and not out.with_suffix(".npz").exists()
  assert png.is_file()
  assert f"to {out} and the grid to {png}" in r.stdout
  assert np.load(out)["images"].shape == (20, 8, 8, 1)


def test_sampling_options_of_another_family_are_one_error(trained, tmp_path):
  r = run("sample", f"--workdir={trained}", "--num_per_class=1", "--nfe=3",
          f"--out={tmp_path / 'x.npz'}")
  _one_error_line(r, "--nfe does not apply to model 'cvae'")
  assert not (tmp_path / "x.npz").exists()


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("diffusion")
  r = run("train", "--config=experiments/configs/diffusion.py",
          f"--workdir={workdir}", "--config.dataset=digits",
          "--config.batch_size=32", "--config.channels=(8,)",
          "--config.num_res_blocks=1", "--config.attention=False",
          "--config.num_steps=4", "--config.sample_every=0",
          "--config.prng_impl=philox4x32", "--config.nfe=4")
  assert r.returncode == 0, r.stderr[-2000:]
  return workdir


def test_sample_takes_the_diffusion_sampling_options(diffusion_run, tmp_path):
  def sample(name, *flags):
    r = run("sample", f"--workdir={diffusion_run}", "--num_per_class=2",
            f"--out={tmp_path / name}", *flags)
    return r, (tmp_path / name)
  r, plain = sample("w0.npz", "--guidance_scale=0", "--sampler=ddpm",
                    "--nfe=3")
  assert r.returncode == 0, r.stderr[-2000:]
  r, guided = sample("w300.npz", "--guidance_scale=300", "--sampler=ddpm",
                     "--nfe=3")
  assert r.returncode == 0, r.stderr[-2000:]
  a, b = np.load(plain)["images"], np.load(guided)["images"]
  assert a.shape == b.shape == (20, 8, 8, 1)
  # w reaches the sampler: after 4 steps the label's effect on the output
  # is still tiny (the FiLM and output convs start at zero; ~3e-6 per unit
  # of w), so a large w, but the same seed and sampler differ only
  # through w.
  assert np.abs(a - b).max() > 1e-5
  _one_error_line(sample("bad.npz", "--nfe=0")[0], "config.nfe", "got 0")
  _one_error_line(sample("bad.npz", "--guidance_scale=-1")[0],
                  "config.guidance_scale", "got -1.0")
  _one_error_line(sample("bad.npz", "--sampler=euler")[0],
                  "'euler' does not fit objective 'eps'")
  _one_error_line(sample("bad.npz", "--sampler=dpm")[0],
                  "Unknown sampler 'dpm'")
  assert not (tmp_path / "bad.npz").exists()


def test_infogan_samples_per_code_and_traverses_a_continuous_code(
    trained, tmp_path):
  workdir = tmp_path / "infogan"
  r = run("train", "--config=experiments/configs/infogan.py",
          f"--workdir={workdir}", "--config.dataset=digits",
          "--config.batch_size=16", "--config.g_width=8",
          "--config.d_width=8", "--config.q_hidden=8", "--config.z_dim=6",
          "--config.g_hidden=8", "--config.d_hidden=8",
          # flax's initialisers: from N(0, 0.02) kernels, 3 steps leave G's
          # response to a code below the 1e-4 checked here
          "--config.init=flax",
          "--config.num_steps=3", "--config.sample_every=0")
  assert r.returncode == 0, r.stderr[-2000:]
  r = run("sample", f"--workdir={workdir}", "--num_per_class=2",
          f"--out={tmp_path / 'codes.npz'}")
  assert r.returncode == 0, r.stderr[-2000:]
  np.testing.assert_array_equal(np.load(tmp_path / "codes.npz")["labels"],
                                np.repeat(np.arange(10), 2))
  r = run("sample", f"--workdir={workdir}", "--num_per_class=5",
          "--traverse_code=1", f"--out={tmp_path / 't.npz'}",
          f"--png={tmp_path / 't.png'}")
  assert r.returncode == 0, r.stderr[-2000:]
  t = np.load(tmp_path / "t.npz")
  assert t["images"].shape == (50, 8, 8, 1)
  np.testing.assert_array_equal(t["labels"], np.repeat(np.arange(10), 5))
  np.testing.assert_allclose(t["values"], [-2, -1, 0, 1, 2])
  rows = t["images"].reshape(10, 5, -1)
  # the code reaches G: images change along a row
  assert np.abs(rows[:, 0] - rows[:, -1]).max() > 1e-4
  assert (tmp_path / "t.png").exists()
  _one_error_line(run("sample", f"--workdir={workdir}", "--traverse_code=2",
                      f"--out={tmp_path / 'bad.npz'}"),
                  "continuous code 2 does not exist: the run has 2")
  _one_error_line(run("sample", f"--workdir={trained}", "--traverse_code=0",
                      f"--out={tmp_path / 'bad.npz'}"),
                  "model 'cvae' has no latent codes")
  assert not (tmp_path / "bad.npz").exists()


def test_report_writes_the_readme_table_from_a_real_run(trained, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  root = tmp_path / "results"
  workdir = root / "mnist_cvae_learned"  # a row of experiments/results.py
  shutil.copytree(trained, workdir)
  r = run("evaluate", f"--workdir={workdir}", "--num_per_class=10",
          "--parzen=false")
  assert r.returncode == 0, r.stderr[-2000:]
  step = json.loads((workdir / "eval.json").read_text())["step"]
  readme = tmp_path / "README.md"
  readme.write_text("# T\n<!-- report:begin -->\nold\n<!-- report:end -->\n"
                    "tail\n")
  records = tmp_path / "records"
  r = run("report", f"--root={root}", f"--readme={readme}", "--image_dir=img",
          f"--records={records}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "not run: mnist_acgan" in r.stderr
  text = readme.read_text()
  assert text.startswith("# T\n<!-- report:begin -->\n**digits (8×8)**")
  assert text.endswith("<!-- report:end -->\ntail\n") and "old" not in text
  row = next(l for l in text.splitlines() if l.startswith("| conv CVAE"))
  cells = row.strip("| ").split(" | ")
  assert cells[10] == f"{step} × 32"
  assert cells[11].endswith(" s") and "-core" in cells[12]
  assert (tmp_path / "img" / "mnist_cvae_learned.png").read_bytes() == (
      workdir / "samples" / f"step_{step:08d}.png").read_bytes()
  assert [p.name for p in records.iterdir()] == ["mnist_cvae_learned.json"]
  # without the workdir, the row comes back from its record, grid and all
  evaluated = (workdir / "eval.json").read_text()
  shutil.rmtree(root)
  readme.write_text("# T\n<!-- report:begin -->\n<!-- report:end -->\n"
                    "tail\n")
  r = run("report", f"--root={root}", f"--readme={readme}", "--image_dir=img",
          f"--records={records}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "0 from workdirs, 1 from records" in r.stdout
  assert readme.read_text() == text
  # --only picks the rows read from workdirs; the README keeps the others
  r = run("report", f"--root={root}", f"--readme={readme}", "--image_dir=img",
          f"--records={records}", "--only=mnist_acgan")
  assert r.returncode == 0, r.stderr[-2000:]
  assert readme.read_text() == text
  # the selected row was looked for in root, the others only as records
  assert (f"not run: mnist_acgan (no eval.json in {root}/mnist_acgan, "
          f"no record in {records})") in r.stderr
  assert f"not run: mnist_tacgan (no record in {records})" in r.stderr
  # a re-run without a grid for its evaluated step drops the older grid
  shutil.copytree(trained, workdir)
  (workdir / "eval.json").write_text(evaluated)
  (workdir / "samples" / f"step_{step:08d}.png").unlink()
  r = run("report", f"--root={root}", f"--readme={readme}", "--image_dir=img",
          f"--records={records}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert not (tmp_path / "img" / "mnist_cvae_learned.png").exists()
  assert "mnist_cvae_learned.png" not in readme.read_text()
  r = run("report", "--commands", "--only=mnist_cvae_learned")
  assert r.stdout.splitlines()[2] == (
      "python -m experiments.train --config=experiments/configs/cvae_conv.py "
      "--workdir=results/mnist_cvae_learned")
  _one_error_line(run("report", "--only=nope"), "--only", "'nope'")


def test_sample_takes_conditions(trained, tmp_path):
  r = run("sample", f"--workdir={trained}", "--num_per_class=3", "--cond=3",
          "--cond=5", f"--out={tmp_path / 'a.npz'}",
          f"--png={tmp_path / 'a.png'}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert np.load(tmp_path / "a.npz")["labels"].tolist() == [3] * 3 + [5] * 3
  np.savez(tmp_path / "c.npz", cond=np.array([1, 1, 8]))
  r = run("sample", f"--workdir={trained}", f"--cond_file={tmp_path / 'c.npz'}",
          f"--out={tmp_path / 'b.npz'}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert np.load(tmp_path / "b.npz")["labels"].tolist() == [1, 1, 8]
  _one_error_line(run("sample", f"--workdir={trained}", "--cond=ten",
                      f"--out={tmp_path / 'x.npz'}"), "class 'ten'")
  assert not (tmp_path / "x.npz").exists()


# config, its tiny flags, and a metric of the family that `evaluate` writes
# (None: the test checks the condition parser's error instead)
ATTRIBUTE_RUNS = {
    "cvae": ("cvae.py", [*TINY, "--config.num_steps=20"], None),
    "acgan": ("acgan.py", ["--config.batch_size=32", "--config.g_width=8",
                           "--config.d_width=8", "--config.z_dim=8",
                           "--config.num_steps=4", "--config.log_every=2",
                           "--config.sample_every=0"], "test_color_acc"),
    "diffusion": ("diffusion.py", [
        "--config.batch_size=32", "--config.channels=(8,)",
        "--config.num_res_blocks=1", "--config.attention=False",
        "--config.num_steps=4", "--config.log_every=2",
        "--config.sample_every=0", "--config.prng_impl=philox4x32",
        "--config.nfe=4"], "test_loss"),
}


@pytest.mark.slow
@pytest.mark.parametrize("model", tuple(ATTRIBUTE_RUNS))
def test_an_attribute_run_samples_a_combination_it_never_saw(tmp_path, model):
  config, flags, family_metric = ATTRIBUTE_RUNS[model]
  workdir = tmp_path / "w"
  r = run("train", f"--config=experiments/configs/{config}",
          f"--workdir={workdir}", "--config.condition_kind=attributes",
          *flags, "--config.dataset=colored_digits")
  assert r.returncode == 0, r.stderr[-2000:]
  r = run("sample", f"--workdir={workdir}", "--num_per_class=2",
          "--cond=digit=7,color=red", f"--out={tmp_path / 'r7.npz'}")
  assert r.returncode == 0, r.stderr[-2000:]
  out = np.load(tmp_path / "r7.npz")
  assert out["labels"].tolist() == [[7, 0], [7, 0]]  # held out by default
  assert out["images"].shape == (2, 8, 8, 3)
  if family_metric is None:
    _one_error_line(run("sample", f"--workdir={workdir}", "--cond=digit=7",
                        f"--out={tmp_path / 'x.npz'}"), "['color']")
    return
  r = run("evaluate", f"--workdir={workdir}", "--num_per_class=1",
          "--parzen=false")
  assert r.returncode == 0, r.stderr[-2000:]
  results = json.loads((workdir / "eval.json").read_text())
  # one sample of each of the 60 combinations, the default 10 held out
  assert results["num_held_out"] == 10 and results["num_seen"] == 50
  for part in ("seen", "held_out"):
    for name in ("digit", "color", "joint"):
      assert 0.0 <= results[f"{name}_accuracy_{part}"] <= 1.0
  assert results["held_out"] == [[d, (d - 1) % 6] for d in range(10)]
  assert np.isfinite(results[family_metric])


def test_every_config_file_is_the_packaged_config():
  import importlib  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  files = sorted((ROOT / "experiments" / "configs").glob("*.py"))
  assert len(files) == 15
  for path in files:
    spec = importlib.util.spec_from_file_location(f"_cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    packaged = importlib.import_module(f"condgen_jax.configs.{path.stem}")
    assert module.get_config is packaged.get_config, path
