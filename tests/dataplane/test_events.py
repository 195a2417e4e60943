"""nftables change events, subscribed to in a throw-away namespace: what wakes the agent's
drift check (structural changes of `inet netfence`) and what does not (element changes,
other tables, other namespaces)."""

from __future__ import annotations

import select
import struct
import subprocess

import pytest

from netfence.dataplane.apply import Nftables
from netfence.dataplane.events import TableEvents, touches

TABLE = (
    "table inet netfence {}\ndelete table inet netfence\n"
    "table inet netfence {\n set s { type ipv4_addr; }\n"
    " chain c { type filter hook forward priority 0; policy accept; counter\n }\n}\n"
)


def _pending(events: TableEvents, timeout: float = 1.0) -> bool:
    """Whether the next batch of events touches the table (False: none within timeout)."""
    ready, _, _ = select.select([events], [], [], timeout)
    return bool(ready) and events.read()


def test_structural_changes_wake_element_changes_do_not(netns: str) -> None:
    with Nftables(netns) as nft, TableEvents(netns) as events:
        nft.apply(TABLE)
        assert _pending(events)  # our own load is announced too (the check then finds it as is)
        assert not _pending(events, 0.2)
        nft.apply("add element inet netfence s { 192.0.2.1 }\n")
        assert not _pending(events)  # the agent's daily business
        nft.apply("table inet other {\n chain x { type filter hook input priority 0; }\n}\n")
        assert not _pending(events)  # not ours
        nft.apply("add rule inet netfence c ip saddr 192.0.2.2 accept\n")
        assert _pending(events)  # someone edits a chain
        nft.apply("delete table inet netfence\n")
        assert _pending(events)  # or deletes the table


def test_events_of_other_namespaces_are_not_seen(netns: str) -> None:
    other = f"{netns}-o"
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        with TableEvents(netns) as events, Nftables(other) as nft:
            nft.apply(TABLE)
            nft.apply("delete table inet netfence\n")
            assert not _pending(events, 0.3)
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)


@pytest.mark.parametrize(
    ("family", "name", "message", "expected"),
    [
        (1, b"netfence\0", 2, True),  # inet, delete table
        (1, b"netfence\0", 6, True),  # new rule
        (1, b"netfence\0", 12, False),  # new element
        (2, b"netfence\0", 2, False),  # ip family, not inet
        (1, b"netfence2\0", 2, False),
    ],
)
def test_touches_reads_family_message_and_table(
    family: int, name: bytes, message: int, expected: bool
) -> None:
    attribute = struct.pack("=HH", 4 + len(name), 1) + name
    attribute += b"\0" * (-len(attribute) % 4)
    body = struct.pack("!BBH", family, 0, 0) + attribute
    header = struct.pack("=IHHII", 16 + len(body), 10 << 8 | message, 0, 0, 0)
    assert touches(header + body) is expected
    assert not touches((header + body)[:-3])  # a cut message is skipped, not read past
