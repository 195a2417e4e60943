"""Trying every connection of a lab for real, all at once.

One worker thread runs an event loop (epoll) over non-blocking sockets. Each socket is
created inside its source namespace: the thread switches its own network namespace with
setns(2) right before `socket()` (a socket stays in the namespace it was born in, and
setns on a network namespace affects only the calling thread), so one thread can hold
sockets of every namespace and thousands of probes are in flight together. The main
thread never changes namespace.

- TCP: a non-blocking connect; connected within `timeout` means delivered.
- UDP: a connected socket sends a unique token, the listener echoes it (from the address
  it was sent to); `tries` sends, `timeout` apart.
- SCTP: a hand-made INIT sent from a raw socket (`sctp`); raw receive sockets opened in
  every destination namespace beforehand see it arrive. The INIT's initiate tag names the
  probe, and destination address and port are checked too.

Before the probes, one UDP datagram per (source, destination address) pair to the discard
port resolves ARP and neighbour entries along the path: a SYN queued behind an unresolved
neighbour could otherwise wait for TCP's 1 s retransmission and read as blocked.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import heapq
import ipaddress
import os
import random
import resource
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from netfence.lab.sctp import IPPROTO_SCTP, init_packet, parse_init
from netfence.lab.topology import LabError, LabPlan, PodPlan

CLONE_NEWNET = 0x40000000
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
DISCARD_PORT = 9
Kind = Literal["pod", "outside"]


@dataclass(frozen=True, slots=True)
class Probe:
    """One connection attempt: endpoints by name (pod key or outside address) and where."""

    src: str
    dst: str
    family: int
    protocol: str
    port: int
    src_netns: str
    dst_netns: str
    src_ip: str
    dst_ip: str
    src_kind: Kind = "pod"
    dst_kind: Kind = "pod"
    bind: bool = False  # bind src_ip: the outside (and a node) own several addresses

    @property
    def label(self) -> str:
        return f"{self.src} -> {self.dst} {self.port}/{self.protocol} IPv{self.family}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    probe: Probe
    delivered: bool
    detail: str  # "connected", "echoed", "INIT arrived", "timeout", "refused", ...

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self.probe), "delivered": self.delivered, "detail": self.detail}


def plan_probes(plan: LabPlan) -> list[Probe]:
    """Every probe of the lab: pod to pod on the destination's declared ports, both
    families; pod to every outside address on the sample ports; every outside address to
    every pod on its declared ports. Pairs sharing a namespace (two hostNetwork pods of
    one node) are left out: their traffic never leaves the node's loopback."""
    probes = []
    for src in plan.pods:
        for dst in plan.pods:
            if src.key == dst.key or src.netns == dst.netns:
                continue
            for family in (4, 6):
                for protocol, port in dst.ports:
                    probes.append(_pod_probe(src, dst, family, protocol, port))
    for ext in plan.outside.addresses:
        family = ext.ip.version
        for pod in plan.pods:
            src_ip = str(pod.ip(family))
            for protocol, port in plan.outside.ports:
                probes.append(
                    Probe(
                        pod.key,
                        str(ext.ip),
                        family,
                        protocol,
                        port,
                        pod.netns,
                        plan.outside.netns,
                        src_ip,
                        str(ext.ip),
                        dst_kind="outside",
                        bind=pod.host_network,
                    )
                )
            for protocol, port in pod.ports:
                probes.append(
                    Probe(
                        str(ext.ip),
                        pod.key,
                        family,
                        protocol,
                        port,
                        plan.outside.netns,
                        pod.netns,
                        str(ext.ip),
                        str(pod.ip(family)),
                        src_kind="outside",
                        bind=True,
                    )
                )
    return probes


def _pod_probe(src: PodPlan, dst: PodPlan, family: int, protocol: str, port: int) -> Probe:
    return Probe(
        src.key,
        dst.key,
        family,
        protocol,
        port,
        src.netns,
        dst.netns,
        str(src.ip(family)),
        str(dst.ip(family)),
        bind=src.host_network,
    )


# -- namespaces ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class _Namespaces:
    """Switches the calling thread between namespaces; `close` returns it home."""

    def __init__(self) -> None:
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._fds: dict[str, int] = {}
        self._current: str | None = None

    def enter(self, netns: str) -> None:
        if netns == self._current:
            return
        if not netns.startswith("nf-"):
            raise LabError(f"refusing to probe from {netns!r}: not a lab namespace")
        fd = self._fds.get(netns)
        if fd is None:
            fd = self._fds[netns] = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        _setns(fd)
        self._current = netns

    def close(self) -> None:
        _setns(self._home)
        self._current = None
        for fd in [self._home, *self._fds.values()]:
            os.close(fd)


# -- the event loop -----------------------------------------------------------------------


@dataclass(eq=False)
class _Flight:
    index: int
    probe: Probe
    sock: socket.socket | None = None
    payload: bytes = b""
    tries_left: int = 0
    deadline: float = 0.0
    done: bool = False


class _Runner:
    def __init__(self, probes: Sequence[Probe], timeout: float, tries: int, parallel: int):
        self.probes = probes
        self.timeout = timeout
        self.tries = tries
        self.parallel = parallel
        self.results: list[ProbeResult | None] = [None] * len(probes)
        self.selector = selectors.DefaultSelector()
        self.netns = _Namespaces()
        self.heap: list[tuple[float, int]] = []
        self.flights: dict[int, _Flight] = {}
        self.by_tag: dict[int, _Flight] = {}
        self.captures: list[socket.socket] = []
        self.session = random.getrandbits(32)

    def run(self) -> list[ProbeResult]:
        try:
            self._warm_up()
            self._open_captures()
            queue = deque(range(len(self.probes)))
            while queue or self.flights:
                while queue and len(self.flights) < self.parallel:
                    self._start(queue.popleft())
                wait = max(0.0, self.heap[0][0] - time.monotonic()) if self.heap else 0.05
                for key, _ in self.selector.select(wait):
                    self._event(key.data)
                self._expire()
        finally:
            for flight in list(self.flights.values()):
                self._finish(flight, False, "not finished")
            for sock in self.captures:
                sock.close()
            self.selector.close()
            self.netns.close()
        return [r for r in self.results if r is not None]

    # warm-up and capture sockets

    def _warm_up(self) -> None:
        pairs = {(p.src_netns, p.src_ip if p.bind else "", p.family, p.dst_ip) for p in self.probes}
        sockets = []
        try:
            for netns, src_ip, family, dst_ip in sorted(pairs):
                self.netns.enter(netns)
                sock = socket.socket(_af(family), socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.setblocking(False)
                try:
                    if src_ip:
                        sock.bind((src_ip, 0))
                    sock.sendto(b"netfence warm-up", (dst_ip, DISCARD_PORT))
                except OSError:
                    pass  # unreachable: the probes will say so
            time.sleep(0.1)
        finally:
            for sock in sockets:
                sock.close()

    def _open_captures(self) -> None:
        wanted = sorted({(p.dst_netns, p.family) for p in self.probes if p.protocol == "SCTP"})
        for netns, family in wanted:
            self.netns.enter(netns)
            sock = socket.socket(_af(family), socket.SOCK_RAW, IPPROTO_SCTP)
            if family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            sock.setblocking(False)
            self.captures.append(sock)
            self.selector.register(sock, selectors.EVENT_READ, ("capture", sock))

    # starting and finishing

    def _start(self, index: int) -> None:
        probe = self.probes[index]
        flight = _Flight(index, probe)
        self.flights[index] = flight
        try:
            self.netns.enter(probe.src_netns)
            if probe.protocol == "TCP":
                self._start_tcp(flight)
            elif probe.protocol == "UDP":
                self._start_udp(flight)
            else:
                self._start_sctp(flight)
        except OSError as exc:
            self._finish(flight, False, exc.strerror or str(exc))

    def _socket(self, flight: _Flight, kind: int, proto: int = 0) -> socket.socket:
        probe = flight.probe
        sock = flight.sock = socket.socket(_af(probe.family), kind, proto)
        sock.setblocking(False)
        if probe.bind:
            sock.bind((probe.src_ip, 0))
        return sock

    def _arm(self, flight: _Flight) -> None:
        flight.deadline = time.monotonic() + self.timeout
        heapq.heappush(self.heap, (flight.deadline, flight.index))

    def _start_tcp(self, flight: _Flight) -> None:
        sock = self._socket(flight, socket.SOCK_STREAM)
        code = sock.connect_ex((flight.probe.dst_ip, flight.probe.port))
        if code == 0:
            self._finish(flight, True, "connected")
        elif code == errno.EINPROGRESS:
            self.selector.register(sock, selectors.EVENT_WRITE, ("tcp", flight))
            self._arm(flight)
        else:
            self._finish(flight, False, os.strerror(code))

    def _start_udp(self, flight: _Flight) -> None:
        sock = self._socket(flight, socket.SOCK_DGRAM)
        sock.connect((flight.probe.dst_ip, flight.probe.port))
        flight.payload = struct.pack("!4sII", b"nfpr", self.session, flight.index)
        flight.tries_left = self.tries
        self.selector.register(sock, selectors.EVENT_READ, ("udp", flight))
        self._send(flight)

    def _start_sctp(self, flight: _Flight) -> None:
        self._socket(flight, socket.SOCK_RAW, IPPROTO_SCTP)
        tag = (self.session + flight.index) & 0xFFFFFFFF or 1
        src_port = 32768 + flight.index % 28000
        flight.payload = init_packet(src_port, flight.probe.port, tag)
        flight.tries_left = self.tries
        self.by_tag[tag] = flight
        self._send(flight)

    def _send(self, flight: _Flight) -> None:
        assert flight.sock is not None
        flight.tries_left -= 1
        try:
            if flight.probe.protocol == "SCTP":
                flight.sock.sendto(flight.payload, (flight.probe.dst_ip, 0))
            else:
                flight.sock.send(flight.payload)
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                self._finish(flight, False, exc.strerror or str(exc))
                return
        self._arm(flight)

    def _finish(self, flight: _Flight, delivered: bool, detail: str) -> None:
        if flight.done:
            return
        flight.done = True
        self.flights.pop(flight.index, None)
        if flight.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(flight.sock)
            flight.sock.close()
        self.results[flight.index] = ProbeResult(flight.probe, delivered, detail)

    # events

    def _event(self, data: tuple[str, Any]) -> None:
        kind, subject = data
        if kind == "tcp":
            flight: _Flight = subject
            assert flight.sock is not None
            code = flight.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self._finish(flight, code == 0, "connected" if code == 0 else os.strerror(code))
        elif kind == "udp":
            flight = subject
            assert flight.sock is not None
            try:
                reply = flight.sock.recv(2048)
            except BlockingIOError:
                return
            except OSError as exc:
                self._finish(flight, False, exc.strerror or str(exc))
                return
            if reply == flight.payload:
                self._finish(flight, True, "echoed")
        else:
            self._capture(subject)

    def _capture(self, sock: socket.socket) -> None:
        """Read every INIT waiting on a capture socket (IPv4 raw sockets see the IP header,
        IPv6 ones only the payload, with the destination in IPV6_PKTINFO)."""
        while True:
            try:
                data, ancdata, _, peer = sock.recvmsg(4096, socket.CMSG_SPACE(20))
            except (BlockingIOError, InterruptedError):
                return
            if sock.family == socket.AF_INET:
                if len(data) < 20:
                    continue
                ihl = (data[0] & 0x0F) * 4
                src = socket.inet_ntop(socket.AF_INET, data[12:16])
                dst = socket.inet_ntop(socket.AF_INET, data[16:20])
                sctp = data[ihl:]
            else:
                src, dst, sctp = peer[0], "", data
                for level, kind, value in ancdata:
                    if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
                        dst = socket.inet_ntop(socket.AF_INET6, value[:16])
            self._arrived(src, dst, sctp)

    def _arrived(self, src: str, dst: str, sctp: bytes) -> None:
        parsed = parse_init(sctp)
        if parsed is None:
            return
        _, dst_port, tag = parsed
        flight = self.by_tag.get(tag)
        if flight is None or flight.done:
            return
        probe = flight.probe
        if dst_port == probe.port and _same(dst, probe.dst_ip) and _same(src, probe.src_ip):
            self._finish(flight, True, "INIT arrived")

    def _expire(self) -> None:
        now = time.monotonic()
        while self.heap and self.heap[0][0] <= now:
            deadline, index = heapq.heappop(self.heap)
            flight = self.flights.get(index)
            if flight is None or flight.done or flight.deadline != deadline:
                continue
            if flight.probe.protocol != "TCP" and flight.tries_left > 0:
                self._send(flight)
            else:
                what = "no INIT arrived" if flight.probe.protocol == "SCTP" else "timeout"
                self._finish(flight, False, what)


def _af(family: int) -> socket.AddressFamily:
    return socket.AF_INET if family == 4 else socket.AF_INET6


def _same(seen: str, expected: str) -> bool:
    """Same address (an unknown `seen` matches: the tag and port still identify the probe)."""
    return not seen or ipaddress.ip_address(seen.split("%")[0]) == ipaddress.ip_address(expected)


def run_probes(
    probes: Sequence[Probe], *, timeout: float = 1.0, tries: int = 3, parallel: int = 2000
) -> list[ProbeResult]:
    """Run the probes in a worker thread (it is the only one that changes namespace).

    `timeout` is per attempt; UDP and SCTP make `tries` attempts, TCP one connect. Results
    come back in the order of `probes`.
    """
    _raise_fd_limit(parallel + 64)
    out: list[list[ProbeResult]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            out.append(_Runner(probes, timeout, tries, parallel).run())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=work, name="netfence-probe", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)  # short joins keep Ctrl-C responsive in the main thread
    if errors:
        raise errors[0]
    return out[0]


def _raise_fd_limit(wanted: int) -> None:
    """Each probe in flight holds a socket; lift the soft descriptor limit if it is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
