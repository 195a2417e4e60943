"""Signals while a lab is built: unwind cleanly, never between a fork and its record.

Ctrl-C, SIGTERM and SIGHUP during `lab up` must remove what was made. Two rules make that
reliable:

- `interrupting()` turns SIGTERM and SIGHUP into `Interrupted`, a KeyboardInterrupt, so all
  three unwind through the same `except`/`finally` and end the command like Ctrl-C does;
- `held()` defers those signals while a child process runs. An exception raised inside
  `subprocess.run` kills the child, but for KeyboardInterrupt Python waits only 0.25 s for
  it, so an `ip netns add` could finish *after* the cleanup listed the namespaces, and a
  listener spawned but not yet recorded would be orphaned. Held signals are delivered as
  soon as the call returns, between steps, where the state on disk is consistent.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

HELD = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP while a lab is built or changed."""


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Block SIGINT/SIGTERM/SIGHUP in this thread for the duration; pending ones are
    delivered on exit. Threads started meanwhile inherit the mask."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def interrupting() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into `Interrupted` for the duration (main thread only)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"signal {signum}")

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals cannot be handled here anyway
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
