"""Building and removing a lab with iproute2: `ip netns`, `ip -n NS -batch -`, `sysctl`.

iproute2 rather than pyroute2: every step is a command a person can rerun by hand, and one
`ip -batch` process per namespace makes a 9-pod lab in well under a second. Safety rules,
enforced here in one place rather than trusted to callers:

- every namespace touched is named `nf-<lab>-...` (`_checked`); the root namespace is never
  configured: there is no `ip` command without `-n`, except `ip netns add/del`;
- veth pairs are created with both ends inside lab namespaces (`peer ... netns ...`);
- any failure or signal while building removes the whole lab (`up`), and `down` removes
  every `nf-<lab>-*` namespace whether or not a plan was recorded.

State lives in /run/netfence/lab/<name>/: `plan.json`, `listeners.json` (pid and ports per
namespace), `manifests/` (a snapshot of the manifests the lab runs, so `probe` compares
against exactly what was applied), the listeners' logs and, when agents enforce
(`agents`), their folder, `agents.json` and logs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from netfence.cluster.state import ClusterState
from netfence.lab import listeners
from netfence.lab.signals import held, interrupting
from netfence.lab.topology import (
    BRIDGE,
    POD_IFNAME,
    UNDERLAY_IFNAME,
    Address,
    LabError,
    LabPlan,
    NodePlan,
    PodPlan,
    Route,
    check_name,
    namespace_prefix,
)

STATE_ROOT = Path("/run/netfence/lab")
NETNS_DIR = Path("/run/netns")
PARALLEL = 8  # concurrent `ip` processes: they mostly wait on the kernel's rtnl lock

NODE_SYSCTLS = (
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
    # Bridged (same-node) pod traffic passes the inet hooks, where the dataplane filters.
    "net.bridge.bridge-nf-call-iptables=1",
    "net.bridge.bridge-nf-call-ip6tables=1",
    # A node routes pods with host addresses back out of br0: no redirects for that.
    "net.ipv4.conf.all.send_redirects=0",
    "net.ipv4.conf.default.send_redirects=0",
    # IPv4 settings are copied from the host's namespace on creation; pin what matters.
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv4.conf.all.arp_announce=2",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
)
OUTSIDE_SYSCTLS = (
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    # ARP from the underlay address, not from one of the external /32s on the same link.
    "net.ipv4.conf.all.arp_announce=2",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
)


class Dataplane(Protocol):
    """What the lab needs of `netfence.dataplane`; tests pass a fake."""

    def enforce(
        self, netns: str, node: NodePlan, state: ClusterState, previous: ClusterState | None
    ) -> str:
        """Make the node's table enforce `state` (`previous`: what it enforces now);
        returns how ("table", "elements", "unchanged")."""


class _RealDataplane:
    def enforce(
        self, netns: str, node: NodePlan, state: ClusterState, previous: ClusterState | None
    ) -> str:
        from netfence.dataplane.enforcer import Enforcer
        from netfence.dataplane.program import NodeProgram

        # The kernel holds what a fresh build of the previous state holds (an updated
        # program always equals a fresh build), so rebuilding it gives an element diff.
        cidrs = (node.cidr4, node.cidr6)
        program = NodeProgram(previous, node.name, cidrs) if previous is not None else None
        addresses = frozenset({str(node.underlay4), str(node.underlay6)})
        return Enforcer(netns, node.name, addresses, program, cidrs).apply(state).mode


def load_dataplane() -> Dataplane:
    """The nftables dataplane (imported late: the lab's planning works without it)."""
    return _RealDataplane()


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """One `lab` command at a time per lab: a probe during an update, or two updates,
    would see or make a half-built lab. The lock file sits beside the state directory,
    which `down` removes."""
    path = STATE_ROOT / f".{check_name(name)}.lock"
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LabError(f"another `netfence lab` command is working on lab {name}") from None
        yield


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("netfence lab needs root (it creates network namespaces): run it as root")
    if shutil.which("ip") is None:
        raise LabError("netfence lab needs the `ip` command (iproute2)")


def state_dir(name: str) -> Path:
    return STATE_ROOT / check_name(name)


# -- commands -----------------------------------------------------------------------------


def _checked(netns: str, prefix: str | None = None) -> str:
    """Refuse any namespace that is not a lab's (and, given `prefix`, not this lab's)."""
    if not netns.startswith(prefix or "nf-") or "/" in netns or netns in ("nf-", ""):
        raise LabError(f"refusing to touch namespace {netns!r}: not a netfence lab namespace")
    return netns


def _run(argv: Sequence[str], stdin: str | None = None, timeout: float = 60) -> str:
    with held():  # see `signals`: a signal must not land between fork and wait
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=timeout
        )
    if proc.returncode != 0:
        message = proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}"
        raise LabError(f"`{' '.join(argv[:6])} ...` failed: {message}")
    return proc.stdout


def ip_batch(netns: str, commands: Iterable[Sequence[str]]) -> None:
    """Run `ip` commands inside one namespace, in one process."""
    lines = "".join(" ".join(cmd) + "\n" for cmd in commands)
    if lines:
        _run(["ip", "-n", _checked(netns), "-batch", "-"], stdin=lines)


def set_sysctls(netns: str, settings: Sequence[str]) -> None:
    """Per-namespace sysctls (net.* are per namespace, bridge-nf-call-* too on this kernel)."""
    _run(["ip", "netns", "exec", _checked(netns), "sysctl", "-q", "-w", *settings])


def lab_namespaces(name: str) -> list[str]:
    """Every existing namespace of the lab, found by name: what `down` must remove."""
    prefix = namespace_prefix(name)
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def _parallel(fn: Callable[[str], None], items: Iterable[str]) -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


def _addr(address: Address) -> list[str]:
    return ["address", "add", *address.args()]


def _route(route: Route, verb: str = "add") -> list[str]:
    dst = route.dst
    if dst == "default":  # spelled out: batch lines take no -4/-6 to tell the family
        dst = "0.0.0.0/0" if route.family == 4 else "::/0"
    return ["route", verb, dst, *route.args()[1:]]


def _mac(*octets: int) -> str:
    """A fixed, locally administered MAC: a bridge keeps it as ports come and go, so pods'
    neighbour entries for their gateway stay valid when `lab apply` adds pods."""
    return ":".join(f"{o:02x}" for o in (0x02, 0x6E, 0x66, *octets))


# -- building -----------------------------------------------------------------------------


def _create_namespaces(plan: LabPlan, names: Iterable[str], created: list[str]) -> None:
    for netns in names:
        _run(["ip", "netns", "add", _checked(netns, plan.prefix)])
        created.append(netns)


def _underlay_commands(plan: LabPlan, nodes: Sequence[NodePlan]) -> list[list[str]]:
    cmds = [
        ["link", "set", "lo", "up"],
        ["link", "add", BRIDGE, "address", _mac(0xFF, 0, 1), "type", "bridge"],
        ["link", "set", BRIDGE, "up"],
    ]
    ports = [(node.name, node.netns) for node in nodes] + [("out", plan.outside.netns)]
    for port, peer_netns in ports:
        cmds += [
            [
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                UNDERLAY_IFNAME,
                "netns",
                _checked(peer_netns, plan.prefix),
            ],
            ["link", "set", port, "master", BRIDGE],
            ["link", "set", port, "up"],
        ]
    return cmds


def _node_commands(plan: LabPlan, node: NodePlan) -> list[list[str]]:
    cmds = [
        ["link", "set", "lo", "up"],
        ["link", "add", BRIDGE, "address", _mac(node.index, 0, 1), "type", "bridge"],
        ["link", "set", BRIDGE, "up"],
        ["link", "set", UNDERLAY_IFNAME, "up"],
    ]
    cmds += [_addr(a) for a in plan.node_addresses(node)]
    cmds += [_route(r) for r in plan.node_routes(node)]
    return cmds


def _pod_link_commands(plan: LabPlan, pod: PodPlan) -> list[list[str]]:
    """Run in the node: the veth is born with its pod end already in the pod namespace."""
    return [
        [
            "link",
            "add",
            pod.host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            POD_IFNAME,
            "netns",
            _checked(pod.netns, plan.prefix),
        ],
        ["link", "set", pod.host_ifname, "master", BRIDGE],
        ["link", "set", pod.host_ifname, "up"],
    ]


def _pod_commands(plan: LabPlan, pod: PodPlan) -> list[list[str]]:
    cmds = [["link", "set", "lo", "up"], ["link", "set", POD_IFNAME, "up"]]
    cmds += [_addr(a) for a in plan.pod_addresses(pod)]
    cmds += [_route(r) for r in plan.pod_routes(pod)]
    return cmds


def _outside_commands(plan: LabPlan) -> list[list[str]]:
    cmds = [["link", "set", "lo", "up"], ["link", "set", UNDERLAY_IFNAME, "up"]]
    cmds += [_addr(a) for a in plan.outside_addresses()]
    cmds += [_route(r) for r in plan.outside_routes()]
    return cmds


def _add_pods(plan: LabPlan, pods: Sequence[PodPlan], created: list[str]) -> None:
    """Namespaces, veths and addresses for pods whose node already exists."""
    own = [p for p in pods if not p.host_network]
    _create_namespaces(plan, [p.netns for p in own], created)
    for node in plan.nodes:
        links = [cmd for p in own if p.node == node.name for cmd in _pod_link_commands(plan, p)]
        ip_batch(node.netns, links)
    by_netns = {p.netns: p for p in own}
    _parallel(lambda ns: ip_batch(ns, _pod_commands(plan, by_netns[ns])), by_netns)


def build(plan: LabPlan, created: list[str]) -> None:
    """Create every namespace, link, address and route of the plan.

    `created` receives each namespace as it is made, so a caller can undo a partial build.
    """
    infra = [plan.underlay_netns, plan.outside.netns, *(n.netns for n in plan.nodes)]
    _create_namespaces(plan, infra, created)
    set_sysctls(plan.outside.netns, OUTSIDE_SYSCTLS)
    _parallel(lambda ns: set_sysctls(ns, NODE_SYSCTLS), [n.netns for n in plan.nodes])
    ip_batch(plan.underlay_netns, _underlay_commands(plan, plan.nodes))
    _parallel(
        lambda ns: ip_batch(ns, _node_commands(plan, next(n for n in plan.nodes if n.netns == ns))),
        [n.netns for n in plan.nodes],
    )
    ip_batch(plan.outside.netns, _outside_commands(plan))
    _add_pods(plan, plan.pods, created)


# -- state directory ----------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Write by renaming a finished file into place: a reader (another `lab` command, an
    agent's folder watcher) never sees half a file. The temporary name ends in `.tmp`,
    which no manifest reader picks up."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=1).encode())


def read_json(path: Path) -> dict[str, Any]:
    """A state file's object; empty when it is missing or not one (never half written)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def save_plan(plan: LabPlan) -> None:
    write_json(state_dir(plan.name) / "plan.json", plan.to_dict())


def load_plan(name: str) -> LabPlan:
    path = state_dir(name) / "plan.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no lab named {name!r} is up (no {path}): run `netfence lab up`") from None
    return LabPlan.from_dict(data)


def snapshot_manifests(name: str, paths: Sequence[Path]) -> Path:
    """Copy the manifests into the state directory and return the copy's folder."""
    target = state_dir(name) / "manifests"
    staging = Path(tempfile.mkdtemp(dir=state_dir(name), prefix=".manifests."))
    for i, path in enumerate(paths):
        dest = staging / str(i)
        if path.is_dir():
            shutil.copytree(path, dest)
        else:
            dest.mkdir()
            shutil.copy2(path, dest / path.name)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def manifests_dir(name: str) -> Path:
    return state_dir(name) / "manifests"


# -- the lifecycle ------------------------------------------------------------------------


def up(
    plan: LabPlan,
    state: ClusterState,
    manifests: Sequence[Path],
    *,
    dataplane: Dataplane | None,
    timings: dict[str, float] | None = None,
) -> None:
    """Build the lab, start its listeners and load its rulesets; on any failure or
    interruption remove everything it made. An existing lab of that name is replaced.

    `timings` receives the seconds spent building, starting listeners, loading rulesets."""
    require_root()
    timings = timings if timings is not None else {}
    down(plan.name)
    created: list[str] = []
    t0 = time.monotonic()
    with interrupting():
        try:
            state_dir(plan.name).mkdir(parents=True, exist_ok=True)
            snapshot_manifests(plan.name, manifests)
            save_plan(plan)
            build(plan, created)
            timings["build"] = time.monotonic() - t0
            t1 = time.monotonic()
            listeners.start_all(plan, state_dir(plan.name), plan.listener_ports())
            timings["listeners"] = time.monotonic() - t1
            t2 = time.monotonic()
            if dataplane is not None:
                apply_policies(plan, state, dataplane)
            timings["rulesets"] = time.monotonic() - t2
        except BaseException:
            with held():  # a second Ctrl-C waits until the cleanup is done
                down(plan.name)
            raise


def apply_policies(
    plan: LabPlan,
    state: ClusterState,
    dataplane: Dataplane,
    previous: tuple[LabPlan, ClusterState] | None = None,
) -> dict[str, str]:
    """Make every node enforce the state as the lab runs it; `previous`: the plan and
    state the nodes enforce now (their tables then change by elements where they can).
    Returns how each node's table changed."""
    lab_state = plan.cluster_state(state)
    before = previous[0].cluster_state(previous[1]) if previous is not None else None
    return {
        node.name: dataplane.enforce(_checked(node.netns, plan.prefix), node, lab_state, before)
        for node in plan.nodes
    }


def update(
    old: LabPlan,
    new: LabPlan,
    state: ClusterState,
    manifests: Sequence[Path],
    *,
    dataplane: Dataplane | None,
    old_state: ClusterState | None = None,
) -> dict[str, str]:
    """Bring a running lab from `old` to `new` (`lab apply`): remove pods that went away,
    add new ones, fix host routes and outside addresses, restart listeners whose ports
    changed, then update every node's ruleset (by elements where only pods changed and
    `old_state`, what the lab enforces now, is given). Nodes never change. Returns how
    each node's table changed (nothing when not enforcing).

    If the network changes fail half-way, namespaces this call created are removed and
    the error says to rebuild with `lab up` (the recorded plan is the old one until the
    network matches the new). A ruleset that fails to load leaves the previous one in
    force (nft applies atomically) and propagates as is.
    """
    require_root()
    with interrupting():
        created: list[str] = []  # (cleanup lists namespaces by name instead)
        try:
            gone = sorted(set(old.namespaces()) - set(new.namespaces()))
            listeners.stop(new.name, gone)
            for netns in gone:
                _delete_namespace(_checked(netns, new.prefix))
            existing = set(old.namespaces())
            added = [p for p in new.pods if not p.host_network and p.netns not in existing]
            _add_pods(new, added, created)
            for node_old, node_new in zip(old.nodes, new.nodes, strict=True):
                _sync_routes(node_new.netns, old.node_routes(node_old), new.node_routes(node_new))
            _sync_routes(new.outside.netns, old.outside_routes(), new.outside_routes())
            _forget_neighbours(old, new)
            _sync_addresses(new.outside.netns, old.outside_addresses(), new.outside_addresses())
            snapshot_manifests(new.name, manifests)
            save_plan(new)
            listeners.sync(new, state_dir(new.name), new.listener_ports())
        except BaseException as exc:
            if load_plan(new.name) != new:  # the namespaces made for the new plan go
                with held():
                    made = set(lab_namespaces(new.name)) - set(old.namespaces())
                    listeners.stop(new.name, sorted(made))
                    for netns in made:
                        _delete_namespace(netns)
            if isinstance(exc, Exception):
                raise LabError(
                    f"updating lab {new.name} failed ({exc}); it may be half updated: "
                    "rebuild it with `netfence lab up`"
                ) from exc
            raise
        if dataplane is None:
            return {}
        previous = (old, old_state) if old_state is not None else None
        return apply_policies(new, state, dataplane, previous)


def _sync_routes(netns: str, old: Sequence[Route], new: Sequence[Route]) -> None:
    cmds = [_route(r, "del") for r in old if r not in new]
    cmds += [_route(r, "replace") for r in new if r not in old]
    ip_batch(netns, cmds)


def _forget_neighbours(old: LabPlan, new: LabPlan) -> None:
    """Flush cached neighbour entries of addresses that changed hands (a removed pod's
    address now used by another pod): the cached MAC is the old pod's."""
    before = {ip: p.key for p in old.pods if not p.host_network for ip in (p.ip4, p.ip6)}
    moved = [
        ip
        for p in new.pods
        if not p.host_network
        for ip in (p.ip4, p.ip6)
        if before.get(ip, p.key) != p.key
    ]
    for netns in [n.netns for n in new.nodes] if moved else []:
        ip_batch(netns, [["neigh", "flush", "to", str(ip)] for ip in moved])


def _sync_addresses(netns: str, old: Sequence[Address], new: Sequence[Address]) -> None:
    cmds = [["address", "del", f"{a.ip}/{a.prefix}", "dev", a.dev] for a in old if a not in new]
    cmds += [_addr(a) for a in new if a not in old]
    ip_batch(netns, cmds)


@contextlib.contextmanager
def scratch_namespace(plan: LabPlan, suffix: str) -> Iterator[str]:
    """An empty namespace of the lab for a moment's work (`down` would remove it too)."""
    netns = _checked(f"{plan.prefix}{suffix}", plan.prefix)
    if (NETNS_DIR / netns).exists():  # left by an interrupted command
        _delete_namespace(netns)
    _run(["ip", "netns", "add", netns])
    try:
        yield netns
    finally:
        with held():
            _delete_namespace(netns)


def _delete_namespace(netns: str) -> None:
    with held():
        proc = subprocess.run(
            ["ip", "netns", "del", netns], capture_output=True, text=True, check=False
        )
    if proc.returncode != 0 and (NETNS_DIR / netns).exists():
        raise LabError(f"cannot delete namespace {netns}: {proc.stderr.strip()}")


def down(name: str) -> list[str]:
    """Remove the lab: its agents and listeners, every `nf-<name>-*` namespace, its state
    directory.

    Works from names alone (no plan needed), so it also cleans up after a crash. Returns
    the namespaces removed.
    """
    require_root()
    from netfence.lab import agents  # (it builds on this module)

    prefix = namespace_prefix(name)
    agents.stop(name)  # first: a process keeps a deleted namespace alive
    found = lab_namespaces(name)
    listeners.stop(name, found)
    errors = []
    for netns in found:
        try:
            _delete_namespace(_checked(netns, prefix))
        except LabError as exc:
            errors.append(str(exc))
    shutil.rmtree(state_dir(name), ignore_errors=True)
    if errors:
        raise LabError("; ".join(errors))
    return found
