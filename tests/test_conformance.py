"""The external corpus (../shared/conformance): every case passes or is a justified dispute.

Runs the corpus's own runner against the installed `netfence` and checks the three rules of
the engine issue: at least 95% of the cases pass; every failing case is listed, with a
reason, in tests/conformance-disputes.txt; no listed case passes (the list stays honest).
Outside CI a missing corpus skips; in CI it fails, since the corpus must be checked there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT.parent / "shared" / "conformance" / "run"
DISPUTES = Path(__file__).with_name("conformance-disputes.txt")
LINE = re.compile(r"^(PASS|FAIL|ERROR) (\S+)$")
GROUPS = ["networkpolicy", "adminnetworkpolicy"]


def disputes() -> dict[str, str]:
    found = {}
    for raw in DISPUTES.read_text().splitlines():
        if raw.strip() and not raw.startswith("#"):
            case, _, reason = raw.partition(" ")
            assert reason.strip(), f"dispute without a reason: {case}"
            found[case] = reason
    return found


def netfence_command() -> list[str]:
    exe = shutil.which("netfence", path=str(Path(sys.executable).parent)) or shutil.which(
        "netfence"
    )
    if exe is None:
        pytest.fail("the netfence command is not installed")
    return [exe, "list", "{manifests}", "-o", "txt"]


@pytest.mark.parametrize("group", GROUPS)
def test_corpus(group: str) -> None:
    if not RUNNER.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"conformance corpus missing at {RUNNER}: CI must run it")
        pytest.skip(f"no conformance corpus at {RUNNER}")
    proc = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--group",
            group,
            "--jobs",
            str(os.cpu_count() or 1),
            "--",
            *netfence_command(),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    results = {
        m.group(2): m.group(1) for m in (LINE.match(line) for line in proc.stdout.splitlines()) if m
    }
    assert results, f"the runner reported no case:\n{proc.stdout}\n{proc.stderr}"
    known = {case: why for case, why in disputes().items() if case.startswith(group + "/")}
    undisputed = sorted(c for c, status in results.items() if status != "PASS" and c not in known)
    stale = sorted(c for c in known if results.get(c) == "PASS")
    missing = sorted(c for c in known if c not in results)
    passed = sum(status == "PASS" for status in results.values())
    print(f"{group}: {passed}/{len(results)} passed, {len(known)} disputed")
    assert not undisputed, "failing and not disputed:\n" + _details(proc.stdout, undisputed)
    assert not stale, f"disputed but passing (remove from {DISPUTES.name}): {stale}"
    assert not missing, f"disputed cases not in the corpus: {missing}"
    assert passed >= 0.95 * len(results), f"only {passed}/{len(results)} cases pass"


def _details(output: str, cases: list[str]) -> str:
    """The runner's lines for the given cases, with their diff excerpts."""
    keep, lines = False, []
    for line in output.splitlines():
        match = LINE.match(line)
        if match:
            keep = match.group(2) in cases
        if keep:
            lines.append(line)
    return "\n".join(lines[:200])
