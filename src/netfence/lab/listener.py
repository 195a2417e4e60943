"""The process that serves a pod's declared ports inside its namespace.

`python -m netfence.lab.listener --ports TCP:80,UDP:53` binds every port on IPv4 and IPv6
(separate sockets, IPV6_V6ONLY, so each family is served on its own), then prints `ready`
and serves until SIGTERM: TCP accepts and closes (a completed handshake is the proof),
UDP echoes each datagram from the address it was sent to. That last point matters in the
outside namespace, which owns many addresses: a reply from another source address would
not match the prober's connected socket, nor the conntrack entry a dataplane relies on, so
the destination address is read with IP(V6)_PKTINFO and used as the reply's source.

SCTP ports are not served here: this kernel has no SCTP sockets, so the prober sends raw
INIT chunks and watches for them at the destination itself (see `probe`).

Imports stay minimal (no netfence modules): one of these starts per pod.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import struct
import sys
from types import FrameType

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux values; Python 3.11 lacks IP_PKTINFO
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
ANCILLARY = socket.CMSG_SPACE(32)


def parse_ports(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, text.split(",")):
        proto, _, port = item.partition(":")
        if proto.upper() not in ("TCP", "UDP", "SCTP") or not port.isdigit():
            raise ValueError(f"bad port {item!r}: write PROTO:PORT, e.g. TCP:80")
        out.append((proto.upper(), int(port)))
    return out


def _socket(family: int, kind: int, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        sock.bind(("::", port))
    else:
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind(("0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(4096)
    sock.setblocking(False)
    return sock


def _echo(sock: socket.socket) -> None:
    """Send the datagram back, from the address it came to."""
    try:
        data, ancdata, _, peer = sock.recvmsg(65535, ANCILLARY)
    except (BlockingIOError, ConnectionRefusedError, OSError):
        return
    replies = []
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
            dst = value[8:12]  # in_pktinfo.ipi_addr: the header's destination
            replies.append((socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=i4s4s", 0, dst, dst)))
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= 16:
            replies.append((socket.IPPROTO_IPV6, IPV6_PKTINFO, value[:16] + b"\0\0\0\0"))
    with contextlib.suppress(OSError):
        sock.sendmsg([data], replies, 0, peer)


def serve(ports: list[tuple[str, int]], ready: int | None = None) -> None:
    selector = selectors.DefaultSelector()
    for proto, port in ports:
        kind = {"TCP": socket.SOCK_STREAM, "UDP": socket.SOCK_DGRAM}.get(proto)
        if kind is None:
            continue
        for family in (socket.AF_INET, socket.AF_INET6):
            sock = _socket(family, kind, port)
            selector.register(sock, selectors.EVENT_READ, kind)
    if ready is not None:
        os.write(ready, b"ready\n")
        os.close(ready)
    while True:
        for key, _ in selector.select():
            ready_sock = key.fileobj
            if not isinstance(ready_sock, socket.socket):
                continue
            if key.data == socket.SOCK_STREAM:
                with contextlib.suppress(OSError):
                    conn, _ = ready_sock.accept()
                    conn.close()
            else:
                _echo(ready_sock)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="netfence.lab.listener")
    parser.add_argument("--ports", required=True, help="PROTO:PORT,... e.g. TCP:80,UDP:53")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # it outlives the command that started it
    # The lab spawns listeners with SIGTERM held (`signals.held`), and a signal mask
    # survives fork and exec: unblocked, SIGTERM stops us at once instead of the SIGKILL
    # that `listeners.stop` sends 2 s later.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    # stdout is the readiness pipe: say `ready` on it once, then let it go.
    ready = os.dup(sys.stdout.fileno())
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    with contextlib.suppress(KeyboardInterrupt):
        serve(parse_ports(args.ports), ready)


if __name__ == "__main__":
    main()
