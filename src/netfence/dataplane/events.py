"""Changes to our table as the kernel announces them (nftables' netlink multicast group).

Why: the agent must notice quickly when someone else deletes or edits its table. Listing
the table's shape every second (`Nftables.table_shape`) bounds the gap at a second; the
kernel also multicasts every committed nftables change to `NFNLGRP_NFTABLES` listeners of
the namespace (what `nft monitor` prints), so subscribing lets the agent check right after
a change instead. The messages are not told apart by author: our own loads announce
themselves too, and the check that follows then finds the shape it loaded and does
nothing. Only structural changes of `inet netfence` wake the check (table, chain, rule and
set declarations); element changes are the agent's own business many times a second, and
an element edited by someone else is caught by the agent's next element transaction, which
nft then refuses (the whole table is loaded instead).

The protocol part is small: each message is a netlink header, an `nfgenmsg` (family), then
attributes, where attribute 1 is the table's name in every table, chain, rule and set
message. The socket is made in the node's namespace as `nflog` does.
"""

from __future__ import annotations

import errno
import socket
import struct

from netfence.dataplane.nflog import NflogError, Subscription, attributes, messages, open_socket

NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFPROTO_INET = 1
# NFT_MSG_*: new/delete table, chain, rule, set (element messages are left out on purpose)
STRUCTURAL = frozenset({0, 2, 3, 5, 6, 8, 9, 11})
_NAME = 1  # NFTA_{TABLE_NAME,CHAIN_TABLE,RULE_TABLE,SET_TABLE}
_NFGENMSG = struct.Struct("!BBH")


def touches(data: bytes, table: str = "netfence") -> bool:
    """Whether a datagram of nftables events holds a structural change of `inet <table>`."""
    name = table.encode()
    for kind, start, end in messages(data):
        subsystem, message = kind >> 8, kind & 0xFF
        if subsystem != NFNL_SUBSYS_NFTABLES or message not in STRUCTURAL:
            continue
        if end - start < _NFGENMSG.size or data[start] != NFPROTO_INET:
            continue
        for attribute, value in attributes(data, start + _NFGENMSG.size, end):
            if attribute == _NAME and value.rstrip(b"\0") == name:
                return True
    return False


class TableEvents(Subscription):
    """A subscription to the nftables events of one namespace (None: this one)."""

    def __init__(self, netns: str | None = None, buffer_bytes: int = 1 << 20) -> None:
        self._socket = open_socket(netns)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
            self._socket.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
        except OSError as exc:
            self._socket.close()
            raise NflogError(f"nftables events: {exc.strerror or exc}") from None

    def read(self, table: str = "netfence") -> bool:
        """Read what is pending without blocking; whether any of it (or a lost part: the
        kernel drops what overflows the buffer) may have changed the table."""
        changed = False
        while True:
            try:
                data = self._socket.recv(1 << 17, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return changed
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                changed = True  # events were lost: look
                continue
            changed = changed or touches(data, table)
