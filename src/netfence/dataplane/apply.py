"""Loading a compiled ruleset into the kernel, in one nftables transaction.

`nft -f -` applies a whole script atomically: either every command takes effect or none
does, so a script that fails (a kernel without a feature, a bug) leaves the previous rules
in force. The namespace is entered with `ip netns exec`, which also gives `nft` the
namespace's own view of sysctls and conntrack; None means the current namespace.
"""

from __future__ import annotations

import subprocess


class ApplyError(RuntimeError):
    """nft refused the script; the previous ruleset is still in force."""


def _nft(netns: str | None, args: list[str], script: str | None = None) -> str:
    argv = (["ip", "netns", "exec", netns] if netns else []) + ["nft", *args]
    proc = subprocess.run(
        argv, input=script, capture_output=True, text=True, check=False, timeout=120
    )
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[0]
        raise ApplyError(f"nft {' '.join(args)} failed in {netns or 'this namespace'}: {first}")
    return proc.stdout


def apply_ruleset(netns: str | None, script: str) -> None:
    """Replace the table with the script's, atomically."""
    _nft(netns, ["-f", "-"], script)


def check_ruleset(netns: str | None, script: str) -> None:
    """Parse and validate against the kernel without applying (`nft -c`)."""
    _nft(netns, ["-c", "-f", "-"], script)


def list_table(netns: str | None, table: str = "netfence") -> str:
    return _nft(netns, ["list", "table", "inet", table])
