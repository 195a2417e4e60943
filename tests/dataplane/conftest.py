"""Root and namespace capability for dataplane tests: skip outside CI, fail loudly in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh `nf-` network namespace, always deleted afterwards."""
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the dataplane tests but this machine {reason}")
        pytest.skip(reason)
    name = f"nf-t{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
