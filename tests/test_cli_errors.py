"""Bad input to the entry points other than train, as one table: each case
is one line `error: ...` on stderr naming the bad value (and what is
allowed), exit status 2, and nothing written.

The cases run in-process: each entry point's `main` behind
`runtime.parse_flags`, as `app.run` calls them. `sample` and `evaluate`
define flags of the same names (--workdir, --out, ...), which absl takes
once per process, so `EntryPoints` keeps only the running module's flags
registered. The runs are copies of the committed tiny runs of
tests/fixtures/before_layout (a label CVAE, a diffusion model, a CVAE
conditioned on images) and an attribute CVAE saved at its initial state:
nothing is trained here.
"""

import importlib
import json
import logging
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from condgen_jax.core import runtime

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "before_layout"
FLAGS = flags.FLAGS


class EntryPoints:
  """The entry points' `main`s, their flags registered one module at a
  time (absl refuses a second --workdir while the first is defined)."""

  def __init__(self):
    for module in ("absl.app", "absl.logging"):  # their flags stay
      importlib.import_module(module)
    self.verbosity = logging.getLogger("absl").level
    self.before = set(FLAGS)  # absl's own flags among them
    importlib.import_module("experiments.sampling_flags")  # sample's and
    self.own, self.modules, self.active = {}, {}, None     # evaluate's

  def main(self, name: str):
    if name != self.active:
      for flag_name in self.own.get(self.active, ()):
        delattr(FLAGS, flag_name)
      module = f"experiments.{name}"
      if name not in self.own:
        sys.modules.pop(module, None)
        self.modules[name] = importlib.import_module(module)
        self.own[name] = {f.name: f for f in
                          FLAGS.get_flags_for_module(module)}
      else:
        for flag_name, flag in self.own[name].items():
          FLAGS[flag_name] = flag
      self.active = name
    return self.modules[name].main

  def reset(self):
    """Every flag unparsed, and the `--config.<key>` flags that parsing
    `--config` added removed (the next file may have other keys)."""
    FLAGS.unparse_flags()
    for flag_name in set(FLAGS) - self.before:
      if flag_name.startswith("config."):
        delattr(FLAGS, flag_name)

  def close(self):
    """FLAGS, the experiments modules and absl's log level as before."""
    self.reset()
    for flag_name in set(FLAGS) - self.before:
      if FLAGS.find_module_defining_flag(flag_name, "").startswith(
          "experiments."):
        delattr(FLAGS, flag_name)
    for module in [m for m in sys.modules if m.startswith("experiments.")]:
      sys.modules.pop(module)
    logging.getLogger("absl").setLevel(self.verbosity)


@pytest.fixture(scope="module")
def entry_points():
  entries = EntryPoints()
  yield entries
  entries.close()


def _attribute_run(workdir: pathlib.Path) -> None:
  """A CVAE on colored digits conditioned on attributes, saved at its
  initial state (what sampling's checks need, without a training step)."""
  import jax  # pylint: disable=g-import-not-at-top
  import condgen_jax as cg  # pylint: disable=g-import-not-at-top
  from condgen_jax.core import checkpointing  # pylint: disable=g-import-not-at-top
  from condgen_jax.runner import train  # pylint: disable=g-import-not-at-top
  from conftest import tiny_cvae_config  # pylint: disable=g-import-not-at-top
  config = tiny_cvae_config(dataset="colored_digits", hidden=(16,),
                            condition_kind="attributes", latent_dim=2)
  s = train.resolve(config)
  ds = train.run_dataset(s)
  state = jax.jit(lambda key: cg.init_state(s, ds.image_shape,
                                            ds.num_classes, key))(
                                                jax.random.key(0))
  checkpointing.write_config(workdir, config)
  mngr = checkpointing.manager(workdir / "checkpoints")
  checkpointing.save(mngr, 1, state)
  mngr.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{name: workdir}: label, diffusion, image-conditioned, attribute runs."""
  root = tmp_path_factory.mktemp("runs")
  workdirs = {}
  for name, fixture in (("cvae", "cvae"), ("diffusion", "diffusion"),
                        ("image", "cvae_sop")):
    workdirs[name] = root / name
    shutil.copytree(FIXTURES / fixture, workdirs[name])
    (workdirs[name] / "samples.npz").unlink()  # the fixture's, not the run's
  workdirs["attr"] = root / "attr"
  _attribute_run(workdirs["attr"])
  return workdirs


def _copy_with_config(tmp: pathlib.Path, run: pathlib.Path, edit) -> str:
  """A copy of `run` whose config.json is `edit(config)` (a dict, dumped)
  or, for a str, that text."""
  workdir = tmp / "edited"
  shutil.copytree(run, workdir)
  config = json.loads((run / "config.json").read_text())
  new = edit(config)
  (workdir / "config.json").write_text(
      new if isinstance(new, str) else json.dumps(new, indent=2))
  return str(workdir)


def _folder_with(tmp: pathlib.Path, files: dict) -> str:
  folder = tmp / "given"
  folder.mkdir(exist_ok=True)
  for name, text in files.items():
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
  return str(folder)


def _npz(tmp: pathlib.Path, **arrays) -> str:
  path = tmp / "c.npz"
  np.savez(path, **arrays)
  return str(path)


def _npy(tmp: pathlib.Path, array) -> str:
  path = tmp / "c.npy"
  np.save(path, array)
  return str(path)


FOREIGN_CONFIG = json.dumps({"architectures": ["BertModel"],
                             "hidden_size": 768, "vocab_size": 30522})
README = "# T\n<!-- report:begin -->\nold\n<!-- report:end -->\n"
RESULTS = {"guidance_scale": 0.0, "class_accuracy": 0.9, "fid": 12.0,
           "sampler": "ddim"}


def _results(tmp: pathlib.Path) -> str:
  paths = []
  for w in (0, 1):
    paths.append(tmp / f"eval_w{w}.json")
    paths[-1].write_text(json.dumps({**RESULTS, "guidance_scale": w}))
  return ",".join(map(str, paths))


# The inputs a case's arguments name as {key}: made on demand in the
# case's own folder (`tmp`) from the runs.
INPUTS = {
    "out": lambda tmp, runs: str(tmp / "new" / "x.npz"),
    "png": lambda tmp, runs: str(tmp / "new" / "x.png"),
    "tmp": lambda tmp, runs: str(tmp),
    "missing": lambda tmp, runs: str(tmp / "nowhere"),
    "text": lambda tmp, runs: _folder_with(tmp, {"notes.txt": "notes\n"})
                              + "/notes.txt",
    "empty": lambda tmp, runs: _folder_with(tmp, {}),
    "foreign": lambda tmp, runs: _folder_with(
        tmp, {"config.json": FOREIGN_CONFIG, "model.bin": "weights"}),
    "json_list": lambda tmp, runs: _folder_with(
        tmp, {"config.json": "[1, 2]"}),
    "unknown_key": lambda tmp, runs: _copy_with_config(
        tmp, runs["cvae"], lambda c: {**c, "bacth_size": 64}),
    "mistyped": lambda tmp, runs: _copy_with_config(
        tmp, runs["cvae"], lambda c: {**c, "batch_size": "sixty-four"}),
    "invalid_json": lambda tmp, runs: _copy_with_config(
        tmp, runs["cvae"], lambda c: json.dumps(c)[:-40]),
    "diffusion_v": lambda tmp, runs: _copy_with_config(
        tmp, runs["diffusion"], lambda c: {**c, "objective": "v"}),
    "unknown_model": lambda tmp, runs: _copy_with_config(
        tmp, runs["cvae"], lambda c: {**c, "model": "vqvae"}),
    "no_model": lambda tmp, runs: _copy_with_config(
        tmp, runs["cvae"], lambda c: {k: v for k, v in c.items()
                                      if k != "model"}),
    "no_checkpoints": lambda tmp, runs: _folder_with(
        tmp, {"config.json": (runs["cvae"] / "config.json").read_text()}),
    "labels_npz": lambda tmp, runs: _npz(tmp, cond=np.array([1, 12])),
    "floats_npz": lambda tmp, runs: _npz(tmp, cond=np.array([1.0, 2.0])),
    "npy": lambda tmp, runs: _npy(tmp, np.array([1, 2])),
    "other_npz": lambda tmp, runs: _npz(tmp, labels=np.array([1, 2])),
    "shape_npz": lambda tmp, runs: _npz(tmp, cond=np.zeros((2, 8, 8))),
    "range_npz": lambda tmp, runs: _npz(tmp,
                                        cond=np.full((2, 8, 8, 1), 2.0)),
    "readme": lambda tmp, runs: _folder_with(
        tmp, {"README.md": README}) + "/README.md",
    "readme_plain": lambda tmp, runs: _folder_with(
        tmp, {"README.md": "# T\nno markers\n"}) + "/README.md",
    "root_bad_eval": lambda tmp, runs: _folder_with(tmp, {
        "mnist_cvae_learned/eval.json": '{"step": 3,',
        "mnist_cvae_learned/config.json":
            (runs["cvae"] / "config.json").read_text()}),
    "root_foreign": lambda tmp, runs: _folder_with(tmp, {
        "mnist_cvae_learned/eval.json": json.dumps({"step": 3, "fid": 1}),
        "mnist_cvae_learned/config.json": FOREIGN_CONFIG}),
    "results": lambda tmp, runs: _results(tmp),
    "results_invalid": lambda tmp, runs: _folder_with(
        tmp, {"r.json": '{"fid": 3,'}) + "/r.json",
    "results_list": lambda tmp, runs: _folder_with(
        tmp, {"r.json": "[1, 2]"}) + "/r.json",
}


class Inputs(dict):
  """{key: path} for str.format_map, each made when first named."""

  def __init__(self, tmp, runs):
    super().__init__({k: str(v) for k, v in runs.items()})
    self.tmp, self.runs = tmp, runs

  def __missing__(self, key):
    self[key] = INPUTS[key](self.tmp, self.runs)
    return self[key]


S = ("sample", "--workdir={cvae}", "--out={out}")
A = ("sample", "--workdir={attr}", "--out={out}")
I = ("sample", "--workdir={image}", "--out={out}")
D = ("sample", "--workdir={diffusion}", "--out={out}")
E = ("evaluate", "--num_per_class=1", "--parzen=false")
ED = (*E, "--workdir={diffusion}")
P = ("plot", "--results={results}", "--out={tmp}/new/p.png")
B = ("benchmark", f"--config={ROOT}/experiments/configs/cvae.py",
     "--config.dataset=digits", "--peak_size=64", "--min_seconds=0.1")
R = ("report", "--readme={readme}")

# (id, entry point and arguments, fragments of the error line)
CASES = [
    # sample: counts, conditions, condition files, sampling options, files
    ("sample-num-zero", (*S, "--num_per_class=0"), ["--num_per_class", "0"]),
    ("sample-num-negative", (*S, "--num_per_class=-2"), ["-2"]),
    ("sample-num-not-int", (*S, "--num_per_class=many"), ["'many'"]),
    ("sample-class-unknown", (*S, "--cond=ten"), ["'ten'", "'9'"]),
    ("sample-class-out-of-range", (*S, "--cond=10"),
     ["'10'", "index below 10"]),
    ("sample-class-negative", (*S, "--cond=-1"), ["'-1'"]),
    ("sample-attribute-unknown", (*A, "--cond=digit=7,colour=red"),
     ["'colour=red'", "('digit', 'color')"]),
    ("sample-attribute-value-unknown", (*A, "--cond=digit=7,color=purple"),
     ["'purple'", "'red'"]),
    ("sample-attribute-value-out-of-range", (*A, "--cond=digit=12,color=red"),
     ["'12'", "index below 10"]),
    ("sample-attribute-missing", (*A, "--cond=digit=7"), ["['color']"]),
    ("sample-attribute-twice", (*A, "--cond=digit=7,digit=1,color=red"),
     ["'digit=1'"]),
    ("sample-attribute-plain-class", (*A, "--cond=7"), ["'7'", "NAME=VALUE"]),
    ("sample-cond-file-missing", (*S, "--cond_file={missing}.npz"),
     ["nowhere.npz"]),
    ("sample-cond-file-text", (*S, "--cond_file={text}"),
     ["notes.txt", ".npz"]),
    ("sample-cond-file-npy", (*S, "--cond_file={npy}"), ["c.npy", ".npz"]),
    ("sample-cond-file-no-cond", (*S, "--cond_file={other_npz}"),
     ["c.npz", "'cond'", "['labels']"]),
    ("sample-cond-file-class-out-of-range", (*S, "--cond_file={labels_npz}"),
     ["12", "[0, 10)"]),
    ("sample-cond-file-floats", (*S, "--cond_file={floats_npz}"),
     ["float64", "integers"]),
    ("sample-cond-and-cond-file", (*S, "--cond=3", "--cond_file={labels_npz}"),
     ["--cond", "--cond_file"]),
    ("sample-image-cond-file-text", (*I, "--cond_file={text}"),
     ["notes.txt", ".npz"]),
    ("sample-image-cond-file-missing", (*I, "--cond_file={missing}"),
     ["nowhere"]),
    ("sample-image-cond-file-shape", (*I, "--cond_file={shape_npz}"),
     ["(2, 8, 8)", "[N, 8, 8, 1]"]),
    ("sample-image-cond-file-range", (*I, "--cond_file={range_npz}"),
     ["2.0", "[0, 1]"]),
    ("sample-image-cond", (*I, "--cond=3"), ["--cond=3", "--cond_file"]),
    ("sample-traverse-no-codes", (*S, "--traverse_code=0"),
     ["'cvae'", "latent codes"]),
    ("sample-sampler-unknown", (*D, "--sampler=dpm"), ["'dpm'", "'ddim'"]),
    ("sample-nfe-negative", (*D, "--nfe=-4"), ["nfe", "-4", ">= 1"]),
    ("sample-nfe-zero", (*D, "--nfe=0"), ["nfe", "got 0"]),
    ("sample-guidance-negative", (*D, "--guidance_scale=-1"),
     ["guidance_scale", "-1.0", ">= 0"]),
    ("sample-guidance-nan", (*D, "--guidance_scale=nan"),
     ["guidance_scale", "nan"]),
    ("sample-guidance-not-a-number", (*D, "--guidance_scale=high"),
     ["'high'"]),
    ("sample-nfe-not-diffusion", (*S, "--nfe=3"), ["--nfe", "'cvae'"]),
    ("sample-guidance-interval-reversed", (*D, "--guidance_interval=5,1"),
     ["--guidance_interval=5,1", "0 <= LO < HI", "LO=5.0, HI=1.0"]),
    ("sample-guidance-interval-negative", (*D, "--guidance_interval=-1,2"),
     ["--guidance_interval=-1,2", "LO=-1.0"]),
    ("sample-guidance-interval-not-numbers", (*D, "--guidance_interval=low"),
     ["--guidance_interval", "LO,HI", "'low'"]),
    ("sample-guidance-interval-not-diffusion",
     (*S, "--guidance_interval=0.3,5"), ["--guidance_interval", "'cvae'"]),
    ("sample-guide-another-model", (*D, "--guide_workdir={cvae}"),
     ["guide model='cvae'", "run model='diffusion'"]),
    ("sample-guide-another-objective", (*D, "--guide_workdir={diffusion_v}"),
     ["guide objective='v'", "run objective='eps'"]),
    ("sample-guide-for-a-cvae", (*S, "--guide_workdir={diffusion}"),
     ["does not apply to model 'cvae'"]),
    ("sample-guide-step-missing", (*D, "--guide_workdir={diffusion}:99"),
     ["99", "[3]"]),
    ("sample-guide-missing", (*D, "--guide_workdir={missing}"),
     ["nowhere", "not a condgen-jax workdir"]),
    ("sample-step-missing", (*S, "--step=99"), ["99", "[3]"]),
    ("sample-step-negative", (*S, "--step=-1"), ["-1", "[3]"]),
    ("sample-out-folder", ("sample", "--workdir={cvae}", "--out={tmp}"),
     ["is a folder"]),
    ("sample-png-folder", (*S, "--png={tmp}"), ["is a folder"]),
    ("sample-out-in-a-file", ("sample", "--workdir={cvae}",
                              "--out={text}/x.npz"),
     ["notes.txt", "not a folder"]),
    ("sample-workdir-missing-flag", ("sample", "--out={out}"),
     ["--workdir"]),
    # a workdir that is not a condgen-jax workdir, or a hand-edited one
    ("sample-workdir-missing", ("sample", "--workdir={missing}",
                                "--out={out}"),
     ["nowhere", "not a condgen-jax workdir"]),
    ("sample-workdir-empty", ("sample", "--workdir={empty}", "--out={out}"),
     ["given", "not a condgen-jax workdir"]),
    ("sample-workdir-a-file", ("sample", "--workdir={text}", "--out={out}"),
     ["notes.txt", "not a condgen-jax workdir"]),
    ("sample-workdir-foreign", ("sample", "--workdir={foreign}",
                                "--out={out}"),
     ["given/config.json", "'model'", "not a condgen-jax workdir"]),
    ("sample-config-not-an-object", ("sample", "--workdir={json_list}",
                                     "--out={out}"),
     ["config.json", "not a condgen-jax workdir"]),
    ("sample-config-no-model", ("sample", "--workdir={no_model}",
                                "--out={out}"),
     ["config.json", "'model'"]),
    ("sample-config-unknown-key", ("sample", "--workdir={unknown_key}",
                                   "--out={out}"),
     ["config.json", "'bacth_size'", "'batch_size'", "'latent_dim'"]),
    ("sample-config-mistyped-value", ("sample", "--workdir={mistyped}",
                                      "--out={out}"),
     ["config.json", "batch_size", "'sixty-four'", "integer >= 1"]),
    ("sample-config-invalid-json", ("sample", "--workdir={invalid_json}",
                                    "--out={out}"),
     ["config.json", "not valid JSON"]),
    ("sample-config-unknown-model", ("sample", "--workdir={unknown_model}",
                                     "--out={out}"),
     ["config.json", "'vqvae'", "'cvae'"]),
    ("sample-no-checkpoints", ("sample", "--workdir={no_checkpoints}",
                               "--out={out}"),
     ["checkpoints", "does not exist"]),
    # evaluate
    ("evaluate-num-zero", ("evaluate", "--workdir={cvae}",
                           "--num_per_class=0"), ["--num_per_class", "0"]),
    ("evaluate-num-negative", ("evaluate", "--workdir={cvae}",
                               "--num_per_class=-5"), ["-5"]),
    ("evaluate-out-not-json", (*E, "--workdir={cvae}", "--out=results.txt"),
     ["'results.txt'", ".json"]),
    ("evaluate-out-a-path", (*E, "--workdir={cvae}", "--out=a/eval.json"),
     ["'a/eval.json'", "inside --workdir"]),
    ("evaluate-parzen-not-bool", (*E, "--workdir={cvae}", "--parzen=maybe"),
     ["maybe"]),
    ("evaluate-best-missing", (*E, "--workdir={cvae}", "--best"),
     ["best", "does not exist"]),
    ("evaluate-workdir-missing-flag", E, ["--workdir"]),
    ("evaluate-workdir-empty", (*E, "--workdir={empty}"),
     ["not a condgen-jax workdir"]),
    ("evaluate-workdir-foreign", (*E, "--workdir={foreign}"),
     ["given/config.json", "not a condgen-jax workdir"]),
    ("evaluate-config-unknown-key", (*E, "--workdir={unknown_key}"),
     ["'bacth_size'", "'batch_size'"]),
    ("evaluate-config-mistyped-value", (*E, "--workdir={mistyped}"),
     ["'sixty-four'"]),
    ("evaluate-config-invalid-json", (*E, "--workdir={invalid_json}"),
     ["not valid JSON"]),
    ("evaluate-sampler-unknown", (*ED, "--sampler=dpm"), ["'dpm'"]),
    ("evaluate-nfe-negative", (*ED, "--nfe=-1"), ["nfe", "-1"]),
    ("evaluate-guidance-nan", (*ED, "--guidance_scale=nan"),
     ["guidance_scale", "nan"]),
    ("evaluate-guidance-not-diffusion", (*E, "--workdir={cvae}",
                                         "--guidance_scale=1"),
     ["--guidance_scale", "'cvae'"]),
    ("evaluate-guidance-interval-reversed",
     (*ED, "--guidance_interval=5,1"), ["--guidance_interval=5,1"]),
    ("evaluate-guide-another-model", (*ED, "--guide_workdir={cvae}"),
     ["guide model='cvae'", "run model='diffusion'"]),
    # report
    ("report-readme-missing", ("report", "--readme={missing}.md"),
     ["nowhere.md"]),
    ("report-readme-a-folder", ("report", "--readme={tmp}"),
     ["is a folder"]),
    ("report-readme-no-markers", ("report", "--readme={readme_plain}"),
     ["README.md", "<!-- report:begin -->"]),
    ("report-root-a-file", (*R, "--root={text}"), ["notes.txt", "folder"]),
    ("report-root-bad-eval-json", (*R, "--root={root_bad_eval}"),
     ["mnist_cvae_learned/eval.json", "not valid JSON"]),
    ("report-root-foreign-config", (*R, "--root={root_foreign}"),
     ["mnist_cvae_learned/config.json", "'dataset'"]),
    ("report-root-foreign-config-print", ("report", "--root={root_foreign}",
                                          "--only=mnist_cvae_learned"),
     ["mnist_cvae_learned/config.json", "'dataset'"]),
    ("report-records-a-file", (*R, "--records={text}"),
     ["notes.txt", "folder"]),
    ("report-image-dir-a-file", (*R, "--image_dir={text}"),
     ["notes.txt", "folder"]),
    ("report-only-unknown", ("report", "--only=nope"), ["'nope'",
                                                        "mnist_acgan"]),
    # plot
    ("plot-results-missing", ("plot", "--results={missing}.json",
                              "--out={tmp}/p.png"), ["nowhere.json"]),
    ("plot-results-invalid-json", ("plot", "--results={results_invalid}",
                                   "--out={tmp}/p.png"),
     ["r.json", "not valid JSON"]),
    ("plot-results-not-an-object", ("plot", "--results={results_list}",
                                    "--out={tmp}/p.png"),
     ["r.json", "object"]),
    ("plot-y-unknown", (*P, "--y=nope"), ["'nope'", "'fid'"]),
    ("plot-y-three", (*P, "--y=fid,fid,fid"), ["one or two"]),
    ("plot-x-unknown", (*P, "--x=nope"), ["'nope'"]),
    ("plot-by-unknown", (*P, "--table={tmp}/t.md", "--by=nope"),
     ["'nope'"]),
    ("plot-table-a-folder", (*P, "--table={tmp}"), ["is a folder"]),
    ("plot-out-a-folder", ("plot", "--results={results}", "--out={tmp}"),
     ["is a folder"]),
    ("plot-results-missing-flag", ("plot", "--out={tmp}/p.png"),
     ["--results"]),
    # benchmark
    ("benchmark-sample-nfe-negative", (*B, "--sample_nfe=-1"), ["-1"]),
    ("benchmark-peak-size-zero", (*B, "--peak_size=0"), ["--peak_size", "0"]),
    ("benchmark-min-seconds-negative", (*B, "--min_seconds=-1"),
     ["--min_seconds", "-1"]),
    ("benchmark-min-seconds-nan", (*B, "--min_seconds=nan"),
     ["--min_seconds", "nan"]),
    ("benchmark-config-value", (*B, "--config.batch_size=0"),
     ["batch_size", "got 0"]),
    ("benchmark-config-missing", ("benchmark", "--config={missing}.py"),
     ["nowhere.py", "no such file"]),
]


def listing(*folders: pathlib.Path) -> dict:
  """{path: (mtime, size)} of everything under `folders`."""
  return {str(p): (p.stat().st_mtime_ns, p.stat().st_size)
          for folder in folders for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("args,fragments", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_nothing_is_written(
    entry_points, runs, tmp_path, capsys, caplog, monkeypatch, args, fragments):
  name, *args = args
  inputs = Inputs(tmp_path, runs)
  argv = [name] + [a.format_map(inputs) for a in args]
  before = listing(tmp_path, *runs.values())
  main = entry_points.main(name)
  entry_points.reset()
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads sys.argv
  capsys.readouterr()
  with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as exit:
    main(runtime.parse_flags(argv))
  out, err = capsys.readouterr()
  assert exit.value.code == 2, err
  lines = err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  assert not out
  assert [r.getMessage() for r in caplog.records
          if r.levelno >= logging.WARNING] == []
  assert listing(tmp_path, *runs.values()) == before


def test_the_cli_prints_the_one_error_line_alone(runs, tmp_path):
  """As a user runs it (a subprocess): nothing else on stderr, e.g. no
  log line of orbax's before the error."""
  r = subprocess.run(
      [sys.executable, "-m", "experiments.sample", f"--workdir={runs['cvae']}",
       "--cond=ten", f"--out={tmp_path / 'x.npz'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2
  assert r.stderr.startswith("error: class 'ten'"), r.stderr
  assert len(r.stderr.splitlines()) == 1, r.stderr
  assert not list(tmp_path.iterdir())


def test_sample_with_a_guide_and_a_guidance_interval(runs, tmp_path):
  """The good path of the guidance flags, as a user runs it: autoguidance
  by the run's own checkpoint 3 (the guide), within sigma~ in (0.3, 5]."""
  out = tmp_path / "g.npz"
  r = subprocess.run(
      [sys.executable, "-m", "experiments.sample",
       f"--workdir={runs['diffusion']}",
       f"--guide_workdir={runs['diffusion']}:3",
       "--guidance_interval=0.3,5", "--guidance_scale=1", "--nfe=3",
       "--num_per_class=1", f"--out={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  with np.load(out) as f:
    assert f["images"].shape == (10, 8, 8, 1)
    assert np.all(np.isfinite(f["images"]))
