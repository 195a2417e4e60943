"""The decision log: new connections the table refuses (or, auditing, would refuse), as JSON.

How: when the log is on, every refusing rule of the table (`compile.py`: the end of the four
side chains, and the unknown-pod checks) is preceded by `limit rate R/second burst B packets
log group G prefix "nf:<action>:<where>"`, which copies the packet's first bytes to the
NFLOG group (`nflog.py`), and the agent turns each copy into one JSON line naming source
and destination (pod or address), protocol, port and the isolating policies. Only new
connections reach those rules (`ct state established,related` is accepted first), so a
line is a connection attempt, not a packet of a flow (a retried SYN is a new attempt).

Why the limit is in the kernel: a flood of refused connections must cost the node the
rule's token bucket, not a netlink message and a JSON line each. Every refusing rule has
its own bucket, so the log holds at most `rate` lines per second per rule (six rules:
egress and ingress per family, unknown source, unknown destination) after a burst; the
limit gates the log statement only, the refusal that follows is unconditional. Should
the reader still fall behind, the kernel drops what does not fit in the socket's buffer
and the reader counts it (`NflogSocket.lost`): a slow log never slows enforcement.

Prefixes are constants generated here from the mode and the rule's place, never user text;
the reader decodes only those, so another NFLOG user of the group cannot forge a decision.

Audit mode (Cilium's "policy audit mode"): the refusing rules log and then `return` instead
of dropping, so enforcement is off and every would-be drop is reported. Both sides are then
checked, so a connection that its source's egress and its destination's ingress would both
refuse gives two lines, each naming its side's policies. The unknown-pod gate is audited
too: it exists only so that a pod gets its policies from its first packet, and with
enforcement off it would just break new pods. `ct state invalid` stays a drop (conntrack
hygiene, not policy) and is not logged. The agent does not cut tracked flows either.

Resolution happens when a line is written, against the program the kernel enforces at that
moment (the agent's `Enforcer.program`): the row of the refusing side names the policies
isolating the pod (`RowKey.policies`), and an address names the pod that owns it there. The
address index is rebuilt when the program or its pod count changes, when a hit is no longer
true, and on a miss at most once a second (misses are common: external addresses), so only
a pod that got a reused address within the last second may appear as an address only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TextIO

from netfence.dataplane.nflog import LoggedPacket, NflogSocket
from netfence.dataplane.program import NodeProgram
from netfence.policy.engine import IPAddress
from netfence.policy.ir import Direction

Action = Literal["drop", "audit"]
Reason = Literal["policy", "unknown-pod"]
# "nf" in ASCII: away from the small group numbers other NFLOG users take (Calico: 1, 2)
DEFAULT_GROUP = 0x6E66
# the refusing rules: egress and ingress chains per family, the unknown-pod checks
WHERE: dict[str, tuple[Direction, Reason]] = {
    "egress4": ("egress", "policy"),
    "egress6": ("egress", "policy"),
    "ingress4": ("ingress", "policy"),
    "ingress6": ("ingress", "policy"),
    "unknown-src": ("egress", "unknown-pod"),
    "unknown-dst": ("ingress", "unknown-pod"),
}
_ACTIONS: tuple[Action, ...] = ("drop", "audit")
PREFIXES: dict[str, tuple[Action, Direction, Reason]] = {
    f"nf:{action}:{where}": (action, *WHERE[where]) for action in _ACTIONS for where in WHERE
}
REFRESH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class DecisionLog:
    """What the table reports of the new connections it refuses; see the module docstring.

    `audit`: accept and report instead of refusing. `rate`/`burst`: per refusing rule."""

    audit: bool = False
    group: int = DEFAULT_GROUP
    rate: int = 100
    burst: int = 200

    def __post_init__(self) -> None:
        if not 0 <= self.group <= 0xFFFF:
            raise ValueError(f"NFLOG group {self.group} is not in 0-65535")
        if self.rate < 1 or self.burst < 1:
            raise ValueError("the decision log's rate and burst must be at least 1")

    @property
    def action(self) -> Action:
        return "audit" if self.audit else "drop"

    def prefix(self, where: str) -> str:
        """The log prefix of a refusing rule (`where`: one of `WHERE`'s keys)."""
        if where not in WHERE:
            raise ValueError(f"no refusing rule is called {where!r}")
        return f"nf:{self.action}:{where}"


@dataclass(frozen=True, slots=True)
class Decision:
    """One logged decision, as the JSON line shows it."""

    time: float
    node: str
    action: Action
    direction: Direction
    reason: Reason
    family: int
    protocol: str
    src: dict[str, str]  # {"ip": ...} and, when a pod owns the address, {"pod": "ns/name"}
    dst: dict[str, str]
    port: int | None
    policies: tuple[str, ...]  # isolating the refusing side's pod (sorted)

    def as_dict(self) -> dict[str, object]:
        return {
            "time": round(self.time, 3),
            "node": self.node,
            "action": self.action,
            "direction": self.direction,
            "reason": self.reason,
            "family": self.family,
            "protocol": self.protocol,
            "src": self.src,
            "dst": self.dst,
            "port": self.port,
            "policies": list(self.policies),
        }


@dataclass
class _Index:
    program: NodeProgram | None = None
    pods: int = -1
    built: float = float("-inf")
    owner: dict[IPAddress, str] = field(default_factory=dict)


class Resolver:
    """Logged packets -> decisions, against the program the kernel enforces.

    `program` returns it (None while a table loads: the last one seen is used). It may be
    changed by another thread meanwhile: only single dict lookups and copies are made."""

    def __init__(self, node: str, program: Callable[[], NodeProgram | None]) -> None:
        self.node = node
        self._program = program
        self._last: NodeProgram | None = None
        self._index = _Index()

    def decide(self, packet: LoggedPacket, now: float) -> Decision | None:
        """None for a packet whose prefix is not one of ours."""
        meaning = PREFIXES.get(packet.prefix)
        if meaning is None:
            return None
        action, direction, reason = meaning
        program = self._program() or self._last
        self._last = program
        policies: tuple[str, ...] = ()
        if program is not None and reason == "policy":
            own = packet.src if direction == "egress" else packet.dst
            row = program.sides[(packet.family, direction)].row_of.get(own)
            policies = tuple(sorted(row.policies)) if row is not None else ()
        return Decision(
            time=now,
            node=self.node,
            action=action,
            direction=direction,
            reason=reason,
            family=packet.family,
            protocol=packet.protocol,
            src=self._endpoint(program, packet.src, now),
            dst=self._endpoint(program, packet.dst, now),
            port=packet.port,
            policies=policies,
        )

    def _endpoint(self, program: NodeProgram | None, ip: IPAddress, now: float) -> dict[str, str]:
        """{"ip": ...}, with "pod" when a pod of the program owns the address."""
        pod = self._owner(program, ip, now)
        return {"ip": str(ip)} if pod is None else {"pod": pod, "ip": str(ip)}

    def _owner(self, program: NodeProgram | None, ip: IPAddress, now: float) -> str | None:
        """The pod holding the address. The index is rebuilt when the program or its pod
        count changed, when a hit is no longer true, or on a miss at most once a second
        (misses are common: external addresses)."""
        if program is None:
            return None
        index = self._index
        fresh = program is index.program and len(program.pods) == index.pods
        key = index.owner.get(ip) if fresh else None
        if key is not None:
            pod = program.pods.get(key)
            if pod is not None and ip in pod.ips:
                return key
        elif fresh and now - index.built < REFRESH_SECONDS:
            return None
        index = self._index = _index(program, now)
        return index.owner.get(ip)


def _index(program: NodeProgram, now: float) -> _Index:
    pods = program.pods.copy()  # one C-level copy: safe while the enforcer changes it
    owner: dict[IPAddress, str] = {}
    for pod in pods.values():
        if pod.host_network:
            continue  # the node's address: shown as an address
        for ip in pod.ips:
            if ip not in owner or pod.key < owner[ip]:  # the owner the program places
                owner[ip] = pod.key
    return _Index(program, len(pods), now, owner)


class DecisionReader:
    """A thread reading the NFLOG group of a node's namespace into JSON lines.

    `observe` is called for each line (the agent counts them); `lost` with the number of
    batches the kernel dropped since the last call, when it is not 0."""

    def __init__(
        self,
        setting: DecisionLog,
        netns: str | None,
        resolver: Resolver,
        output: TextIO,
        observe: Callable[[Decision], None] = lambda _: None,
        lost: Callable[[int], None] = lambda _: None,
    ) -> None:
        self.socket = NflogSocket(setting.group, netns)  # fails here, not in the thread
        self.resolver = resolver
        self.output = output
        self._observe = observe
        self._lost = lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.socket.close()

    def _run(self) -> None:
        reported = 0
        while not self._stop.is_set():
            packets = self.socket.receive(timeout=0.2)
            if self.socket.lost != reported:
                self._lost(self.socket.lost - reported)
                reported = self.socket.lost
            now = time.time()
            decisions = [d for p in packets if (d := self.resolver.decide(p, now)) is not None]
            if not decisions:
                continue
            self.output.write("".join(_line(d) for d in decisions))
            self.output.flush()
            for decision in decisions:
                self._observe(decision)


def _line(decision: Decision) -> str:
    return json.dumps(decision.as_dict(), separators=(",", ":")) + "\n"
