"""What a run trained on, in a form a results table can print.

`describe()` is recorded once per training command in the workdir's
sessions.jsonl; `summary(description)` is the short text of the results
table, e.g. "2-core AMD EPYC 7B13 (AVX2)" or "1× NVIDIA H200". Cores are
those of the process's affinity mask (a cgroup CPU quota is not seen).
"""

from __future__ import annotations

import os
import platform

import jax

# The widest x86 vector extension named in /proc/cpuinfo's flags, widest
# first: the one that decides XLA:CPU's matmul speed.
_ISA_FLAGS = (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def _cpuinfo(path: str = "/proc/cpuinfo") -> dict:
  """The first processor's `key: value` lines ({} where there is no file)."""
  info = {}
  try:
    with open(path) as f:
      for line in f:
        if not line.strip():
          break
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
  except OSError:
    pass
  return info


def cpu_isa(flags: str) -> str:
  """The widest extension of `_ISA_FLAGS` in a cpuinfo flags line, or ''."""
  names = set(flags.split())
  return next((isa for flag, isa in _ISA_FLAGS if flag in names), "")


def cpu_cores() -> int:
  """Cores this process may run on (its affinity mask, not the host's)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def describe() -> dict:
  """The accelerator JAX computes on and the host CPU."""
  info = _cpuinfo()
  device = jax.devices()[0]
  return {
      "platform": device.platform,
      "device_kind": device.device_kind,
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "cpu": info.get("model name") or platform.processor() or "unknown",
      "cpu_isa": cpu_isa(info.get("flags", "")),
      "cpu_cores": cpu_cores(),
  }


def _short_cpu_name(name: str) -> str:
  """'AMD EPYC 7B13 64-Core Processor' -> 'AMD EPYC 7B13'."""
  drop = ("processor", "cpu", "@")
  words = []
  for word in name.replace("(R)", "").replace("(TM)", "").split():
    if word.lower() in drop or word.lower().endswith("-core"):
      break
    words.append(word)
  return " ".join(words) or name


def summary(description: dict) -> str:
  """One short line for a results table."""
  if description.get("platform", "cpu") != "cpu":
    return (f"{description['device_count']}× "
            f"{description.get('device_kind', description['platform'])}")
  isa = description.get("cpu_isa")
  return (f"{description.get('cpu_cores', '?')}-core "
          f"{_short_cpu_name(description.get('cpu', 'unknown'))}"
          + (f" ({isa})" if isa else ""))
