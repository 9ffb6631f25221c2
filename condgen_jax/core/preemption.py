"""SIGTERM and SIGINT as a request to stop at the next step boundary.

Spot GPUs and preemptible TPU VMs get SIGTERM and a short grace period. A
run that `catch`es the signals finishes the compiled call in flight, saves a
checkpoint at the step it reached and exits (`runner.train`); the same
command then resumes exactly. A second SIGINT (Ctrl-C twice) interrupts at
once, as Python's default handler does.

In a run of several processes the signal may reach only some of them; at
each boundary they agree with one all-gather of their flags
(`requested(sync=True)`), so every process stops after the same step.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """The run stopped on a signal after saving a checkpoint at `step`."""

  def __init__(self, signum: int, step: int, where: str):
    self.signum, self.step = signum, step
    super().__init__(
        f"stopped by {signal.Signals(signum).name}: saved the checkpoint of "
        f"step {step} in {where}; the same command resumes from it.")

  @property
  def exit_code(self) -> int:
    """128 + the signal's number, the shell's code for a run it stopped."""
    return 128 + self.signum


class StopRequest:
  """The signal received since `catch` started, if any."""

  def __init__(self):
    self.signum: int | None = None

  def handle(self, signum, frame):
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum

  def requested(self, sync: bool = False) -> bool:
    """Whether to stop now. With `sync` (a multi-process run; every process
    must call it at the same points), True on all processes when any one
    of them was signalled; the signal is then that process's."""
    if not sync:
      return self.signum is not None
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = np.asarray(multihost_utils.process_allgather(
        np.int32(self.signum or 0)))
    if self.signum is None and flags.max() > 0:
      self.signum = int(flags.max())
    return self.signum is not None


_ACTIVE: list[StopRequest] = []


@contextlib.contextmanager
def catch():
  """Within it, SIGTERM and SIGINT set the yielded `StopRequest` instead of
  ending the process (from the main thread only: elsewhere Python cannot
  install handlers, and the request then never fires). A signal taken by
  `early` before it started is carried over."""
  if _ACTIVE:  # nested: share the outer request
    yield _ACTIVE[-1]
    return
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request
    return
  request.signum = _EARLY.signum
  previous = {s: _install(s, request.handle) for s in SIGNALS}
  _ACTIVE.append(request)
  try:
    yield request
  finally:
    _ACTIVE.pop()
    for s, handler in previous.items():
      _install(s, handler)


_EARLY = StopRequest()


def _install(signum, handler):
  """`signal.signal`, with system calls restarted after the handler runs
  (SA_RESTART): a collective blocked in a socket read (gloo, in a
  multi-process CPU run) must not return early with EINTR."""
  previous = signal.signal(signum, handler)
  if callable(handler):
    signal.siginterrupt(signum, False)
  return previous


def early() -> None:
  """Records SIGTERM / SIGINT from now on, for `catch` to act on: what the
  training entry point calls first, so that a signal during start-up
  (imports, compiling) stops the run cleanly at its first boundary."""
  if threading.current_thread() is threading.main_thread():
    for s in SIGNALS:
      _install(s, _EARLY.handle)
