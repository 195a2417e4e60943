"""Packets that nftables' `log group N` statements copy to userspace (NFLOG), read over netlink.

Why our own ~200 lines of `socket` + `struct` rather than a library: pyroute2 (0.9.7) speaks
the nfnetlink subsystems for nftables, conntrack and ipset but has no NFLOG (ULOG) support;
PyPI's `nflog` (0.1.2, 2016, distutils) is a C extension over libnetfilter_log with one
group per process held in globals and no namespace support, and nothing else maintained
does the job. The protocol is small and stable (netfilter's `nfnetlink_log.h` has not
changed its wire format since 2.6.14): one config message binds the group, then every
packet arrives as one netlink message of attributes, of which we read two (the rule's
prefix and the packet's first bytes). The parser never trusts a length it is given: a
short or malformed message is skipped, not read past.

A netlink socket belongs to the network namespace of the thread that creates it, for its
whole life. So, as `apply.Nftables` does, the socket is opened by a short-lived thread that
first enters the node's namespace (`setns` on /run/netns/NAME, that thread only); the
caller's threads stay where they are and may then read the socket from anywhere.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Self

from netfence.dataplane.apply import ApplyError, enter_netns
from netfence.policy.engine import IPAddress

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
_PACKET = NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET
_CONFIG = NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
# packet attributes (NFULA_*) read here
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
# config attributes and values (NFULA_CFG_*, NFULNL_*)
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id (host order)
_NFGENMSG = struct.Struct("!BBH")  # family, version, resource id (the group), network order
_NLATTR = struct.Struct("=HH")  # length, type

PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
_PORTED = frozenset({6, 17, 132})  # the destination port is the transport header's bytes 2-3
# IPv6 extension headers before the transport header: hop-by-hop, routing, destination
# options (length in 8-octet units past the first 8), and AH (in 4-octet units past 8).
_IPV6_OPTIONS = frozenset({0, 43, 60})
_IPV6_FRAGMENT = 44
_IPV6_AH = 51
COPY_BYTES = 128  # enough for the IP header, options and the transport ports


class NflogError(RuntimeError):
    """The NFLOG group cannot be subscribed to (the message says why)."""


@dataclass(frozen=True, slots=True)
class LoggedPacket:
    """What one NFLOG message says about one packet."""

    prefix: str  # the log rule's prefix
    family: int  # 4 or 6
    src: IPAddress
    dst: IPAddress
    protocol: str  # TCP, UDP, SCTP, ICMP, ICMPv6, or the protocol number
    port: int | None  # the destination port (TCP, UDP, SCTP; not of a later fragment)


def attributes(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of the netlink attributes in data[start:end]; stops at a bad length."""
    while start + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, start)
        if length < _NLATTR.size or start + length > end:
            return
        yield kind & _NLA_TYPE_MASK, data[start + _NLATTR.size : start + length]
        start += (length + 3) & ~3


def messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, end) of each netlink message in one datagram."""
    start = 0
    while start + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, start)
        if length < _NLMSGHDR.size or start + length > len(data):
            return
        yield kind, start + _NLMSGHDR.size, start + length
        start += (length + 3) & ~3


def parse(data: bytes) -> Iterator[LoggedPacket]:
    """The logged packets in one datagram received from the NFLOG socket.

    Other messages (acknowledgements) and packets that are not readable IPv4/IPv6 are
    skipped."""
    for kind, start, end in messages(data):
        if kind != _PACKET or end - start < _NFGENMSG.size:
            continue
        prefix, payload = "", b""
        for attribute, value in attributes(data, start + _NFGENMSG.size, end):
            if attribute == NFULA_PREFIX:
                prefix = value.split(b"\0", 1)[0].decode("utf-8", errors="replace")
            elif attribute == NFULA_PAYLOAD:
                payload = value
        packet = read_ip(prefix, payload)
        if packet is not None:
            yield packet


def read_ip(prefix: str, payload: bytes) -> LoggedPacket | None:
    """Addresses, protocol and destination port from a packet's first bytes (from the IP
    header on), or None when they are not there."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        header = (payload[0] & 0x0F) * 4
        fragment = struct.unpack_from("!H", payload, 6)[0] & 0x1FFF
        protocol = payload[9]
        src: IPAddress = ipaddress.IPv4Address(payload[12:16])
        dst: IPAddress = ipaddress.IPv4Address(payload[16:20])
        transport = header if header >= 20 and fragment == 0 else None
    elif version == 6 and len(payload) >= 40:
        src, dst = ipaddress.IPv6Address(payload[8:24]), ipaddress.IPv6Address(payload[24:40])
        protocol, transport = _ipv6_transport(payload)
    else:
        return None
    port = None
    if transport is not None and protocol in _PORTED and len(payload) >= transport + 4:
        port = struct.unpack_from("!H", payload, transport + 2)[0]
    name = PROTOCOLS.get(protocol, str(protocol))
    return LoggedPacket(prefix, version, src, dst, name, port)


def _ipv6_transport(payload: bytes) -> tuple[int, int | None]:
    """The upper-layer protocol and where its header starts (None: not in the copy, or a
    later fragment), past any extension headers."""
    protocol, offset = payload[6], 40
    while protocol in _IPV6_OPTIONS or protocol in (_IPV6_FRAGMENT, _IPV6_AH):
        if len(payload) < offset + 8:
            return protocol, None
        following = payload[offset]
        if protocol == _IPV6_FRAGMENT:
            if struct.unpack_from("!H", payload, offset + 2)[0] & 0xFFF8:
                return following, None  # not the first fragment: no transport header
            offset += 8
        elif protocol == _IPV6_AH:
            offset += (payload[offset + 1] + 2) * 4
        else:
            offset += (payload[offset + 1] + 1) * 8
        protocol = following
    return protocol, offset


def _attribute(kind: int, value: bytes) -> bytes:
    data = _NLATTR.pack(_NLATTR.size + len(value), kind) + value
    return data + b"\0" * (-len(data) % 4)


def config_message(group: int, copy_bytes: int, timeout_cs: int, queue: int) -> bytes:
    """Bind `group` to the socket, copying `copy_bytes` of each packet; the kernel sends
    a batch when `queue` packets wait or after `timeout_cs` hundredths of a second."""
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, group)
    body += _attribute(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_BIND))
    body += _attribute(NFULA_CFG_MODE, struct.pack("!IBx", copy_bytes, NFULNL_COPY_PACKET))
    body += _attribute(NFULA_CFG_TIMEOUT, struct.pack("!I", timeout_cs))
    body += _attribute(NFULA_CFG_QTHRESH, struct.pack("!I", queue))
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), _CONFIG, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    return header + body


def _ack_error(data: bytes) -> int | None:
    """The error number of an acknowledgement in the datagram (0: success), if any."""
    for kind, start, end in messages(data):
        if kind == NLMSG_ERROR and end - start >= 4:
            return -int(struct.unpack_from("=i", data, start)[0])
    return None


class Subscription:
    """A netfilter netlink socket, selectable (`fileno`), closed with the block."""

    _socket: socket.socket

    def fileno(self) -> int:
        return self._socket.fileno()

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class NflogSocket(Subscription):
    """A subscription to one NFLOG group in one namespace (None: this one).

    `receive` returns the packets of one datagram (a batch). When the reader falls behind,
    the kernel drops what does not fit in the socket's buffer: `lost` counts the times."""

    def __init__(
        self,
        group: int,
        netns: str | None = None,
        *,
        timeout_cs: int = 5,
        queue: int = 32,
        buffer_bytes: int = 1 << 20,
    ) -> None:
        if not 0 <= group <= 0xFFFF:
            raise NflogError(f"NFLOG group {group} is not in 0-65535")
        self.group = group
        self.netns = netns
        self.lost = 0
        self._socket = open_socket(netns)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
            self._socket.bind((0, 0))
            self._socket.send(config_message(group, COPY_BYTES, timeout_cs, queue))
            error = _ack_error(self._socket.recv(65536))
        except OSError as exc:
            self._socket.close()
            raise NflogError(f"NFLOG group {group}: {exc.strerror or exc}") from None
        if error:
            self._socket.close()
            why = os.strerror(error)
            if error == errno.EPERM:  # the kernel's answer to a second reader, too
                why += " (another socket reads this group, or CAP_NET_ADMIN is missing)"
            raise NflogError(f"cannot subscribe to NFLOG group {group}: {why}")

    def receive(self, timeout: float | None = None) -> list[LoggedPacket]:
        """The next batch ([] when `timeout` seconds pass without one)."""
        self._socket.settimeout(timeout)
        try:
            data = self._socket.recv(1 << 17)
        except TimeoutError:
            return []
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            self.lost += 1
            return []
        return list(parse(data))


def open_socket(netns: str | None) -> socket.socket:
    """A netfilter netlink socket created in the namespace (by a thread that enters it)."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    made: Future[socket.socket] = Future()

    def make() -> None:
        try:
            enter_netns(netns)
            made.set_result(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER))
        except (ApplyError, OSError) as exc:
            made.set_exception(exc)

    thread = threading.Thread(target=make, name=f"nflog-{netns}", daemon=True)
    thread.start()
    thread.join()
    try:
        return made.result()
    except (ApplyError, OSError) as exc:
        raise NflogError(str(exc)) from None
