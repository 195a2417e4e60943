"""Root lab tests: skipped without root or namespaces, but in CI (CI=true) they must run.

Every lab a test makes gets a fresh name `lt<hex>` and is torn down afterwards whatever
happens, and the teardown checks that nothing of it is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from netfence.lab import listeners, netns


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft", "sysctl"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command"
    probe = f"nf-lt{uuid.uuid4().hex[:8]}-check"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def require_lab() -> None:
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the lab tests but this machine {reason}")
        pytest.skip(reason)


def leftovers(name: str) -> list[str]:
    """What a removed lab must not leave: namespaces, listeners, state."""
    found = [f"namespace {ns}" for ns in netns.lab_namespaces(name)]
    prefix = f"nf-{name}-"
    found += [
        f"listener {pid} in {ns}" for pid, ns in _all_listeners().items() if ns.startswith(prefix)
    ]
    if netns.state_dir(name).exists():
        found.append(f"state {netns.state_dir(name)}")
    return found


def _all_listeners() -> dict[int, str]:
    try:
        names = [n for n in os.listdir("/run/netns") if n.startswith("nf-")]
    except FileNotFoundError:
        return {}
    return listeners.listener_pids(names)


@pytest.fixture
def lab_name() -> Iterator[str]:
    """A fresh lab name; the lab, if any, is removed afterwards and checked gone."""
    require_lab()
    name = f"lt{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        netns.down(name)
        (netns.STATE_ROOT / f".{name}.lock").unlink(missing_ok=True)  # from CLI commands
        assert leftovers(name) == []
