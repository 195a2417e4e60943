"""Sets of IP addresses as sorted integer ranges, one list per family.

An ipBlock (`cidr` minus its `except` holes) is rarely a single CIDR, and connectivity
lists cut the address space at every block boundary, so ranges rather than networks are the
working form. Integers keep containment tests a bisect away.
"""

from __future__ import annotations

import ipaddress
import itertools
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Span = tuple[int, int, int]  # (family 4|6, first, last), inclusive
FAMILY_MAX = {4: 2**32 - 1, 6: 2**128 - 1}


def network_span(net: IPNetwork) -> Span:
    return (net.version, int(net.network_address), int(net.broadcast_address))


def _merge(spans: Iterable[Span]) -> tuple[Span, ...]:
    out: list[Span] = []
    for fam, lo, hi in sorted(spans):
        if out and out[-1][0] == fam and lo <= out[-1][2] + 1:
            if hi > out[-1][2]:
                out[-1] = (fam, out[-1][1], hi)
        else:
            out.append((fam, lo, hi))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class IPRanges:
    spans: tuple[Span, ...] = ()

    @staticmethod
    def block(cidr: IPNetwork, holes: Iterable[IPNetwork] = ()) -> IPRanges:
        """`cidr` minus every hole (holes of the other family are ignored)."""
        result = [network_span(cidr)]
        for hole in holes:
            fam, hlo, hhi = network_span(hole)
            nxt: list[Span] = []
            for f, lo, hi in result:
                if f != fam or hhi < lo or hlo > hi:
                    nxt.append((f, lo, hi))
                    continue
                if lo < hlo:
                    nxt.append((f, lo, hlo - 1))
                if hhi < hi:
                    nxt.append((f, hhi + 1, hi))
            result = nxt
        return IPRanges(_merge(result))

    @staticmethod
    def addresses(ips: Iterable[IPAddress]) -> IPRanges:
        """Single addresses (a node's, say) as ranges."""
        return IPRanges(_merge((ip.version, int(ip), int(ip)) for ip in ips))

    @staticmethod
    def everything(family: int) -> IPRanges:
        return IPRanges(((family, 0, FAMILY_MAX[family]),))

    def __contains__(self, ip: IPAddress) -> bool:
        value, fam = int(ip), ip.version
        index = bisect_right(self.spans, (fam, value, FAMILY_MAX[6] + 1)) - 1
        if index < 0:
            return False
        f, lo, hi = self.spans[index]
        return f == fam and lo <= value <= hi

    def covers(self, span: Span) -> bool:
        """True when the whole span lies inside these ranges."""
        fam, lo, hi = span
        return any(f == fam and a <= lo and hi <= b for f, a, b in self.spans)

    def intersects(self, span: Span) -> bool:
        fam, lo, hi = span
        return any(f == fam and a <= hi and lo <= b for f, a, b in self.spans)

    def __bool__(self) -> bool:
        return bool(self.spans)


def span_text(span: Span) -> str:
    """`10.0.0.0-10.255.255.255`: the connectivity-list form of an address range."""
    fam, lo, hi = span
    make = ipaddress.IPv4Address if fam == 4 else ipaddress.IPv6Address
    return f"{make(lo)}-{make(hi)}"


def cut(family: int, blocks: Iterable[IPRanges]) -> list[Span]:
    """The family's whole address space cut at every start and end of the blocks' ranges."""
    top = FAMILY_MAX[family]
    points = {0, top + 1}
    for block in blocks:
        for fam, lo, hi in block.spans:
            if fam == family:
                points.add(lo)
                points.add(hi + 1)
    edges = sorted(points)
    return [(family, a, b - 1) for a, b in itertools.pairwise(edges)]
