"""The NFLOG reader: parsing what the kernel sends, and subscribing in a namespace.

The captured messages below are bytes a 6.x kernel sent for `log group 7 prefix
"nf:drop:egress4" snaplen 128` in an output hook (loopback traffic in an `nf-` namespace);
`test_live_capture_in_a_namespace` makes the kernel send fresh ones and parses them too.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netfence.dataplane.nflog import LoggedPacket, NflogError, NflogSocket, parse, read_ip

CAPTURED = {
    "udp4": "6c00000000040000000000000000000002000007080001000800030014000a006e663a64726f703a65"
    "67726573733400080005000000000108000b000000000008000e0000000000210009004500001de3c4"
    "4000401159097f0000017f000001dbf814e90009fe1c78000000",
    "udp6": "800000000004000000000000000000000a0000070800010086dd030014000a006e663a64726f703a65"
    "67726573733400080005000000000108000b000000000008000e0000000000350009006006a5c80009"
    "11400000000000000000000000000000000100000000000000000000000000000001d73e00350009001c"
    "78000000",
    "tcp4": "8800000000040000000000000000000002000007080001000800030014000a006e663a64726f703a65"
    "67726573733400080005000000000108000b000000000008000e0000000000400009004500003cf7cd"
    "4000400644ec7f0000017f000001c3421f90a431172100000000a002ffd7fe3000000204ffd70402080a"
    "24190f94000000000103030a",
    "tcp6": "9c0000000004000000000000000000000a0000070800010086dd030014000a006e663a64726f703a65"
    "67726573733400080005000000000108000b000000000008000e000000000054000900600b1b260028"
    "06400000000000000000000000000000000100000000000000000000000000000001824601bb1db9d8a6"
    "00000000a002ffc4003000000204ffc40402080a74a1ab93000000000103030a",
}
V4, V6 = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")
EXPECTED = {
    "udp4": LoggedPacket("nf:drop:egress4", 4, V4, V4, "UDP", 5353),
    "udp6": LoggedPacket("nf:drop:egress4", 6, V6, V6, "UDP", 53),
    "tcp4": LoggedPacket("nf:drop:egress4", 4, V4, V4, "TCP", 8080),
    "tcp6": LoggedPacket("nf:drop:egress4", 6, V6, V6, "TCP", 443),
}


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_captured_messages(name: str) -> None:
    assert list(parse(bytes.fromhex(CAPTURED[name]))) == [EXPECTED[name]]


def test_a_batch_holds_several_messages_in_order() -> None:
    batch = b"".join(bytes.fromhex(CAPTURED[n]) for n in sorted(CAPTURED))
    assert list(parse(batch)) == [EXPECTED[n] for n in sorted(CAPTURED)]


def _payload(name: str) -> bytes:
    """The captured packet (from the IP header on): the message's last attribute."""
    data = bytes.fromhex(CAPTURED[name])
    version = b"\x45" if name.endswith("4") else b"\x60"
    return data[data.index(b"\x09\x00" + version) + 2 :]  # NFULA_PAYLOAD's type, then IP


def test_sctp_and_other_protocols() -> None:
    """SCTP carries its ports where TCP does; ICMP has none (the kernel here has no SCTP
    sockets to capture from, so the captured TCP packet is relabelled)."""
    tcp = bytearray(_payload("tcp4"))
    tcp[9] = 132
    assert read_ip("p", bytes(tcp)) == LoggedPacket("p", 4, V4, V4, "SCTP", 8080)
    tcp[9] = 1
    assert read_ip("p", bytes(tcp)) == LoggedPacket("p", 4, V4, V4, "ICMP", None)
    tcp[9] = 47
    assert read_ip("p", bytes(tcp)) == LoggedPacket("p", 4, V4, V4, "47", None)


def test_ipv4_later_fragment_has_no_port() -> None:
    packet = bytearray(_payload("udp4"))
    packet[6:8] = (0x0010).to_bytes(2, "big")  # fragment offset 16 x 8 bytes
    assert read_ip("p", bytes(packet)) == LoggedPacket("p", 4, V4, V4, "UDP", None)


def test_ipv6_extension_headers_are_walked() -> None:
    """A hop-by-hop header (8 bytes) and a first fragment header before the UDP header;
    a later fragment names the protocol but has no port."""
    packet = _payload("udp6")
    header, transport = bytearray(packet[:40]), packet[40:]
    header[6] = 0  # hop-by-hop next
    hop = bytes([44, 0, 1, 4, 0, 0, 0, 0])  # next: fragment; PadN
    first = bytes([17, 0, 0, 0, 0, 0, 0, 1])  # next: UDP, offset 0
    assert read_ip("p", bytes(header) + hop + first + transport) == LoggedPacket(
        "p", 6, V6, V6, "UDP", 53
    )
    later = bytes([17, 0, 0, 0x08, 0, 0, 0, 1])  # offset 1 (x 8 bytes)
    assert read_ip("p", bytes(header) + hop + later + transport) == LoggedPacket(
        "p", 6, V6, V6, "UDP", None
    )


def test_truncated_and_foreign_input_is_skipped_not_misread() -> None:
    whole = bytes.fromhex(CAPTURED["tcp4"])
    for cut in range(len(whole)):
        assert list(parse(whole[:cut])) == []  # the message length says more is missing
    assert read_ip("p", b"") is None
    assert read_ip("p", b"\x45" + b"\0" * 10) is None  # shorter than an IPv4 header
    assert read_ip("p", b"\x10" * 60) is None  # version 1
    ack = bytes.fromhex("24000000020000000100000000000000") + b"\0" * 20
    assert list(parse(ack)) == []


@given(st.binary(max_size=400))
def test_any_bytes_parse_without_error(data: bytes) -> None:
    for packet in parse(data):
        assert packet.family in (4, 6)


@given(st.binary(min_size=1, max_size=200))
def test_corrupted_captures_parse_without_error(noise: bytes) -> None:
    whole = bytearray(bytes.fromhex(CAPTURED["tcp6"]))
    for i, byte in enumerate(noise):
        whole[(i * 37) % len(whole)] ^= byte
    list(parse(bytes(whole)))


def _ns(netns: str, *argv: str, text: str | None = None) -> None:
    subprocess.run(["ip", "netns", "exec", netns, *argv], input=text, text=True, check=True)


SEND = """
import socket
for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    with socket.socket(family, socket.SOCK_DGRAM) as u:
        u.sendto(b"x", (address, 5353))
    with socket.socket(family) as t:
        t.settimeout(0.5)
        try:
            t.connect((address, 8080))
        except OSError:
            pass
"""


def test_live_capture_in_a_namespace(netns: str) -> None:
    """The socket is opened in the namespace (the test process stays outside it) and sees
    the new connections made there, in order, with the rule's prefix."""
    _ns(netns, "ip", "link", "set", "lo", "up")
    rules = (
        "table inet t {\n chain o {\n  type filter hook output priority 0; policy accept;\n"
        '  ct state new log prefix "nf:audit:egress6" group 9 snaplen 128\n }\n}\n'
    )
    _ns(netns, "nft", "-f", "-", text=rules)
    with NflogSocket(9, netns, timeout_cs=1, queue=1) as sock:
        _ns(netns, sys.executable, "-c", SEND)
        got: list[LoggedPacket] = []
        deadline = time.monotonic() + 5
        while len(got) < 4 and time.monotonic() < deadline:
            got += sock.receive(timeout=0.2)
    wanted = [
        ("UDP", V4, 5353),
        ("TCP", V4, 8080),
        ("UDP", V6, 5353),
        ("TCP", V6, 8080),
    ]
    assert [(p.protocol, p.dst, p.port) for p in got] == wanted
    assert {p.prefix for p in got} == {"nf:audit:egress6"}
    assert [p.family for p in got] == [4, 4, 6, 6]


def test_a_group_has_one_reader_per_namespace(netns: str) -> None:
    with NflogSocket(3, netns):
        with pytest.raises(NflogError, match=r"group 3: .*another socket reads this group"):
            NflogSocket(3, netns)
        NflogSocket(4, netns).close()  # another group is free
    NflogSocket(3, netns).close()  # and the group is free again once closed


def test_missing_namespace_and_bad_group_are_clear_errors(netns: str) -> None:
    with pytest.raises(NflogError, match="cannot open network namespace nf-no-such"):
        NflogSocket(1, "nf-no-such")
    with pytest.raises(NflogError, match="not in 0-65535"):
        NflogSocket(70000, netns)
