"""The results table, generated from the runs' own files.

A row names a config, its overrides and the evaluation's flags
(`experiments/results.py` holds every row); its run lives in
`<root>/<row.name>`. `read_run` takes what the table prints from that
workdir: config.json (dataset, batch), the evaluation file (metrics and the
evaluated step), metrics.jsonl (`wall_s` at that step) and sessions.jsonl
(the hardware). `write_record` keeps that, as JSON, in a folder the
repository holds, and `read_record` reads it back, so the table can be
written again without every row's workdir (a row whose workdir is present
is read from it). `tables` formats the rows, one Markdown table per dataset
and kind of condition (label, attributes, image); `grid_table` places their
sample grids; `replace_between` puts generated text between two marker
lines of the README.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Sequence

from etils import epath

from condgen_jax.core import hardware

BEGIN = "<!-- report:begin -->"
END = "<!-- report:end -->"

DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST",
                  "digits": "digits (8×8)",
                  "colored_mnist": "Colored MNIST",
                  "colored_digits": "colored digits (8×8)"}


@dataclasses.dataclass(frozen=True)
class Anchor:
  """A published number to print beside a row: `text` as the paper states
  it, and the key of our value in the evaluation file (with its standard
  error key, if any)."""
  text: str
  key: str = ""
  stderr_key: str = ""


@dataclasses.dataclass(frozen=True)
class Row:
  name: str                      # the run's folder under the root
  label: str                     # the model column
  config: str                    # a file in experiments/configs/
  overrides: tuple = ()          # ((key, value), ...) for --config.KEY
  eval_flags: tuple = ()         # ((flag, value), ...) for experiments.evaluate
  anchor: Anchor | None = None
  eval_file: str = "eval.json"
  grid: bool = True
  # "matched_class_accuracy" for models trained without labels, whose codes
  # are mapped to classes after training (InfoGAN).
  accuracy_key: str = "class_accuracy"


def _flag_value(value) -> str:
  if isinstance(value, bool):
    return str(value).lower()
  return str(value)


def train_command(row: Row, root: str) -> str:
  args = ["python", "-m", "experiments.train",
          f"--config=experiments/configs/{row.config}",
          f"--workdir={root}/{row.name}"]
  args += [f"--config.{k}={_flag_value(v)}" for k, v in row.overrides]
  return shlex.join(args)


def evaluate_command(row: Row, root: str) -> str:
  args = ["python", "-m", "experiments.evaluate",
          f"--workdir={root}/{row.name}"]
  args += [f"--{k}={_flag_value(v)}" for k, v in row.eval_flags]
  if row.eval_file != "eval.json":
    args.append(f"--out={row.eval_file}")
  return shlex.join(args)


def commands(rows: Sequence[Row], root: str) -> str:
  """A bash script that trains and evaluates each row."""
  lines = ["set -e"]
  for row in rows:
    lines += [f"# {row.name}: {row.label}", train_command(row, root),
              evaluate_command(row, root)]
  return "\n".join(lines) + "\n"


def _jsonl(path) -> list[dict]:
  path = epath.Path(path)
  if not path.exists():
    return []
  records = []
  for i, line in enumerate(path.read_text().splitlines(), 1):
    if line.strip():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {i}, is not valid JSON "
                         f"({e}).") from None
  return records


def _read_json(path, *, keys=()) -> dict:
  """The JSON object in `path`; ValueError naming the file when it is not
  one, or lacks one of `keys`."""
  path = epath.Path(path)
  try:
    value = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON ({e}).") from None
  if not isinstance(value, dict):
    raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an "
                     "object.")
  missing = [k for k in keys if k not in value]
  if missing:
    raise ValueError(f"{path} has no {missing}: not the file of a "
                     "condgen-jax run.")
  return value


def read_run(row: Row, root) -> dict | None:
  """What the table prints for `row`; None where it has not been evaluated.
  A ValueError when the run's config.json differs from the row's overrides
  (another run in the row's folder)."""
  workdir = epath.Path(root) / row.name
  eval_path = workdir / row.eval_file
  if not eval_path.exists():
    return None
  results = _read_json(eval_path, keys=("step",))
  config = _read_json(workdir / "config.json",
                      keys=("dataset", "batch_size"))
  for key, value in row.overrides:
    if config.get(key) != value:
      raise ValueError(
          f"{workdir} holds a run with {key}={config.get(key)!r}, but the "
          f"row {row.name!r} sets {key}={value!r}: not the row's run. Move "
          "it away, or re-run the row's command there.")
  step = int(results["step"])
  wall = None
  for record in _jsonl(workdir / "metrics.jsonl"):
    if record["step"] <= step and "wall_s" in record:
      wall = record["wall_s"]
  hosts = []  # of the commands that trained steps up to `step`
  for session in _jsonl(workdir / "sessions.jsonl"):
    text = hardware.summary(session["hardware"])
    if session["step"] < step and text not in hosts:
      hosts.append(text)
  return _run(row, results, config, step, wall, " + ".join(hosts) or None,
              workdir / "samples" / f"step_{step:08d}.png")


def _run(row, results, config, step, wall_s, hardware_text, grid) -> dict:
  return {"row": row, "results": results, "config": config,
          "dataset": config["dataset"], "batch_size": config["batch_size"],
          "step": step, "wall_s": wall_s, "hardware": hardware_text,
          "grid": grid}


def record_path(row: Row, records_dir) -> epath.Path:
  return epath.Path(records_dir) / f"{row.name}.json"


def write_record(run: dict, records_dir) -> epath.Path:
  """Keeps what the table prints of `run` (its evaluation file and config
  whole, the evaluated step, its wall time and hardware) as
  `<records_dir>/<row name>.json`."""
  path = record_path(run["row"], records_dir)
  path.parent.mkdir(parents=True, exist_ok=True)
  record = {"name": run["row"].name, "step": run["step"],
            "wall_s": run["wall_s"], "hardware": run["hardware"],
            "config": run["config"], "results": run["results"]}
  path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
  return path


def read_record(row: Row, records_dir, grid=None) -> dict | None:
  """The run `write_record` kept for `row`, as `read_run` returns it (its
  sample grid at `grid`); None where there is none."""
  path = record_path(row, records_dir)
  if not path.exists():
    return None
  r = _read_json(path, keys=("name", "step", "wall_s", "hardware",
                              "config", "results"))
  if r.get("name") != row.name:
    raise ValueError(f"{path} holds the record of {r.get('name')!r}, not of "
                     f"the row {row.name!r}")
  return _run(row, r["results"], r["config"], int(r["step"]), r["wall_s"],
              r["hardware"], grid)


def _num(results: dict, key: str, digits: int) -> str:
  value = results.get(key)
  return "–" if value is None else f"{value:.{digits}f}"


def format_wall(seconds) -> str:
  if seconds is None:
    return "–"
  if seconds < 120:
    return f"{seconds:.0f} s"
  return f"{seconds / 60:.0f} min"


def _accuracy(row: Row, results: dict) -> str:
  acc = _num(results, row.accuracy_key, 3)
  if row.accuracy_key == "matched_class_accuracy" and acc != "–":
    return f"{acc} (matched)"
  return acc


def _kid(results: dict) -> str:
  if results.get("kid") is None:
    return "–"
  return f"{results['kid']:.2f} ± {results.get('kid_std', 0.0):.2f}"


def _anchor(row: Row, results: dict) -> str:
  a = row.anchor
  if a is None:
    return ""
  if not a.key or results.get(a.key) is None:
    return a.text
  ours = f"{results[a.key]:.3g}"
  if a.stderr_key and results.get(a.stderr_key) is not None:
    ours += f" ± {results[a.stderr_key]:.2g}"
  return f"{a.text} (ours {ours})"


COLUMNS = ("model", "class acc.", "FID", "intra-FID", "KID", "precision",
           "recall", "density", "coverage", "CAS", "steps × batch",
           "wall time", "hardware", "published")


def table_row(run: dict) -> list[str]:
  r = run["results"]
  return [run["row"].label, _accuracy(run["row"], r), _num(r, "fid", 1),
          _num(r, "intra_fid", 1), _kid(r), _num(r, "precision", 3),
          _num(r, "recall", 3), _num(r, "density", 3),
          _num(r, "coverage", 3), _num(r, "cas", 3),
          f"{run['step']} × {run['batch_size']}", format_wall(run["wall_s"]),
          run["hardware"] or "–", _anchor(run["row"], r)]


ATTRIBUTE_COLUMNS = ("model", "held out", "digit acc. seen / held out",
                     "color acc. seen / held out", "joint acc. seen / held out",
                     "FID", "steps × batch", "wall time", "hardware")


def _seen_held(r: dict, name: str) -> str:
  return (f"{_num(r, f'{name}_accuracy_seen', 3)} / "
          f"{_num(r, f'{name}_accuracy_held_out', 3)}")


def attribute_table_row(run: dict) -> list[str]:
  """A run conditioned on attributes: accuracy on seen and on held-out
  combinations (`metrics.attribute_accuracy`)."""
  r = run["results"]
  names = r["attributes"]
  cells = [run["row"].label, f"{len(r.get('held_out', []))} combinations"]
  cells += [_seen_held(r, n) for n in names[:2]]
  cells += [_seen_held(r, "joint"), _num(r, "fid", 1),
            f"{run['step']} × {run['batch_size']}", format_wall(run["wall_s"]),
            run["hardware"] or "–"]
  return cells


IMAGE_COLUMNS = ("model", "condition", "test NCLL (nats)", "test L1",
                 "class acc.", "steps × batch", "wall time", "hardware",
                 "published")


def is_image_conditioned(run: dict) -> bool:
  return run.get("config", {}).get("condition_kind") == "image"


def condition_text(config: dict) -> str:
  """What an image-conditioned run was given, from its config."""
  task = config.get("image_task")
  if task == "quadrants":
    q = int(config["quadrants_given"])
    return f"{q} quadrant{'s' if q > 1 else ''} given"
  if task == "colorize":
    return "gray image"
  return str(task)


def image_table_row(run: dict) -> list[str]:
  """A run conditioned on images: the test negative conditional
  log-likelihood of the predicted pixels (`families.sop.evaluate`), the
  test L1 (`families.pix2pix.evaluate`), and whether the outputs keep
  their class."""
  r = run["results"]
  return [run["row"].label, condition_text(run["config"]),
          _num(r, "test_ncll", 2), _num(r, "test_l1", 3),
          _num(r, "class_accuracy", 3),
          f"{run['step']} × {run['batch_size']}", format_wall(run["wall_s"]),
          run["hardware"] or "–", _anchor(run["row"], r)]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]):
  lines = ["| " + " | ".join(header) + " |",
           "| " + " | ".join("---" for _ in header) + " |"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def by_dataset(runs: Sequence[dict]) -> dict[str, list[dict]]:
  groups = {}
  for run in runs:
    groups.setdefault(run["dataset"], []).append(run)
  return groups


def by_condition(group: Sequence[dict]):
  """(label runs, attribute runs, image runs) of `group`, order kept."""
  images = [r for r in group if is_image_conditioned(r)]
  attrs = [r for r in group if "attributes" in r["results"]]
  labels = [r for r in group if r not in images and r not in attrs]
  return labels, attrs, images


def tables(runs: Sequence[dict]) -> str:
  """One titled table per dataset, rows in the order given."""
  parts = []
  for dataset, group in by_dataset(runs).items():
    title = f"**{DATASET_TITLES.get(dataset, dataset)}**\n\n"
    labels, attrs, images = by_condition(group)
    if labels:
      parts.append(title + markdown_table(COLUMNS,
                                          [table_row(r) for r in labels]))
    if attrs:
      parts.append(title.replace("**\n", ", conditioned on attributes**\n")
                   + markdown_table(ATTRIBUTE_COLUMNS,
                                    [attribute_table_row(r) for r in attrs]))
    if images:
      parts.append(title.replace("**\n", ", conditioned on images**\n")
                   + markdown_table(IMAGE_COLUMNS,
                                    [image_table_row(r) for r in images]))
  return "\n\n".join(parts)


def image_name(row: Row) -> str:
  return row.name.replace("/", "_") + ".png"


def grid_table(runs: Sequence[dict], image_dir: str,
               per_line: int = 4) -> str:
  """Markdown tables of the rows' sample grids (`image_dir` relative to the
  README), `per_line` to a table line, one table per dataset."""
  parts = []
  for dataset, group in by_dataset(runs).items():
    title = DATASET_TITLES.get(dataset, dataset)
    labels, attrs, images = by_condition(
        [r for r in group if r["row"].grid])
    for subset, caption in (
        (labels, "one row per requested class"),
        (attrs, "conditioned on attributes: one row per digit, the colors "
         "along the row"),
        (images, "conditioned on images: input | output | target, one row "
         "per class (missing pixels mid-gray)")):
      for i in range(0, len(subset), per_line):
        chunk = subset[i:i + per_line]
        header = [f"{_grid_label(r)} ({r['step']} steps)" for r in chunk]
        cells = [f"![{_grid_label(r)}]({image_dir}/{image_name(r['row'])})"
                 for r in chunk]
        parts.append(f"{title}, {caption}:\n\n"
                     + markdown_table(header, [cells]))
  return "\n\n".join(parts)


def _grid_label(run: dict) -> str:
  if is_image_conditioned(run):
    return f"{run['row'].label}, {condition_text(run['config'])}"
  return run["row"].label


def replace_between(text: str, generated: str, begin: str = BEGIN,
                    end: str = END) -> str:
  """`text` with the lines between the `begin` and `end` marker lines
  replaced by `generated`."""
  lines = text.splitlines(keepends=True)
  starts = [i for i, l in enumerate(lines) if l.strip() == begin]
  ends = [i for i, l in enumerate(lines) if l.strip() == end]
  if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
    raise ValueError(f"expected one {begin!r} line followed by one {end!r} "
                     f"line; found {len(starts)} and {len(ends)}")
  s, e = starts[0], ends[0]
  return "".join(lines[:s + 1]) + generated.rstrip("\n") + "\n" + "".join(
      lines[e:])
