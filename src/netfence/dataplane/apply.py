"""Loading a compiled ruleset into the kernel, in one nftables transaction.

One script is one transaction: either every command takes effect or none does, so a script
that fails (a kernel without a feature, a bug, a table that drifted) leaves the previous
rules in force. That holds for both ways of talking to the kernel:

- libnftables (`libnftables.so.1`, Debian's `libnftables1`, which the `nft` command itself
  is built on), through ctypes: `nft_run_cmd_from_filename` (on a memory file holding the
  script) parses, evaluates and sends the whole script as one netlink batch, as `nft -f`
  does. A pod update is a few `add element` /
  `delete element` commands, and running them this way costs a fraction of a millisecond,
  where starting `ip netns exec NS nft -f -` costs 10-25 ms (process starts, nft's own
  set-up): the agent's per-pod latency budget is 10 ms.
- the `nft` command (`ip netns exec NS nft -f -`), when the library cannot be loaded.

libnftables has no notion of a namespace: its netlink socket belongs to the namespace of
the thread that opens it. So an `Nftables` owns one worker thread, which enters the
namespace once (`setns` on /run/netns/NAME, in that thread only: the caller's threads stay
where they are) and then creates the one context it uses for every script. A context is
not thread-safe; the worker runs the scripts submitted to it one at a time, whichever
thread submits them. Python 3.11 has no `os.setns`, hence the call through libc.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import re
import subprocess
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Literal

_LIBRARY = "libnftables.so.1"
_CLONE_NEWNET = 0x40000000
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

Backend = Literal["libnftables", "nft command"]


class ApplyError(RuntimeError):
    """nft refused the script; the previous ruleset is still in force."""


@functools.cache
def _library() -> ctypes.CDLL | None:
    """libnftables with the prototypes used here, or None when it cannot be loaded."""
    try:
        lib = ctypes.CDLL(_LIBRARY)
    except OSError:
        return None
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_free.restype = None
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_int
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_char_p
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    lib.nft_ctx_set_dry_run.restype = None
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_output_set_flags.restype = None
    lib.nft_run_cmd_from_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_filename.restype = ctypes.c_int
    return lib


def default_backend() -> Backend:
    """What an `Nftables` uses unless told otherwise."""
    return "libnftables" if _library() is not None else "nft command"


def enter_netns(netns: str) -> None:
    """Move the calling thread (only) into the named namespace."""
    if "/" in netns or netns in ("", ".", ".."):
        raise ApplyError(f"invalid network namespace name {netns!r}")
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ApplyError(f"cannot open network namespace {netns}: {exc.strerror}") from None
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            error = os.strerror(ctypes.get_errno())
            raise ApplyError(f"cannot enter network namespace {netns}: {error}")
    finally:
        os.close(fd)


_Result = tuple[int, str, str]  # return code, output, error messages
_Job = tuple[bytes, bool, int, "Future[_Result]"]  # script, dry run, output flags, result
# libnftables.h output flags (`nft -s`, `nft -t`): no counter values, no set elements
OUTPUT_STATELESS = 1 << 2
OUTPUT_TERSE = 1 << 11


_TRIM_AFTER = 1 << 20  # script bytes


def _trim() -> None:
    """Hand back to the system the heap a big load left free: libnftables frees what it
    built for a whole table, but glibc keeps it mapped (~44 MiB after a 50,000-element
    table, measured with the agent). No-op without glibc's `malloc_trim`."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _run_script(
    lib: ctypes.CDLL, ctx: int, script: bytes, dry_run: bool, flags: int = 0
) -> _Result:
    """One script, one transaction. It is read from a memory file rather than passed as a
    buffer because then nft's messages carry the line and column they are about (from a
    buffer, libnftables 1.0.6 quotes the wrong line); that costs ~20 µs."""
    fd = os.memfd_create("nft-script", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as file:  # writes it all, however long
            file.write(script)
        lib.nft_ctx_set_dry_run(ctx, dry_run)
        lib.nft_ctx_output_set_flags(ctx, flags)
        path = f"/proc/self/fd/{fd}"
        code = lib.nft_run_cmd_from_filename(ctx, path.encode())
    finally:
        os.close(fd)
    if len(script) > _TRIM_AFTER:
        _trim()
    # Reading a buffer also empties it for the next script.
    output = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
    errors = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    return code, output, errors.replace(path + ":", "script:")


def _serve(
    lib: ctypes.CDLL, netns: str | None, jobs: queue.SimpleQueue[_Job | None], started: Future[None]
) -> None:
    """The worker thread: enter the namespace, make the context, run jobs until None."""
    try:
        if netns is not None:
            enter_netns(netns)
        ctx = lib.nft_ctx_new(0)  # NFT_CTX_DEFAULT
        if not ctx:
            raise ApplyError("libnftables: nft_ctx_new failed")
    except BaseException as exc:  # the caller raises it
        started.set_exception(exc)
        return
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        started.set_result(None)
        while (job := jobs.get()) is not None:
            script, dry_run, flags, done = job
            try:
                done.set_result(_run_script(lib, ctx, script, dry_run, flags))
            except OSError as exc:  # the memory file could not be made
                done.set_exception(exc)
    finally:
        lib.nft_ctx_free(ctx)


class _Worker:
    """The thread and its queue; holds no reference to its `Nftables`, so that dropping
    the `Nftables` stops the thread (see `weakref.finalize` below)."""

    def __init__(self, lib: ctypes.CDLL, netns: str | None) -> None:
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        started: Future[None] = Future()
        self.thread = threading.Thread(
            target=_serve,
            args=(lib, netns, self.jobs, started),
            name=f"nft-{netns or 'here'}",
            daemon=True,
        )
        self.thread.start()
        started.result()  # what entering the namespace or making the context raised

    def run(self, script: str, dry_run: bool, flags: int = 0) -> _Result:
        done: Future[_Result] = Future()
        self.jobs.put((script.encode(), dry_run, flags, done))
        return done.result()

    def stop(self) -> None:
        self.jobs.put(None)
        if self.thread is not threading.current_thread():
            self.thread.join()


class Nftables:
    """Scripts loaded into one namespace (None: this one), each in one transaction.

    With libnftables (`backend`), one worker thread in the namespace and one context serve
    every call, for the life of the object (started at the first call; `close`, leaving a
    `with` block or dropping the object stops it). With the `nft` command, each call
    starts `ip netns exec NS nft -f -`. `library`: True requires libnftables, False uses
    the command, None (default) the library when it can be loaded.
    """

    def __init__(self, netns: str | None, library: bool | None = None) -> None:
        lib = _library() if library is not False else None
        if library and lib is None:
            raise ApplyError(f"{_LIBRARY} cannot be loaded (Debian package libnftables1)")
        self.netns = netns
        self.backend: Backend = "libnftables" if lib is not None else "nft command"
        self._lib = lib
        self._worker: _Worker | None = None
        self._stop: weakref.finalize[[], Nftables] | None = None  # stops the worker, once
        self._closed = False
        self._lock = threading.Lock()  # guards starting and stopping the worker

    def apply(self, script: str) -> None:
        """Run the script (typically: replace the table, or change elements), atomically."""
        self._run(script, check=False, what="-f -")

    def check(self, script: str) -> None:
        """Parse and validate against the kernel without applying (`nft -c`)."""
        self._run(script, check=True, what="-c -f -")

    def list_table(self, table: str = "netfence") -> str:
        return self._list(table, 0)

    def table_rules(self, table: str = "netfence") -> str:
        """The table without elements or counter values (`nft -s -t`): its chains, rules and
        set declarations, what only someone else's edit changes; an `ApplyError` when the
        table is missing. Not cheap: to print rules, libnftables fetches every set element
        into the context's cache and keeps them there (~130 ms and ~37 MiB at 50,000
        elements), so a long-lived context should not be asked (see `table_shape`)."""
        return self._list(table, OUTPUT_STATELESS | OUTPUT_TERSE)

    def table_shape(self, table: str = "netfence") -> str:
        """The declarations of the table's chains, sets and maps ('' without the table):
        about a millisecond whatever the elements, as these listings fetch none."""
        if not _TABLE_NAME.match(table):
            raise ValueError(f"invalid table name {table!r}")
        output = self._run(
            "list chains inet\nlist sets inet\nlist maps inet\n",
            check=False,
            what="list chains/sets/maps",
            flags=OUTPUT_STATELESS | OUTPUT_TERSE,
        )
        return "".join(_blocks(output, f"table inet {table} {{"))

    def _list(self, table: str, flags: int) -> str:
        if not _TABLE_NAME.match(table):
            raise ValueError(f"invalid table name {table!r}")
        command = f"list table inet {table}"
        return self._run(command + "\n", check=False, what=command, flags=flags)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stop = self._stop
        if stop is not None:
            stop()

    def __enter__(self) -> Nftables:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, script: str, check: bool, what: str, flags: int = 0) -> str:
        if self._closed:  # checked again under the lock before a worker starts
            raise RuntimeError("this Nftables is closed")
        if self._lib is None:
            code, output, errors = self._command(script, check, flags)
        else:
            code, output, errors = self._started(self._lib).run(script, check, flags)
        if code != 0:
            first = (errors.strip().splitlines() or ["no message"])[0]
            where = self.netns or "this namespace"
            raise ApplyError(f"nft {what} failed in {where}: {first}")
        return output

    def _started(self, lib: ctypes.CDLL) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("this Nftables is closed")
            if self._worker is None:
                self._worker = _Worker(lib, self.netns)
                self._stop = weakref.finalize(self, self._worker.stop)
            return self._worker

    def _command(self, script: str, check: bool, flags: int) -> _Result:
        options = [
            *(["-c"] if check else []),
            *(["-s"] if flags & OUTPUT_STATELESS else []),
            *(["-t"] if flags & OUTPUT_TERSE else []),
        ]
        argv = in_netns(self.netns, "nft", *options, "-f", "-")
        proc = subprocess.run(
            argv, input=script, capture_output=True, text=True, check=False, timeout=120
        )
        return proc.returncode, proc.stdout, proc.stderr


def _blocks(listing: str, header: str) -> Iterator[str]:
    """The lines of the top-level blocks opened by `header` in an nft listing."""
    inside = False
    for line in listing.splitlines(keepends=True):
        inside = inside or line.rstrip("\n") == header
        if inside:
            yield line
            inside = line.rstrip("\n") != "}"


def in_netns(netns: str | None, *argv: str) -> list[str]:
    """`argv` run in a named network namespace (None: this one), through `ip netns exec`,
    which also gives the command the namespace's sysctls and conntrack table."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def apply_ruleset(netns: str | None, script: str) -> None:
    """Replace the table with the script's, atomically (a context for this call only)."""
    with Nftables(netns) as nft:
        nft.apply(script)


def check_ruleset(netns: str | None, script: str) -> None:
    """Parse and validate against the kernel without applying (`nft -c`)."""
    with Nftables(netns) as nft:
        nft.check(script)


def list_table(netns: str | None, table: str = "netfence") -> str:
    with Nftables(netns) as nft:
        return nft.list_table(table)


_ELEMENTS = re.compile(r"elements = \{([^}]*)\}")
_COUNTER = re.compile(r"counter packets \d+ bytes \d+")


def normalized(listing: str) -> str:
    """A table listing as two equal tables share it: each set's elements sorted (nft lists
    hash sets and maps in the kernel's hash order, which depends on the order they were
    added, and wraps long lists wherever they reach the line's end) and counter values
    dropped (traffic changes them)."""

    def sort(match: re.Match[str]) -> str:
        items = sorted(" ".join(item.split()) for item in match[1].split(","))
        return "elements = { " + ", ".join(items) + " }"

    return _ELEMENTS.sub(sort, _COUNTER.sub("counter", listing))
