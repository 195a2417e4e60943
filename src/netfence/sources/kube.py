"""Namespaces, Pods, Nodes and policies of every tier from a Kubernetes API server: list + watch.

Raw JSON, not the client's models: a typed client list of 10,000 pods holds about 650 MB of
Python objects, while the records netfence keeps (namespace, name, labels, IPs, node, ports,
hostNetwork, phase, owner) take a few tens of MB. So `kubernetes_asyncio` is used for what it
does well (kubeconfig and in-cluster config with token refresh, exec plugins, client
certificates, TLS, the HTTP session) and its responses are read unparsed
(`_preload_content=False`). Every object then goes through the same loader and validation as a
manifest file (`load_objects`, `ClusterState.validated`), so a bad object gives the same
one-line problems and is left out, and the stream goes on. (kr8s was considered: it re-lists
in a loop on 410 Gone.)

The protocol is client-go's reflector, per resource: list in pages (`limit`/`continue`), then
watch from the list's resourceVersion with bookmarks and a server-side timeout, resuming from
the last resourceVersion seen whenever the stream ends or breaks. 410 Gone (the version or the
continue token expired, e.g. after an API server restart) means events may have been missed:
list again and emit the difference against what is held, deletions included. Other failures
(refused or reset connections, 5xx, 429, 401/403) are retried with capped exponential backoff
with jitter, so the agents of a whole cluster do not reconnect in step; meanwhile the records
held stay in force.

AdminNetworkPolicy, BaselineAdminNetworkPolicy and ClusterNetworkPolicy are CRDs that many
clusters do not install. A resource the server does not serve (404) is empty, not an error:
the source says so once in the log, counts it as listed (the agent becomes ready without it),
looks again every `recheck` seconds or so and follows it from the moment it is served; when
it goes away (the CRD deleted), what was held of it is deleted. Nodes are read for their labels
and InternalIP/ExternalIP addresses (what `nodes` peers match), nothing else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration

from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_objects
from netfence.problems import Problem
from netfence.sources.changes import (
    CLUSTER_POLICY_KINDS,
    Change,
    Kind,
    Record,
    SourceError,
    Update,
    differences,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resource:
    kind: Kind
    path: str  # the collection across all namespaces
    optional: bool = False  # a CRD: not served (404) is empty, and looked for again later


_ANP_API = "/apis/policy.networking.k8s.io/v1alpha1"
RESOURCES = (
    Resource("Namespace", "/api/v1/namespaces"),
    Resource("Pod", "/api/v1/pods"),
    Resource("NetworkPolicy", "/apis/networking.k8s.io/v1/networkpolicies"),
    Resource("Node", "/api/v1/nodes"),
    Resource("AdminNetworkPolicy", f"{_ANP_API}/adminnetworkpolicies", optional=True),
    Resource(
        "BaselineAdminNetworkPolicy", f"{_ANP_API}/baselineadminnetworkpolicies", optional=True
    ),
    Resource(
        "ClusterNetworkPolicy",
        "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies",
        optional=True,
    ),
)


async def api_client(kubeconfig: str | None) -> ApiClient:
    """A client for `kubeconfig`, or for the pod's service account when it is None."""
    configuration = Configuration()
    try:
        if kubeconfig is None:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration
            )
    except (config.ConfigException, OSError, ValueError) as exc:
        where = kubeconfig or "in-cluster configuration"
        raise SourceError(f"{where}: {exc}") from exc
    return ApiClient(configuration)


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: `initial`, doubling per failure, up to `cap`;
    each delay is drawn from its upper half."""

    initial: float = 0.5
    cap: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class Stats:
    """Counters per kind, for metrics and tests."""

    lists: Counter[Kind] = field(default_factory=Counter)  # complete lists: first and after 410
    pages: Counter[Kind] = field(default_factory=Counter)
    watches: Counter[Kind] = field(default_factory=Counter)
    events: Counter[Kind] = field(default_factory=Counter)  # bookmarks included
    bookmarks: Counter[Kind] = field(default_factory=Counter)
    errors: Counter[Kind] = field(default_factory=Counter)


class _Gone(Exception):
    """410: the resourceVersion or continue token is too old; list again."""


class _Failed(Exception):
    """A response the source cannot use (an HTTP error, a malformed body); retried."""


class _Missing(_Failed):
    """404: the server does not serve the resource (a CRD that is not installed)."""


@dataclass
class _Held:
    """One resource's records and problems by key, and where its watch resumes."""

    records: dict[str, Record] = field(default_factory=dict)
    problems: dict[str, tuple[Problem, ...]] = field(default_factory=dict)
    version: str | None = None
    # Since the last list, a watch event arrived or a request failed: the version has aged,
    # and a 410 for it is no sign of a server that answers every list with a stale one.
    progressed: bool = False

    def all_problems(self) -> tuple[Problem, ...]:
        return tuple(p for found in self.problems.values() for p in found)


@dataclass(frozen=True, slots=True)
class _Step:
    kind: Kind
    changes: tuple[Change, ...]
    problems: tuple[Problem, ...] | None  # the resource's problems, when they changed
    listed: bool = False


class KubeSource:
    """Follows every resource of `resources` through `api`; see `updates`."""

    def __init__(
        self,
        api: ApiClient,
        *,
        page_size: int = 500,
        watch_timeout: float = 300.0,
        backoff: Callable[[], Backoff] = Backoff,
        resources: Sequence[Resource] = RESOURCES,
        recheck: float = 30.0,
    ) -> None:
        """`recheck`: how often (seconds, plus up to half as much jitter) to look again for
        an optional resource that is not served."""
        self._api = api
        self._recheck = recheck
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._backoff = backoff
        self._resources = tuple(resources)
        self.stats = Stats()

    async def updates(self) -> AsyncGenerator[Update, None]:
        """The first update holds every resource's complete list; then one update per batch
        of events (events that arrive together are merged). Runs until closed; use it with
        `contextlib.aclosing` so the watches end with the loop."""
        queue: asyncio.Queue[_Step | Exception] = asyncio.Queue()
        tasks = [asyncio.create_task(self._follow(r, queue)) for r in self._resources]
        problems: dict[Kind, tuple[Problem, ...]] = {r.kind: () for r in self._resources}
        try:
            pending = {r.kind for r in self._resources}
            first: list[_Step] = []
            while pending:
                step = await _next(queue)
                first.append(step)
                if step.listed:
                    pending.discard(step.kind)
            yield _merge(first, problems, initial=True)
            while True:
                steps = [await _next(queue)]
                while not queue.empty():
                    steps.append(await _next(queue))
                yield _merge(steps, problems, initial=False)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, resource: Resource, queue: asyncio.Queue[_Step | Exception]) -> None:
        try:
            await self._reflect(resource, queue)
        except Exception as exc:  # a bug, not the API: end the stream with it, never go silent
            queue.put_nowait(exc)

    async def _reflect(self, resource: Resource, queue: asyncio.Queue[_Step | Exception]) -> None:
        held = _Held()
        backoff = self._backoff()
        kind = resource.kind
        absent = False
        while True:
            try:
                if held.version is None:
                    queue.put_nowait(await self._list(resource, held))
                    backoff.reset()
                    if absent:
                        log.info("%s: %s is served now; following it", kind, resource.path)
                        absent = False
                started = time.monotonic()
                events = await self._watch(resource, held, queue)
                if events or time.monotonic() - started > 1.0:
                    backoff.reset()
                else:  # a watch the server ends at once, again and again: do not spin
                    await asyncio.sleep(backoff.next_delay())
            except _Gone as exc:
                log.info("%s: %s; listing again", kind, exc)
                if not held.progressed:  # Gone right after a list: something is off, slow down
                    await asyncio.sleep(backoff.next_delay())
                held.version = None
            except (aiohttp.ClientError, TimeoutError, _Failed) as exc:
                if isinstance(exc, _Missing) and resource.optional:
                    if not absent:  # once per absence: the log line, and its (empty) view
                        log.info(
                            "%s: %s is not served (%s); empty until it is, looking again "
                            "every %.0f s",
                            kind,
                            resource.path,
                            exc,
                            self._recheck,
                        )
                        queue.put_nowait(_absent(kind, held))
                        absent = True
                    await asyncio.sleep(self._recheck * random.uniform(1.0, 1.5))
                    continue
                self.stats.errors[kind] += 1
                held.progressed = True
                delay = backoff.next_delay()
                log.warning(
                    "%s: %s; retrying in %.1f s", kind, str(exc) or type(exc).__name__, delay
                )
                await asyncio.sleep(delay)

    async def _list(self, resource: Resource, held: _Held) -> _Step:
        """All objects of the resource, page by page, as the changes from what is held."""
        records: dict[str, Record] = {}
        problems: dict[str, tuple[Problem, ...]] = {}
        token: str | None = None
        while True:
            query = [("limit", str(self._page_size))]
            if token:
                query.append(("continue", token))
            async with await self._get(resource.path, query, None) as response:
                body = _json(await response.read())
            self.stats.pages[resource.kind] += 1
            items = body.get("items") or []
            if not isinstance(items, list):
                raise _Failed(f"{resource.path}: `items` is not a list")
            for raw in items:
                key, record, found = project(resource.kind, raw)
                if record is not None:
                    records[key] = record
                if found:
                    problems[key] = found
            meta = _metadata(body)
            token = meta.get("continue") or None
            if token is None:
                break
        self.stats.lists[resource.kind] += 1
        changes = differences(resource.kind, held.records, records)
        changed = problems != held.problems
        held.records, held.problems = records, problems
        held.version = str(meta.get("resourceVersion") or "") or None
        held.progressed = False
        if held.version is None:
            raise _Failed(f"{resource.path}: the list has no resourceVersion")
        return _Step(
            resource.kind,
            tuple(changes),
            held.all_problems() if changed else None,
            listed=True,
        )

    async def _watch(
        self, resource: Resource, held: _Held, queue: asyncio.Queue[_Step | Exception]
    ) -> int:
        """Follow the watch until the server ends it; returns the number of events."""
        timeout = int(self._watch_timeout * random.uniform(1.0, 2.0))
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", held.version or ""),
            ("timeoutSeconds", str(timeout)),
        ]
        # The server ends the watch after `timeout`; a connection that goes quiet for longer
        # is dead (the server went away without closing it).
        limits = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout + 30)
        self.stats.watches[resource.kind] += 1
        events = 0
        async with await self._get(resource.path, query, limits) as response:
            async for line in response.content:
                if not line.strip():
                    continue
                step = self._event(resource.kind, held, _json(line))
                events += 1
                if step is not None:
                    queue.put_nowait(step)
        return events

    def _event(self, kind: Kind, held: _Held, event: dict[str, Any]) -> _Step | None:
        what, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise _Failed(f"a {kind} watch event without an object")
        if what == "ERROR":
            message = f"{obj.get('reason', 'error')}: {obj.get('message', '')}"
            if obj.get("code") == 410:
                raise _Gone(message)
            raise _Failed(f"watch: {obj.get('code')} {message}")
        self.stats.events[kind] += 1
        held.progressed = True
        version = _metadata(obj).get("resourceVersion")
        if what == "BOOKMARK":
            self.stats.bookmarks[kind] += 1
            held.version = str(version) if version else held.version
            return None
        found: tuple[Problem, ...] = ()
        if what == "DELETED":
            key, record = _key(kind, obj), None
        else:
            key, record, found = project(kind, obj)
        held.version = str(version) if version else held.version
        old = held.records.pop(key, None) if record is None else held.records.get(key)
        changes: tuple[Change, ...] = ()
        if record is None and old is not None:
            changes = (Change.delete(kind, key),)
        elif record is not None and record != old:
            held.records[key] = record
            changes = (Change.upsert(record),)
        problems_changed = held.problems.get(key, ()) != found
        if found:
            held.problems[key] = found
        else:
            held.problems.pop(key, None)
        if not changes and not problems_changed:
            return None
        return _Step(kind, changes, held.all_problems() if problems_changed else None)

    async def _get(
        self, path: str, query: list[tuple[str, str]], timeout: aiohttp.ClientTimeout | None
    ) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self._api.call_api(
            path,
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout or aiohttp.ClientTimeout(total=60, sock_connect=10),
        )
        if response.status == 200:
            return response
        async with response:
            body = await response.read()
        try:
            status = json.loads(body)
            message = f"{status.get('reason', '')}: {status.get('message', '')}"
        except (ValueError, AttributeError):
            message = body[:200].decode("utf-8", "replace")
        if response.status == 410:
            raise _Gone(message)
        if response.status == 404:
            raise _Missing(f"{path}: HTTP 404 {message}")
        raise _Failed(f"{path}: HTTP {response.status} {message}")


def project(kind: Kind, raw: Any) -> tuple[str, Record | None, tuple[Problem, ...]]:
    """An API object as its key, its record (None when it is invalid) and its problems."""
    if not isinstance(raw, dict):
        raise _Failed(f"a {kind} that is not an object")
    state = ClusterState.validated(load_objects([{**raw, "kind": kind}]), fail_closed=True)
    found: list[Record]
    if kind == "Pod":
        found = list(state.pods)
    elif kind == "NetworkPolicy":
        found = list(state.policies)
    elif kind == "Namespace":
        found = list(state.namespaces.values())
    elif kind == "Node":
        found = list(state.nodes.values())
    else:
        found = list(state.cluster_policies)
    return _key(kind, raw), (found[0] if found else None), tuple(state.problems)


def _key(kind: Kind, obj: dict[str, Any]) -> str:
    """As `changes.key_of` has it for the object's record."""
    meta = _metadata(obj)
    name = str(meta.get("name") or "")
    if kind in ("Namespace", "Node"):
        return name
    if kind in CLUSTER_POLICY_KINDS:
        return f"{kind}/{name}"
    return f"{meta.get('namespace') or 'default'}/{name}"


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise _Failed(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise _Failed("not a JSON object")
    return value


def _absent(kind: Kind, held: _Held) -> _Step:
    """An optional resource the server does not serve: listed, and empty."""
    changes = tuple(Change.delete(kind, key) for key in held.records)
    had_problems = bool(held.problems)
    held.records, held.problems, held.version = {}, {}, None
    return _Step(kind, changes, () if had_problems else None, listed=True)


async def _next(queue: asyncio.Queue[_Step | Exception]) -> _Step:
    item = await queue.get()
    if isinstance(item, Exception):
        raise item
    return item


def _merge(
    steps: list[_Step], problems: dict[Kind, tuple[Problem, ...]], *, initial: bool
) -> Update:
    changed = initial
    for step in steps:
        if step.problems is not None and step.problems != problems[step.kind]:
            problems[step.kind] = step.problems
            changed = True
    return Update(
        changes=tuple(change for step in steps for change in step.changes),
        problems=tuple(p for found in problems.values() for p in found) if changed else None,
    )
