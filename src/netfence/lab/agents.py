"""One real `netfence agent` per lab node, following a folder of the manifests the lab runs.

The lab enforces the way a cluster does: each node namespace runs `netfence agent
--manifests DIR` (issue 4), and `lab apply` only rewrites DIR. DIR (`agent-manifests/` in the
lab's state directory) holds the manifests *as the lab runs them*, because the user's carry
other addresses than the lab gives its pods:

- `lab/pods.yaml`: every pod of the lab (workload replicas expanded) as a Pod with the lab's
  `status.podIPs`, `spec.nodeName` and `status.hostIP(s)` (its node's underlay addresses);
- `lab/nodes.yaml`: the lab's nodes, labelled like a declared Node of the same name, with
  their underlay addresses as InternalIPs (what `LabPlan.cluster_state` says);
- `sources/<i>/...`: every user file with its Pods, workloads and Nodes taken out and every
  other document left as it is, invalid ones included, so the agent itself rejects a broken
  policy and fails closed for it exactly as it would on the user's folder. A file with
  nothing to take out is copied byte for byte.

Files are replaced by renaming finished files into place, and only files whose content
changed are touched: the agent's watcher never reads half a file, and one `lab apply` is a
burst of renames well inside the watcher's debounce, so it becomes one reload.

Each agent runs *inside* its node's namespace (`ip netns exec`, which execs it), not with
`--netns` from the host: enforcement, the conntrack sweep and drift checks then need no
namespace switching, the process dies with nothing but its node, and its /metrics, /healthz
and /readyz listen on the node namespace's loopback only (the host's namespace gets no
socket at all). The port is the first from 9990 that no pod of the lab declares, so a
hostNetwork pod's listener in the node namespace never collides with it.

`lab up` and `lab apply` wait until every node's table equals what it must be: the
node's program compiled in-process from `LabPlan.cluster_state`, loaded into a scratch
namespace `nf-<lab>-ref` and listed there, compared with the node's listing (set
elements sorted, counter values dropped). That checks the folder, the agent and the
kernel together, not just that an agent says it is ready.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from netfence.cluster.state import ClusterState, Pod
from netfence.dataplane import conntrack
from netfence.dataplane.apply import ApplyError, apply_ruleset, list_table, normalized
from netfence.dataplane.compile import render_table
from netfence.dataplane.program import NodeProgram
from netfence.k8s.loader import MANIFEST_SUFFIXES, manifest_files
from netfence.k8s.models import WORKLOAD_KINDS
from netfence.lab import netns
from netfence.lab.signals import held, interrupting
from netfence.lab.topology import LabError, LabPlan, NodePlan

FOLDER = "agent-manifests"
FIRST_PORT = 9990
READY_TIMEOUT = 30.0  # seconds for every agent to enforce (start-up included)
STOP_TIMEOUT = 5.0
POLL = 0.02
MODE_TIMEOUT = 2.0  # for a log line that follows a load the tables show already
LAB_KINDS = frozenset({"Pod", "Node", *WORKLOAD_KINDS})  # written by the lab, not copied

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def folder(name: str) -> Path:
    return netns.state_dir(name) / FOLDER


def _log(name: str, node: NodePlan) -> Path:
    return netns.state_dir(name) / "logs" / f"agent-{node.name}.log"


# -- the folder ---------------------------------------------------------------------------


def lab_files(plan: LabPlan, state: ClusterState, paths: Sequence[Path]) -> dict[str, bytes]:
    """The folder's files (relative path -> content) for `state` loaded from `paths`."""
    files: dict[str, bytes] = {}
    for i, path in enumerate(paths):
        for file in manifest_files([path])[0]:
            rel = file.relative_to(path) if path.is_dir() else Path(file.name)
            if rel.suffix.lower() not in MANIFEST_SUFFIXES:  # a file named on the command line
                rel = rel.with_name(rel.name + ".yaml")
            content = _without_lab_objects(file)
            if content is not None:
                files[f"sources/{i}/{rel.as_posix()}"] = content
    lab_state = plan.cluster_state(state)
    nodes = [_node_doc(lab_state, node) for node in plan.nodes]
    files["lab/nodes.yaml"] = _dump(nodes)
    by_name = {node.name: node for node in plan.nodes}
    pods = [_pod_doc(pod, by_name[pod.node or ""]) for pod in lab_state.pods]
    files["lab/pods.yaml"] = _dump(pods)
    return files


def _dump(documents: Sequence[object]) -> bytes:
    text: str = yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return text.encode()


def _without_lab_objects(file: Path) -> bytes | None:
    """The file without its Pods, workloads and Nodes; None when nothing else is left.

    What cannot be read is copied as is: the agent then reports it as `check` did."""
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
        documents = _documents(text, json_first=file.suffix.lower() == ".json")
    except (UnicodeDecodeError, yaml.YAMLError):
        return raw
    kept = [_strip(doc) for doc in documents]
    if all(new is old for new, old in zip(kept, documents, strict=True)):
        return raw
    left = [doc for doc in kept if doc is not None]
    return _dump(left) if left else None


def _documents(text: str, json_first: bool) -> list[Any]:
    if json_first:  # as the loader reads them: JSON, else YAML
        with contextlib.suppress(ValueError):
            return [json.loads(text)]
    return list(yaml.load_all(text, Loader=_Loader))


def _strip(doc: Any, implied: str | None = None) -> Any:
    """`doc` itself when it holds no object the lab writes, a copy without them, or None
    when it is one; `List`s are filtered item by item (items may imply their kind)."""
    if not isinstance(doc, dict):
        return doc
    kind = doc.get("kind", implied)
    if not isinstance(kind, str):
        return doc
    if kind in LAB_KINDS:
        return None
    items = doc.get("items")
    if not kind.endswith("List") or not isinstance(items, list):
        return doc
    stripped = [_strip(item, kind[: -len("List")] or None) for item in items]
    if all(new is old for new, old in zip(stripped, items, strict=True)):
        return doc
    return {**doc, "items": [item for item in stripped if item is not None]}


def _node_doc(lab_state: ClusterState, node: NodePlan) -> dict[str, Any]:
    record = lab_state.nodes[node.name]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": dict(record.labels)},
        "status": {
            "addresses": [{"type": "InternalIP", "address": str(ip)} for ip in record.addresses]
        },
    }


def _pod_doc(pod: Pod, node: NodePlan) -> dict[str, Any]:
    """A Pod whose record (as the agent reads it) is the lab's: same labels, owner, ports in
    order, phase; the lab's addresses and node. Ports go into containers `c0`, `c1`... only
    as far as port names must be unique within a container."""
    metadata: dict[str, Any] = {
        "name": pod.name,
        "namespace": pod.namespace,
        "labels": dict(pod.labels),
    }
    if (pod.owner.kind, pod.owner.name) != ("Pod", pod.name):
        owner = {"kind": pod.owner.kind, "name": pod.owner.name, "controller": True}
        metadata["ownerReferences"] = [owner]
    containers: list[dict[str, Any]] = [{"name": "c0", "ports": []}]
    for port in pod.ports:
        names = {p.get("name") for p in containers[-1]["ports"]}
        if port.name is not None and port.name in names:
            containers.append({"name": f"c{len(containers)}", "ports": []})
        entry: dict[str, Any] = {"containerPort": port.port, "protocol": port.protocol}
        if port.name is not None:
            entry["name"] = port.name
        containers[-1]["ports"].append(entry)
    spec: dict[str, Any] = {"nodeName": node.name, "containers": containers}
    if pod.host_network:
        spec["hostNetwork"] = True
    hosts = [str(node.underlay4), str(node.underlay6)]
    status: dict[str, Any] = {
        "podIPs": [{"ip": str(ip)} for ip in pod.ips],
        "hostIP": hosts[0],
        "hostIPs": [{"ip": ip} for ip in hosts],
    }
    if pod.phase is not None:
        status["phase"] = pod.phase
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def write_folder(name: str, files: Mapping[str, bytes]) -> list[str]:
    """Make the folder hold exactly `files`, each replaced by a rename, only where its
    content changed; returns the paths written or removed."""
    root = folder(name)
    existing = (
        {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        if root.exists()
        else set()
    )
    touched = []
    for rel, content in files.items():
        target = root / rel
        if rel in existing and target.read_bytes() == content:
            continue
        netns.write_atomic(target, content)
        touched.append(rel)
    for rel in sorted(existing - set(files)):
        (root / rel).unlink(missing_ok=True)
        touched.append(rel)
    return touched


# -- the processes ------------------------------------------------------------------------


def _registry_path(name: str) -> Path:
    return netns.state_dir(name) / "agents.json"


def read_registry(name: str) -> dict[str, Any]:
    """node -> {pid, port, netns} of the agents started."""
    return netns.read_json(_registry_path(name))


def _marker(name: str) -> bytes:
    """What only this lab's agents have on their command line: an argument naming a file of
    the lab's state directory (the folder they follow, or the kubeconfig given to them)."""
    return b"\0" + os.fsencode(netns.state_dir(name)) + b"/"


def _is_agent(pid: int, name: str) -> bool:
    """Alive, not a zombie, and an agent of this lab (a reused pid is someone else's)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if b"netfence.cli\0agent\0" not in cmdline or _marker(name) not in cmdline:
        return False
    return _alive(pid)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie. (Its command line may read empty for a
    moment while `ip netns exec` execs the agent: only `_is_agent` looks at it.)"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return pid > 0 and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def agent_pids(name: str) -> list[int]:
    """Every running agent of the lab, recorded or not (a crash may have lost the record)."""
    return sorted(int(e) for e in os.listdir("/proc") if e.isdigit() and _is_agent(int(e), name))


def port_for(plan: LabPlan) -> int:
    """The first port from FIRST_PORT that no pod of the lab declares (any protocol)."""
    used = {port for pod in plan.pods for _, port in pod.ports}
    return next(p for p in range(FIRST_PORT, 65536) if p not in used)


def command(node: NodePlan, source: Sequence[str], listen: str) -> list[str]:
    """`netfence agent` for `node` (its addresses and pod ranges) following `source`: its
    source options, e.g. `--manifests DIR`, or `--kubeconfig FILE --netns NS` to run in the
    host's namespace. What `source` names must lie in the lab's state directory: that is
    how `agent_pids` and `stop` tell the lab's agents (see `_marker`)."""
    return [
        sys.executable,
        "-m",
        "netfence.cli",
        "agent",
        "--node-name",
        node.name,
        *source,
        "--listen",
        listen,
        "--node-address",
        str(node.underlay4),
        "--node-address",
        str(node.underlay6),
        "--pod-cidr",
        str(node.cidr4),
        "--pod-cidr",
        str(node.cidr6),
    ]


def _argv(plan: LabPlan, node: NodePlan, port: int) -> list[str]:
    source = ["--manifests", str(folder(plan.name))]
    return ["ip", "netns", "exec", node.netns, *command(node, source, f"127.0.0.1:{port}")]


def make_room(plan: LabPlan) -> None:
    """Stop the agents listening on a port that a pod of `plan` declares (`lab apply` calls
    this before the listeners start; `sync` restarts them elsewhere). A stopped agent
    leaves its table in force: nothing opens meanwhile."""
    declared = {port for pod in plan.pods for _, port in pod.ports}
    registry = read_registry(plan.name)
    clashing = [node for node, e in registry.items() if int(e.get("port", 0)) in declared]
    if clashing:
        stop(plan.name, clashing)


def sync(plan: LabPlan) -> list[str]:
    """Start the agent of every node that has none running (on a port no pod of the plan
    uses; one whose port a pod now declares is restarted first). Returns the nodes
    started."""
    name = plan.name
    make_room(plan)
    registry = read_registry(name)
    port = port_for(plan)
    started = []
    for node in plan.nodes:
        entry = registry.get(node.name)
        if entry is not None and _is_agent(int(entry.get("pid", 0)), name):
            continue
        start(name, node, _argv(plan, node, port), port)
        started.append(node.name)
    return started


def start(name: str, node: NodePlan, argv: Sequence[str], port: int = 0) -> int:
    """Start `argv` (see `command`) as the agent of `node` in lab `name` and record it
    (`port`: where it listens in the node's namespace, 0 for nowhere). Detached: its own
    session, stdin closed, output to `logs/agent-<node>.log`. Returns its pid."""
    log = _log(name, node)
    log.parent.mkdir(parents=True, exist_ok=True)
    # Not under `held()`: the child would inherit the blocked signals, SIGTERM among
    # them. An interruption before the record is written loses no agent: `stop` also
    # finds them by command line.
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        )
        registry = read_registry(name)
        registry[node.name] = {"pid": proc.pid, "port": port, "netns": node.netns}
        netns.write_json(_registry_path(name), registry)
    return proc.pid


def stop(name: str, nodes: Iterable[str] | None = None) -> list[int]:
    """Stop the lab's agents (all, or those of `nodes`): SIGTERM, which leaves their
    tables in force, then SIGKILL after STOP_TIMEOUT; our own children are reaped."""
    registry = read_registry(name)
    if nodes is None:
        pids = set(agent_pids(name))
        chosen = set(registry)
    else:
        chosen = set(nodes)
        pids = {int(e.get("pid", 0)) for n, e in registry.items() if n in chosen}
        pids = {pid for pid in pids if _is_agent(pid, name)}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    alive = set(pids)
    while alive:
        _reap(alive)
        alive = {pid for pid in alive if _is_agent(pid, name)}
        if alive and time.monotonic() > deadline:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        elif alive:
            time.sleep(0.01)
    _reap(pids)
    if registry and netns.state_dir(name).exists():
        kept = {n: e for n, e in registry.items() if n not in chosen}
        netns.write_json(_registry_path(name), kept)
    return sorted(pids)


def _reap(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


# -- waiting for enforcement --------------------------------------------------------------


def table(netns_name: str) -> str | None:
    """The node's table, normalized; None when there is none."""
    try:
        return normalized(list_table(netns_name))
    except ApplyError:
        return None


def programs(plan: LabPlan, state: ClusterState) -> dict[str, NodeProgram]:
    """Per node, the program its agent must enforce (compiled here, in-process)."""
    lab_state = plan.cluster_state(state)
    return {n.name: NodeProgram(lab_state, n.name, (n.cidr4, n.cidr6)) for n in plan.nodes}


def expected_tables(plan: LabPlan, state: ClusterState) -> dict[str, str]:
    """Per node, the normalized listing of the table it must hold (see the module doc)."""
    out = {}
    with netns.scratch_namespace(plan, "ref") as scratch:
        for node, program in programs(plan, state).items():
            apply_ruleset(scratch, render_table(program))
            out[node] = normalized(list_table(scratch))
    return out


def _swept(node: NodePlan, program: NodeProgram) -> bool:
    """No tracked flow of the node is one its table now refuses: the agent cut them after
    loading (without the `conntrack` tool it cannot, and neither can this check)."""
    allowed = conntrack.table_allows(program, frozenset({str(node.underlay4), str(node.underlay6)}))
    try:
        return all(allowed(flow) for flow in conntrack.flows(node.netns))
    except (OSError, subprocess.SubprocessError):
        return True


def wait_enforced(
    plan: LabPlan,
    expected: Mapping[str, str],
    swept: Mapping[str, NodeProgram] | None = None,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Wait until every node's table is `expected` (see `expected_tables`) and, given the
    nodes' `programs`, no tracked flow is one they refuse.

    Fails (naming the node and its agent's log) when an agent exits or `timeout` passes."""
    start = time.monotonic()
    pending = list(plan.nodes)
    while pending:
        registry = read_registry(plan.name)
        for node in list(pending):
            if table(node.netns) == expected[node.name] and (
                swept is None or _swept(node, swept[node.name])
            ):
                pending.remove(node)
                continue
            pid = int(registry.get(node.name, {}).get("pid", 0))
            if not _alive(pid):  # (started moments ago: the pid is still ours)
                _reap([pid])
                raise LabError(
                    f"node {node.name}: its agent is not running: {_last_line(plan.name, node)}"
                )
        if pending and time.monotonic() - start > timeout:
            node = pending[0]
            raise LabError(
                f"node {node.name}: its agent has not enforced the lab's policies after "
                f"{timeout:.0f} s: {_last_line(plan.name, node)}"
            )
        if pending:
            time.sleep(POLL)


def _last_line(name: str, node: NodePlan) -> str:
    log = _log(name, node)
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return f"see {log}" + (f" (last: {lines[-1][:300]})" if lines else "")


def enforce(plan: LabPlan, state: ClusterState, paths: Sequence[Path]) -> dict[str, str]:
    """Write the folder, start missing agents, wait until the tables are right. Returns how
    each node's table changed, as its agent logged it ("table", "elements", "unchanged")."""
    before = {node.name: table(node.netns) for node in plan.nodes}
    logged = {node.name: _size(_log(plan.name, node)) for node in plan.nodes}
    expected = expected_tables(plan, state)
    write_folder(plan.name, lab_files(plan, state, paths))
    sync(plan)
    wait_enforced(plan, expected, programs(plan, state))
    return {
        node.name: _mode(
            plan.name, node, logged[node.name], before[node.name] != expected[node.name]
        )
        for node in plan.nodes
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mode(name: str, node: NodePlan, offset: int, changed: bool) -> str:
    """How the node's agent changed its table since its log was `offset` bytes long. A
    table that changed was logged (the line follows the load by a moment: wait for it);
    one that did not may still have been replaced by an equal one."""
    deadline = time.monotonic() + (MODE_TIMEOUT if changed else 0)
    while True:
        with open(_log(name, node), "rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
        modes = set()
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("msg") == "enforced":
                    modes.add(str(event.get("mode")))
        if modes or time.monotonic() >= deadline:
            return "table" if "table" in modes else "elements" if modes else "unchanged"
        time.sleep(POLL)


def up(plan: LabPlan, state: ClusterState, paths: Sequence[Path]) -> dict[str, str]:
    """`enforce` on a lab just built (`lab up`); on any failure or interruption the whole
    lab is removed, as `netns.up` does for its own steps."""
    with interrupting():
        try:
            return enforce(plan, state, paths)
        except BaseException:
            with held():  # a second Ctrl-C waits until the cleanup is done
                netns.down(plan.name)
            raise
