"""Namespaces, Pods, Nodes and policies of every tier from a folder of manifests, followed as
it changes.

The folder is read with the same loader and validation as `netfence check` (`load_paths`,
`ClusterState.validated`), so the agent enforces exactly what the analysis commands report.
Changes are noticed through inotify (watchdog) and debounced: an editor's save or
`netfence lab apply` writing many files becomes one reload, which is emitted as the difference
against the previous contents (an unchanged pod produces no change).

Only files that changed are parsed again: a file is reused while its size, inode and mtime are
unchanged and it was last written well before it was read (a write within the same clock tick
as the read is caught by comparing contents, as git does with "racy" timestamps).

Pods are kept validated and projected, not parsed: a parsed Pod is several KB of pydantic
models against a few hundred bytes for its record, so at 10,000 pods the parsed objects were
most of the agent's memory. Everything else (namespaces, nodes, policies, workloads: few, and a
policy's record holds its spec anyway) is kept parsed and goes through
`ClusterState.validated` on every read; the Pods' part of it (their own API-server verdict,
duplicate names among Pods, the namespaces they imply) is applied to the kept records.

Two failures must not open pods to traffic their policies forbid: a file that cannot be parsed
(say, caught half-written) keeps the objects it held before, and a folder that disappears keeps
the state it last had (its watch is renewed when it is back); both are reported as problems.
Writers should still replace files by renaming a finished file into place.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from netfence.cluster.state import ClusterState, Pod, forget_shared_parts, namespace_record
from netfence.k8s import models
from netfence.k8s.loader import MANIFEST_SUFFIXES, Loaded, Manifests, load_paths, manifest_files
from netfence.k8s.validation import duplicate_names, validate
from netfence.problems import Problem
from netfence.sources.changes import (
    CLUSTER_POLICY_KINDS,
    Kind,
    Record,
    SourceError,
    Update,
    differences,
    kind_of,
)

# Reading a file opens and closes it: those events must not trigger another reload.
_WRITES = {
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    EVENT_TYPE_CLOSED,
}
_RACY_NS = 1_000_000_000  # a file written less than this before it was read is compared
_UNPARSABLE = {"not-yaml", "unreadable"}


class FilesSource:
    """Follows `folder` (recursively); see `updates`.

    A reload happens once no change has arrived for `debounce` seconds, or `max_delay` seconds
    after the first change of a steady stream of them.
    """

    def __init__(self, folder: Path, *, debounce: float = 0.05, max_delay: float = 0.5) -> None:
        self.folder = folder
        self._debounce = debounce
        self._max_delay = max_delay
        self._files = _Files(folder)

    async def updates(self) -> AsyncGenerator[Update, None]:
        """The first update is the folder's complete contents, then one update per reload
        that changed something. Runs until closed (use `contextlib.aclosing`)."""
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: not a folder")
        loop = asyncio.get_running_loop()
        dirty = asyncio.Event()
        observer = Observer()
        handler = _Handler(lambda: loop.call_soon_threadsafe(dirty.set))
        observer.schedule(handler, str(self.folder), recursive=True)
        observer.start()
        try:
            held: dict[Kind, dict[str, Record]] = {kind: {} for kind in get_args(Kind)}
            problems: tuple[Problem, ...] | None = None  # None: nothing emitted yet
            watched = True
            while True:
                present = self.folder.is_dir()
                if present and not watched:  # the folder is back: watch the new one
                    observer.unschedule_all()
                    observer.schedule(handler, str(self.folder), recursive=True)
                watched = present
                current = await asyncio.to_thread(self._read, present, held)
                update = _difference(held, current, problems)
                if problems is None or update.changes or update.problems is not None:
                    yield update
                problems = current.problems
                # While the folder is missing, look for it again every second.
                await self._settle(dirty, None if present else 1.0)
        finally:
            observer.stop()
            await asyncio.to_thread(observer.join)

    async def _settle(self, dirty: asyncio.Event, timeout: float | None) -> None:
        """Wait for a change, then until changes stop (or `max_delay` has passed)."""
        try:
            await asyncio.wait_for(dirty.wait(), timeout)
        except TimeoutError:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_delay
        while (remaining := deadline - loop.time()) > 0:
            dirty.clear()
            try:
                await asyncio.wait_for(dirty.wait(), min(self._debounce, remaining))
            except TimeoutError:
                break
        dirty.clear()

    def _read(self, present: bool, held: dict[Kind, dict[str, Record]]) -> _Contents:
        if not present:
            gone = Problem(
                "error",
                "the manifests folder is gone; enforcing what it last held",
                file=str(self.folder),
                code="no-such-path",
            )
            return _Contents(held, (gone,))
        state = self._files.read()
        records: dict[Kind, dict[str, Record]] = {
            "Namespace": dict(state.namespaces),
            "Pod": {pod.key: pod for pod in state.pods},
            "NetworkPolicy": {policy.key: policy for policy in state.policies},
            # The declared nodes only (see `_validated`): the store adds what pods imply.
            "Node": dict(state.nodes),
            **{kind: {} for kind in CLUSTER_POLICY_KINDS},
        }
        for policy in state.cluster_policies:
            records[kind_of(policy)][policy.key] = policy
        return _Contents(records, tuple(state.problems))


@dataclass(frozen=True, slots=True)
class _Contents:
    records: dict[Kind, dict[str, Record]]
    problems: tuple[Problem, ...]


def _difference(
    held: dict[Kind, dict[str, Record]], current: _Contents, problems: tuple[Problem, ...] | None
) -> Update:
    changes = []
    for kind, records in current.records.items():
        changes.extend(differences(kind, held[kind], records))
        held[kind] = records
    return Update(
        changes=tuple(changes),
        problems=current.problems if current.problems != problems else None,
    )


class _Handler(FileSystemEventHandler):
    def __init__(self, wake: Callable[[], object]) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _WRITES:
            return
        paths = [os.fsdecode(event.src_path), os.fsdecode(event.dest_path)]
        if event.is_directory or any(path.lower().endswith(MANIFEST_SUFFIXES) for path in paths):
            self._wake()


@dataclass(frozen=True, slots=True)
class _Pod:
    """A Pod of a file as `ClusterState.validated` would treat it, without the parsed object."""

    namespace: str
    name: str
    file: str
    problems: tuple[Problem, ...]  # the API server's verdict on the pod
    record: Pod | None  # None: rejected

    @classmethod
    def of(cls, item: Loaded) -> _Pod:
        problems = tuple(validate(item))
        accepted = all(p.severity == "warning" for p in problems)
        record = ClusterState.from_objects([item.obj], files=[item]).pods[0] if accepted else None
        return cls(item.namespace, item.name, item.file, problems, record)

    def stand_in(self) -> Loaded:
        """The pod for the duplicate-name check, which reads only kind, namespace, name."""
        meta = models.ObjectMeta(name=self.name, namespace=self.namespace)
        return Loaded(models.Pod(metadata=meta), self.file)


@dataclass(frozen=True, slots=True)
class _Parsed:
    manifests: Manifests  # all but the Pods
    pods: tuple[_Pod, ...]


def _parse(file: Path) -> _Parsed:
    """The file's objects, compacted: what is kept of a big file is allocated in between the
    parse's garbage (YAML nodes, pydantic models), and those few objects keep CPython's
    arenas, hence the process's memory, from being freed afterwards (at 10,000 pods: ~170
    MiB held for ~35 MiB of records). Copied through pickle once the garbage is gone, they
    fill fresh arenas and the old ones go back to the system (~100 MiB). The parts pod
    records share (`cluster/state.py`) were made during the parse too: forgotten, so that
    they do not hold those arenas (~45 MiB); the copies share them among themselves."""
    blob = pickle.dumps(_objects(file))  # the parse's garbage is freed on return
    forget_shared_parts()
    kept: _Parsed = pickle.loads(blob)
    return kept


def _objects(file: Path) -> _Parsed:
    loaded = load_paths([file])
    pods = tuple(_Pod.of(item) for item in loaded.objects if isinstance(item.obj, models.Pod))
    loaded.objects = [item for item in loaded.objects if not isinstance(item.obj, models.Pod)]
    return _Parsed(loaded, pods)


def _validated(manifests: Manifests, pods: list[_Pod]) -> ClusterState:
    """`ClusterState.validated` (failing closed) of the manifests and the kept pods.

    The pods are added to the state afterwards, so its nodes are the declared ones (and those
    of workload templates, which name none): the nodes pods imply are the store's to add, as
    they are for every source."""
    state = ClusterState.validated(manifests, fail_closed=True)
    state.problems.extend(p for pod in pods for p in pod.problems)
    valid = [pod for pod in pods if pod.record is not None]
    # Only pods sharing a name can be duplicates: the check sees just those, in order.
    names = Counter((pod.namespace, pod.name) for pod in valid)
    shared = [pod for pod in valid if names[(pod.namespace, pod.name)] > 1]
    stand_ins = [pod.stand_in() for pod in shared]
    duplicates, rejected = duplicate_names(stand_ins)
    state.problems.extend(duplicates)
    dropped = {id(pod) for pod, item in zip(shared, stand_ins, strict=True) if id(item) in rejected}
    for pod in valid:
        if pod.record is not None and id(pod) not in dropped:
            state.pods.append(pod.record)
            if pod.namespace not in state.namespaces:
                state.namespaces[pod.namespace] = namespace_record(pod.namespace, {})
    return state


@dataclass(frozen=True, slots=True)
class _Cached:
    stamp: tuple[int, int, int]  # mtime, size, inode
    read_at: int  # time.time_ns() just before the file was read
    digest: bytes
    parsed: _Parsed


class _Files:
    """The folder's manifests, parsing again only the files that changed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: dict[Path, _Cached] = {}

    def read(self) -> ClusterState:
        files, problems = manifest_files([self.folder])
        result = Manifests(problems=problems)
        pods: list[_Pod] = []
        cache: dict[Path, _Cached] = {}
        for file in files:
            entry = self._file(file, self._cache.get(file))
            if entry is None:
                continue  # removed since it was listed; its removal is another event
            cache[file] = entry
            result.objects.extend(entry.parsed.manifests.objects)
            result.problems.extend(entry.parsed.manifests.problems)
            result.broken.extend(entry.parsed.manifests.broken)
            pods.extend(entry.parsed.pods)
        self._cache = cache
        return _validated(result, pods)

    def _file(self, file: Path, cached: _Cached | None) -> _Cached | None:
        read_at = time.time_ns()
        try:
            stat = file.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if cached and cached.stamp == stamp and cached.read_at - stamp[0] > _RACY_NS:
                return cached
            digest = hashlib.blake2b(file.read_bytes(), digest_size=16).digest()
        except OSError:
            return None
        if cached and cached.digest == digest:
            return _Cached(stamp, read_at, digest, cached.parsed)
        parsed = _parse(file)
        loaded = parsed.manifests
        if cached and any(p.code in _UNPARSABLE for p in loaded.problems):
            kept = Problem(
                "warning",
                "cannot be read now; enforcing the objects it held before",
                file=str(file),
                code="kept-last-good",
            )
            # Keep the old digest: the next change of the file is parsed again.
            old = cached.parsed
            problems = [*loaded.problems, kept]
            parsed = _Parsed(
                Manifests(old.manifests.objects, problems, old.manifests.broken), old.pods
            )
            return _Cached(stamp, read_at, cached.digest, parsed)
        return _Cached(stamp, read_at, digest, parsed)
