"""SCTP INIT packets by hand, because this kernel has no SCTP sockets.

`socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)` fails with EPROTONOSUPPORT here
(CONFIG_IP_SCTP is off), yet netfilter still parses and tracks SCTP (conntrack's SCTP
support is built in). So a probe is a raw IP-protocol-132 packet carrying one INIT chunk,
and "delivered" means the INIT reached the destination namespace. The checksum must be
right: conntrack verifies it and a dataplane that drops `ct state invalid` would otherwise
drop every probe, allowed or not.
"""

from __future__ import annotations

import struct

IPPROTO_SCTP = 132
INIT = 1
_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _table()


def crc32c(data: bytes) -> int:
    """CRC-32C as SCTP uses it (RFC 9260 appendix A); crc32c(b"123456789") == 0xE3069283."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def init_packet(src_port: int, dst_port: int, tag: int) -> bytes:
    """An SCTP packet with one INIT chunk whose initiate tag identifies the probe.

    The verification tag of an INIT is 0; the checksum covers the SCTP packet only (no
    pseudo-header), so the same bytes work for IPv4 and IPv6. The CRC goes in as the
    kernel writes it: the little-endian bytes of the value (RFC 9260 appendix A).
    """
    chunk = struct.pack("!BBHIIHHI", INIT, 0, 20, tag, 65535, 1, 1, tag)
    header = struct.pack("!HHII", src_port, dst_port, 0, 0)
    checksum = crc32c(header + chunk)
    return header[:8] + struct.pack("<I", checksum) + chunk


def parse_init(sctp: bytes) -> tuple[int, int, int] | None:
    """(source port, destination port, initiate tag) of an INIT packet, else None.

    Packets with a wrong checksum are ignored, as an SCTP stack would ignore them.
    """
    if len(sctp) < 32 or sctp[12] != INIT:
        return None
    src_port, dst_port = struct.unpack("!HH", sctp[:4])
    (checksum,) = struct.unpack("<I", sctp[8:12])
    if crc32c(sctp[:8] + b"\0\0\0\0" + sctp[12:]) != checksum:
        return None
    (tag,) = struct.unpack("!I", sctp[16:20])
    return src_port, dst_port, tag
