"""File locks for what several processes share: the caches they build on
first use (a TFDS dataset, a reference classifier) and a run's workdir.

Both are `flock(2)` locks on a small file. The kernel drops such a lock when
its holder exits in any way (a crash, SIGKILL), so a lock left by a dead
process never blocks the next one; nothing has to be cleaned up by hand.
`flock` works across the processes of one host and, on Linux, across hosts
on NFS (the kernel maps it to an NFS byte-range lock; it needs a working lock
manager, which NFSv4 has built in). Object stores (gs://, s3://) have no
file locks: there the caller skips the lock, and what is guaranteed is said
where the lock is taken (`runner.train.train_and_evaluate`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time

LOCK_FILE = ".lock"


class WorkdirInUseError(ValueError):
  """Another live process holds the workdir's lock."""


def holder_record() -> dict:
  """Who holds a lock: host, pid and since when (local time, ISO 8601)."""
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def describe_holder(text: str) -> str:
  """`text` (a lock file's holder record) as 'pid P on host H since T'."""
  try:
    h = json.loads(text)
    return f"pid {h['pid']} on host {h['host']} since {h['since']}"
  except (ValueError, KeyError, TypeError):
    return "another process (its lock file names no holder)"


@contextlib.contextmanager
def exclusive(path):
  """Holds an exclusive lock on the file `path` (created, with its folder,
  when missing), waiting for any other holder; for first-use builds: build
  under it after checking again that no one built meanwhile."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # closing drops the lock


class WorkdirLock:
  """The lock of a local workdir, held while a run trains into it.

  `acquire` takes `workdir/.lock` without waiting; when a live process holds
  it, raises `WorkdirInUseError` naming the holder (host, pid, since when)
  and writes nothing. The holder's record is written into the file only
  once the lock is held.
  """

  def __init__(self, workdir):
    self.path = os.path.join(os.fspath(workdir), LOCK_FILE)
    self._fd = None

  def acquire(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.pread(fd, 4096, 0).decode(errors="replace")
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      workdir = os.path.dirname(self.path)
      raise WorkdirInUseError(
          f"--workdir {workdir!r} is in use by {describe_holder(holder)}: "
          "one run trains into a workdir at a time. Wait for it to finish "
          "(or stop it), or use another --workdir.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder_record()).encode(), 0)
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
