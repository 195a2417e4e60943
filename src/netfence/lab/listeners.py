"""Starting, tracking and stopping the listener processes of a lab.

One `python -m netfence.lab.listener` per namespace that has ports (pods; nodes for their
hostNetwork pods; the outside), started through `ip netns exec`, which execs it, so the pid
we get is the listener's. Each runs in its own session (Ctrl-C on `lab up` does not reach
it) and says `ready` on a pipe once its sockets are bound; `up` waits for that, so the first
probe never races a listener's bind.

Pids are recorded in `listeners.json`; stopping also scans /proc for listener processes
inside the lab's namespaces, so a crash that lost the record leaves nothing running. Only
processes whose command line is our listener are ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from netfence.lab.signals import held
from netfence.lab.topology import LabError, LabPlan, PortSpec

MODULE = "netfence.lab.listener"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 2.0


def _registry(directory: Path) -> Path:
    return directory / "listeners.json"


def read_registry(directory: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_registry(directory).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_registry(directory: Path, data: Mapping[str, object]) -> None:
    from netfence.lab.netns import write_json

    write_json(_registry(directory), dict(data))


def _port_text(ports: Iterable[PortSpec]) -> str:
    return ",".join(f"{proto}:{port}" for proto, port in ports)


def start(netns: str, ports: Sequence[PortSpec], directory: Path) -> subprocess.Popen[bytes]:
    """Spawn one listener; the caller waits for it with `wait_ready`."""
    if not netns.startswith("nf-"):
        raise LabError(f"refusing to start a listener outside a lab namespace: {netns!r}")
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{netns}.log", "ab") as log:
        return subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                "-m",
                MODULE,
                "--ports",
                _port_text(ports),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )


def wait_ready(procs: Mapping[str, subprocess.Popen[bytes]], timeout: float) -> None:
    """Wait until every listener said `ready` (its sockets are bound)."""
    waiting = {p.stdout.fileno(): (ns, p) for ns, p in procs.items() if p.stdout is not None}
    deadline = time.monotonic() + timeout
    failed = []
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            failed += [f"{ns}: not ready after {timeout:.0f} s" for ns, _ in waiting.values()]
            break
        readable, _, _ = select.select(list(waiting), [], [], left)
        for fd in readable:
            netns, proc = waiting.pop(fd)
            line = os.read(fd, 64)
            if not line.startswith(b"ready"):
                failed.append(f"{netns}: exited with {proc.poll()} (see its log)")
    for proc in procs.values():
        if proc.stdout is not None:
            proc.stdout.close()
    if failed:
        raise LabError("listeners failed to start: " + "; ".join(failed))


def sync(plan: LabPlan, directory: Path, wanted: Mapping[str, Sequence[PortSpec]]) -> None:
    """Make the running listeners match `wanted` (namespace -> ports): stop those that
    should not run or serve other ports, start the missing ones, wait until all are ready."""
    registry = read_registry(directory)
    stale = [
        ns
        for ns, entry in registry.items()
        if ns not in wanted
        or [tuple(p) for p in entry.get("ports", [])] != [tuple(p) for p in wanted[ns]]
        or not _is_listener(int(entry.get("pid", 0)))
    ]
    stop(plan.name, stale, directory)
    registry = read_registry(directory)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for ns, ports in wanted.items():
            if ns not in registry:
                with held():  # a signal now would lose the pid of a live child
                    procs[ns] = start(ns, ports, directory)
        for ns, proc in procs.items():
            registry[ns] = {"pid": proc.pid, "ports": [list(p) for p in wanted[ns]]}
        _write_registry(directory, registry)
        wait_ready(procs, READY_TIMEOUT)
    except BaseException:
        # Killed by pid, whatever stage they reached: `ip netns exec` may already have
        # entered a namespace that is about to be deleted, where no scan would find it.
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        raise


def start_all(plan: LabPlan, directory: Path, wanted: Mapping[str, Sequence[PortSpec]]) -> None:
    sync(plan, directory, wanted)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_listener(pid: int) -> bool:
    """Alive, not a zombie, and running our module (a reused pid is someone else's)."""
    if pid <= 0 or MODULE.encode() not in _cmdline(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _netns_ids(namespaces: Iterable[str]) -> dict[tuple[int, int], str]:
    ids = {}
    for netns in namespaces:
        with contextlib.suppress(OSError):
            st = os.stat(f"/run/netns/{netns}")
            ids[(st.st_dev, st.st_ino)] = netns
    return ids


def listener_pids(namespaces: Iterable[str]) -> dict[int, str]:
    """Listener processes running inside any of the namespaces (scanning /proc)."""
    ids = _netns_ids(namespaces)
    found: dict[int, str] = {}
    if not ids:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        netns = ids.get((st.st_dev, st.st_ino))
        if netns is not None and _is_listener(int(entry)):
            found[int(entry)] = netns
    return found


def stop(name: str, namespaces: Sequence[str], directory: Path | None = None) -> list[int]:
    """Stop the listeners of these namespaces (recorded or found); returns their pids."""
    from netfence.lab.netns import state_dir

    directory = directory or state_dir(name)
    registry = read_registry(directory)
    pids = {int(registry[ns].get("pid", 0)) for ns in namespaces if ns in registry}
    pids = {pid for pid in pids if _is_listener(pid)}
    pids |= set(listener_pids(namespaces))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        _reap(alive)
        alive = {pid for pid in alive if _is_listener(pid)}
        if alive:
            time.sleep(0.01)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap(pids)
    if registry and directory.exists():
        _write_registry(directory, {k: v for k, v in registry.items() if k not in namespaces})
    return sorted(pids)


def _reap(pids: Iterable[int]) -> None:
    """Collect exit statuses of listeners that are our own children (tests, `lab up`)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
