"""Cutting existing connections that a change no longer allows.

`ct state established` is accepted first, so a new table alone would let flows that were
allowed before keep going forever. After a change, every conntrack entry of the node is
checked against the new state and the revoked ones are deleted; with
`nf_conntrack_tcp_loose=0` (set by `harden`) their next packets are `invalid`, not `new`,
and the table drops them. This sweep is control plane: packets are still decided by the
kernel alone. conntrack-tools is used rather than netlink by hand: it is Debian's standard
tool for exactly this, and the sweep is not on a hot path.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from netfence.dataplane.apply import in_netns
from netfence.dataplane.program import NodeProgram

_ENTRY = re.compile(
    r"^ipv(?P<family>[46])\s+\d+\s+(?P<proto>tcp|udp|sctp)\s+\d+\s.*?"
    r"src=(?P<src>\S+) dst=(?P<dst>\S+) sport=\d+ dport=(?P<dport>\d+)"
)


@dataclass(frozen=True, slots=True)
class Flow:
    """The original direction of a tracked connection."""

    family: int
    protocol: str  # TCP, UDP, SCTP
    src: str
    dst: str
    dport: int


def _conntrack(netns: str | None, args: list[str]) -> subprocess.CompletedProcess[str]:
    argv = in_netns(netns, "conntrack", *args)
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def harden(netns: str | None) -> bool:
    """Mid-stream packets of unknown flows become `invalid` instead of starting a flow.

    Written only when needed (a container may see /proc/sys read-only, with the value
    set by a privileged init step); False when it is not in force, which makes revocation
    weaker (a cut TCP flow may be picked up again) but must not stop enforcement."""
    key = "net.netfilter.nf_conntrack_tcp_loose"
    read = subprocess.run(
        in_netns(netns, "sysctl", "-n", key),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if read.returncode == 0 and read.stdout.strip() == "0":
        return True
    write = subprocess.run(
        in_netns(netns, "sysctl", "-q", "-w", f"{key}=0"),
        capture_output=True,
        timeout=30,
        check=False,
    )
    return write.returncode == 0


def flows(netns: str | None) -> list[Flow]:
    out = _conntrack(netns, ["-L", "-o", "extended"]).stdout
    found = []
    for line in out.splitlines():
        m = _ENTRY.match(line)
        if m:
            found.append(
                Flow(int(m["family"]), m["proto"].upper(), m["src"], m["dst"], int(m["dport"]))
            )
    return found


def delete(netns: str | None, flow: Flow) -> None:
    _conntrack(
        netns,
        [
            "-D",
            "-f",
            f"ipv{flow.family}",
            "-p",
            flow.protocol.lower(),
            "-s",
            flow.src,
            "-d",
            flow.dst,
            "--dport",
            str(flow.dport),
        ],
    )


def revoke(netns: str | None, allowed: Callable[[Flow], bool]) -> list[Flow]:
    """Delete every tracked flow that `allowed` rejects; returns them."""
    revoked = [f for f in flows(netns) if not allowed(f)]
    for flow in revoked:
        delete(netns, flow)
    return revoked


def table_allows(
    program: NodeProgram, node_addresses: frozenset[str] = frozenset()
) -> Callable[[Flow], bool]:
    """Whether the node's table, as it is now, would let the flow start.

    Each node judges the flows it tracks by its own table (the source's egress side where
    the source lives, the destination's ingress side where it lives), which is what the
    kernel would do with a new packet of the flow. Flows from the node's own addresses
    are always allowed, as the table never filters them (kubelet probes).
    """

    def allowed(flow: Flow) -> bool:
        if flow.src in node_addresses:
            return True
        src, dst = ipaddress.ip_address(flow.src), ipaddress.ip_address(flow.dst)
        return program.allows(src, dst, flow.protocol, flow.dport)

    return allowed
