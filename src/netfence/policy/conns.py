"""`Conns`: a set of (protocol, port) pairs, stored as sorted port ranges per protocol.

Every answer the engine gives is one of these: what a rule allows, what a pod accepts, what
a pair of workloads may use. Values are immutable and hashable so they can be interned and
compared cheaply when whole-cluster matrices are built.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

PROTOCOLS: tuple[str, ...] = ("TCP", "UDP", "SCTP")
MIN_PORT, MAX_PORT = 1, 65535
Ranges = tuple[tuple[int, int], ...]
_FULL: Ranges = ((MIN_PORT, MAX_PORT),)


def _normalise(ranges: Iterable[tuple[int, int]]) -> Ranges:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        lo, hi = max(lo, MIN_PORT), min(hi, MAX_PORT)
        if lo > hi:
            continue
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _subtract(a: Ranges, b: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in a:
        for blo, bhi in b:
            if bhi < lo or blo > hi:
                continue
            if blo > lo:
                out.append((lo, blo - 1))
            lo = bhi + 1
            if lo > hi:
                break
        if lo <= hi:
            out.append((lo, hi))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Conns:
    """Allowed ports per protocol; `tcp`, `udp`, `sctp` hold merged inclusive ranges."""

    tcp: Ranges = ()
    udp: Ranges = ()
    sctp: Ranges = ()

    @staticmethod
    def of(protocol: str, ranges: Iterable[tuple[int, int]]) -> Conns:
        norm = _normalise(ranges)
        return Conns(**{protocol.lower(): norm})

    @staticmethod
    def port(protocol: str, port: int, end_port: int | None = None) -> Conns:
        return Conns.of(protocol, [(port, end_port if end_port is not None else port)])

    @staticmethod
    def all_ports(protocol: str) -> Conns:
        return Conns(**{protocol.lower(): _FULL})

    def ranges(self, protocol: str) -> Ranges:
        ranges: Ranges = getattr(self, protocol.lower())
        return ranges

    def __or__(self, other: Conns) -> Conns:
        if self is other or not other:
            return self
        if not self:
            return other
        return Conns(
            _normalise(self.tcp + other.tcp),
            _normalise(self.udp + other.udp),
            _normalise(self.sctp + other.sctp),
        )

    def __and__(self, other: Conns) -> Conns:
        if self is other:
            return self
        return Conns(
            _intersect(self.tcp, other.tcp),
            _intersect(self.udp, other.udp),
            _intersect(self.sctp, other.sctp),
        )

    def __sub__(self, other: Conns) -> Conns:
        return Conns(
            _subtract(self.tcp, other.tcp),
            _subtract(self.udp, other.udp),
            _subtract(self.sctp, other.sctp),
        )

    def __bool__(self) -> bool:
        return bool(self.tcp or self.udp or self.sctp)

    def __contains__(self, item: tuple[str, int]) -> bool:
        protocol, port = item
        return any(lo <= port <= hi for lo, hi in self.ranges(protocol))

    def issubset(self, other: Conns) -> bool:
        return not (self - other)

    @property
    def is_all(self) -> bool:
        return self.tcp == _FULL and self.udp == _FULL and self.sctp == _FULL

    def items(self) -> list[tuple[str, Ranges]]:
        """(protocol, ranges) for protocols with at least one port, in PROTOCOLS order."""
        return [(p, self.ranges(p)) for p in PROTOCOLS if self.ranges(p)]

    def __str__(self) -> str:
        """The netpol-analyzer form: `All Connections` or `TCP 80,8080-8090,UDP 53`."""
        return _text(self)

    def as_dict(self) -> dict[str, list[str]]:
        return {p: [_range_text(r) for r in ranges] for p, ranges in self.items()}


@lru_cache(maxsize=4096)
def _text(conns: Conns) -> str:
    """Formatting is the hot spot of long lists, and a cluster has few distinct values."""
    if conns.is_all:
        return "All Connections"
    if not conns:
        return "No Connections"
    return ",".join(sorted(f"{p} {format_ranges(ranges)}" for p, ranges in conns.items()))


def format_ranges(ranges: Sequence[tuple[int, int]]) -> str:
    return ",".join(_range_text(r) for r in ranges)


def _range_text(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


NO_CONNS = Conns()
ALL_CONNS = Conns(_FULL, _FULL, _FULL)


def parse_port(text: str) -> tuple[str, int]:
    """`80`, `80/TCP`, `53/udp` -> (protocol, port); raises ValueError with a clear reason."""
    number, _, protocol = text.partition("/")
    protocol = (protocol or "TCP").upper()
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} in {text!r}: use TCP, UDP or SCTP")
    try:
        port = int(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a port: write it as 80 or 80/TCP") from None
    if not MIN_PORT <= port <= MAX_PORT:
        raise ValueError(f"port {port} is out of range 1-65535")
    return protocol, port
