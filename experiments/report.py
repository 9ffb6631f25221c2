r"""Writes the results table from the runs of `experiments/results.py`.

  python -m experiments.report [--root=results] [--readme=README.md] \
      [--image_dir=docs/images/results] [--records=docs/results] \
      [--only=NAME,...]
  python -m experiments.report --commands [--only=NAME,...]

A row is read from its workdir, `<root>/<name>`, when that holds its
evaluation file (an error if the run's config differs from the row's
overrides), and otherwise from the record an earlier report kept in
--records (`docs/results/<name>.json`: the evaluation file and config
whole, the evaluated step, wall time and hardware); rows with neither are
left out and named on stderr. Without --readme the tables of the --only
rows are printed. With it, the text between the README's
`<!-- report:begin -->` and `<!-- report:end -->` lines is replaced by
every row's table, the rows outside --only read from their records only;
each row read from a workdir gets its record written and its sample grid
(the evaluated step's) copied to --image_dir, where the grids of recorded
rows already are. --image_dir and --records are relative to the README.
--commands prints the rows' train and evaluate commands as a bash script
instead.
"""

import shutil
import sys

from absl import app
from absl import flags
from etils import epath

from condgen_jax.tools import report
from condgen_jax.core import runtime
from experiments import results

_ROOT = flags.DEFINE_string("root", "results", "Folder of the rows' runs.")
_README = flags.DEFINE_string("readme", None, "Markdown file to update.")
_IMAGE_DIR = flags.DEFINE_string("image_dir", "docs/images/results",
                                 "Where the grids go, relative to --readme.")
_RECORDS = flags.DEFINE_string("records", "docs/results",
                                "Folder of the rows' records, relative to "
                                "--readme.")
_ONLY = flags.DEFINE_list("only", None, "Row names to include (default all).")
_COMMANDS = flags.DEFINE_bool("commands", False, "Print the rows' commands.")


def selected_rows(only):
  names = [row.name for row in results.ROWS]
  unknown = [n for n in only or () if n not in names]
  if unknown:
    raise ValueError(f"--only names unknown rows {unknown}; the rows are "
                     f"{names}.")
  return [row for row in results.ROWS if not only or row.name in only]


def _not_a_folder(path, flag: str) -> None:
  """NotADirectoryError when `path` exists and is not a folder."""
  if path.exists() and not path.is_dir():
    raise NotADirectoryError(f"{flag}={path} is a file, not a folder.")


def read_readme(readme) -> str:
  """The text of --readme, checked: a file with one report:begin line
  followed by one report:end line."""
  wanted = (f"give the Markdown file to update, with a {report.BEGIN!r} "
            f"line and then a {report.END!r} line")
  if readme.is_dir():
    raise IsADirectoryError(f"--readme={readme} is a folder; {wanted}.")
  if not readme.exists():
    raise FileNotFoundError(f"--readme={readme} does not exist; {wanted}.")
  text = readme.read_text()
  try:
    report.replace_between(text, "")
  except ValueError as e:
    raise ValueError(f"--readme={readme}: {e}; {wanted}.") from None
  return text


def main(argv):
  runtime.start(argv)
  with runtime.user_errors():
    selected = selected_rows(_ONLY.value)
    if _COMMANDS.value:
      print(report.commands(selected, _ROOT.value), end="")
      return
    # A missing --root is no error: the rows come from their records.
    _not_a_folder(epath.Path(_ROOT.value), "--root")
    readme = epath.Path(_README.value or "README.md")
    image_dir = readme.parent / _IMAGE_DIR.value
    records = readme.parent / _RECORDS.value
    _not_a_folder(records, "--records")
    if _README.value is not None:  # the README gets every row
      old_text = read_readme(readme)
      _not_a_folder(image_dir, "--image_dir")
      to_read = [(row, row in selected) for row in results.ROWS]
    else:
      to_read = [(row, True) for row in selected]
    runs, fresh, not_run = [], [], []
    for row, from_workdir in to_read:
      run = report.read_run(row, _ROOT.value) if from_workdir else None
      if run is not None:
        fresh.append(run)
      else:
        run = report.read_record(row, records,
                                 grid=image_dir / report.image_name(row))
      if run is None:  # rows left out by --only are not looked for in root
        looked = (f"no {row.eval_file} in {_ROOT.value}/{row.name}, "
                  if from_workdir else "")
        not_run.append(f"not run: {row.name} ({looked}no record in "
                       f"{records})")
      else:
        runs.append(run)
    # named once every row was read: a bad one is then the only line
    for line in not_run:
      print(line, file=sys.stderr)
    text = report.tables(runs)
    if _README.value is None:
      print(text)
      return
    grids = [r for r in runs if r["row"].grid and r["grid"].exists()]
    text += "\n\n" + report.grid_table(grids, _IMAGE_DIR.value)
    new = report.replace_between(old_text, text)
    image_dir.mkdir(parents=True, exist_ok=True)
    for r in fresh:
      report.write_record(r, records)
      image = image_dir / report.image_name(r["row"])
      if r["row"].grid and r["grid"].exists():
        shutil.copyfile(r["grid"], image)
      elif image.exists():  # an older run's grid would pass for this run's
        image.unlink()
    readme.write_text(new)
    print(f"wrote {len(runs)} rows to {readme} ({len(fresh)} from workdirs, "
          f"{len(runs) - len(fresh)} from records)")


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
