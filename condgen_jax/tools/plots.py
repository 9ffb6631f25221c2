"""Metric trade-off plots from `experiments.evaluate` results files.

One results file per setting (e.g. one per guidance scale w); `tradeoff`
plots one or two metrics against a setting found in every file, such as
class accuracy and FID against w (Ho & Salimans 2022, Fig. 2-3); `table`
writes the same points as a markdown table, optionally one column group per
value of a second setting (FID against NFE, one column per sampler).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from etils import epath


def read_results(paths: Sequence[str]) -> list[dict]:
  """The JSON results of each path, in order."""
  results = []
  for path in paths:
    path = epath.Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"{path} does not exist or is not a file; "
                              "give the results files of "
                              "`experiments.evaluate`.")
    try:
      result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{path} is not valid JSON ({e}); give the results "
                       "files of `experiments.evaluate`.") from None
    if not isinstance(result, dict):
      raise ValueError(f"{path} holds a JSON {type(result).__name__}, not "
                       "an object of results (`experiments.evaluate`'s).")
    results.append(result)
  return results


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def series(results: Sequence[dict], x: str, y: str,
           names: Sequence[str] | None = None) -> tuple[list, list]:
  """(xs, ys): the values of keys `x` and `y` of each results dict, sorted by
  x. A missing or non-numeric value is a ValueError naming the file (from
  `names`) and the keys it holds."""
  points = []
  for i, r in enumerate(results):
    name = names[i] if names else f"results #{i}"
    for key in (x, y):
      if not _is_number(r.get(key)):
        raise ValueError(f"{name} has no numeric {key!r}; its numeric keys: "
                         f"{sorted(k for k, v in r.items() if _is_number(v))}.")
    points.append((float(r[x]), float(r[y])))
  points.sort()
  return [p[0] for p in points], [p[1] for p in points]


def tradeoff(results: Sequence[dict], x: str, ys: Sequence[str], path, *,
             names: Sequence[str] | None = None, title: str | None = None):
  """Writes a PNG of metrics `ys` (one or two; the second on a right-hand
  axis) against the setting `x` to `path`; returns the plotted series as
  {y: (xs, values)}."""
  if not 1 <= len(ys) <= 2:
    raise ValueError(f"tradeoff plots one or two metrics; got {list(ys)}.")
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  data = {y: series(results, x, y, names) for y in ys}
  fig, left = plt.subplots(figsize=(5.0, 3.4), dpi=120)
  axes = [left] + ([left.twinx()] if len(ys) == 2 else [])
  for ax, y, color, marker in zip(axes, ys, ("tab:blue", "tab:red"),
                                  ("o", "s")):
    xs, vs = data[y]
    ax.plot(xs, vs, marker=marker, color=color, label=y)
    ax.set_ylabel(y, color=color)
    ax.tick_params(axis="y", labelcolor=color)
    for xv, v in zip(xs, vs):
      if math.isfinite(v):
        ax.annotate(f"{v:.3g}", (xv, v), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7, color=color)
  left.set_xlabel(x)
  left.set_xticks(data[ys[0]][0])
  left.grid(alpha=0.3)
  if title:
    left.set_title(title, fontsize=10)
  fig.tight_layout()
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    fig.savefig(f, format="png")
  plt.close(fig)
  return data


def _cell(value) -> str:
  return f"{value:.4g}" if _is_number(value) else str(value)


def table(results: Sequence[dict], x: str, ys: Sequence[str], *,
          by: str | None = None,
          names: Sequence[str] | None = None) -> str:
  """A markdown table of metrics `ys` against the setting `x`, one row per
  value of x (ascending). With `by` (e.g. 'sampler') there is one column
  per (value of `by`, metric), in order of first appearance, and '–' where
  a combination was not measured; two results files with the same x (and
  `by`) are a ValueError."""
  names = list(names) if names else [f"results #{i}"
                                     for i in range(len(results))]
  groups, cells = [], {}
  for name, r in zip(names, results):
    group = r.get(by) if by else None
    if by and group is None:
      raise ValueError(f"{name} has no {by!r} to group by.")
    if group not in groups:
      groups.append(group)
    for y in ys:
      xs, vs = series([r], x, y, [name])
      key = (xs[0], group, y)
      if key in cells:
        raise ValueError(f"{name} repeats {x}={xs[0]:g}"
                         + (f", {by}={group}" if by else "") + ".")
      cells[key] = vs[0]
  columns = [(g, y) for g in groups for y in ys]
  header = [x] + [f"{y} ({g})" if by else y for g, y in columns]
  lines = ["| " + " | ".join(header) + " |",
           "| " + " | ".join("---" for _ in header) + " |"]
  for xv in sorted({k[0] for k in cells}):
    row = [f"{xv:g}"] + [_cell(cells[(xv, g, y)]) if (xv, g, y) in cells
                         else "–" for g, y in columns]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"
