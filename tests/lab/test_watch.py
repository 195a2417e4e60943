"""`lab probe --watch`: the per-pair summary, the round-to-round diff and the frame drawn
from them (synthetic comparisons, no root), then a real lab whose policy changes between
two rounds (root)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from netfence.cli import app
from netfence.lab.compare import Comparison
from netfence.lab.probe import Probe, ProbeResult
from netfence.lab.watch import LEGEND, OUTSIDE, Round, abbreviate, changes, make_round, render
from tests.lab.manifests import write
from tests.lab.test_revoke import ALLOW, CLUSTER  # a server, a client, a policy between

AT = datetime(2024, 5, 1, 12, 0, 0)


def _c(
    src: str,
    dst: str,
    port: int,
    delivered: bool,
    expected: bool | None = None,
    protocol: str = "TCP",
    family: int = 4,
) -> Comparison:
    src_kind = "outside" if src[0].isdigit() else "pod"
    dst_kind = "outside" if dst[0].isdigit() else "pod"
    probe = Probe(
        src, dst, family, protocol, port, "a", "b", "10.0.0.1", "10.0.0.2", src_kind, dst_kind
    )
    result = ProbeResult(probe, delivered, "connected" if delivered else "timeout")
    return Comparison(result, delivered if expected is None else expected)


def _round(number: int, comparisons: list[Comparison]) -> Round:
    return make_round(number, comparisons, 1.5, AT)


def _text(frame: object, width: int = 120) -> str:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(frame)
    return console.export_text()


FIRST = [
    _c("app/a", "app/b", 80, True),
    _c("app/a", "app/b", 53, True, protocol="UDP"),
    _c("app/a", "app/c", 80, True),
    _c("app/c", "app/b", 80, False),
    _c("app/b", "203.0.113.9", 443, True),
    _c("203.0.113.9", "app/b", 80, False),
]


def test_cells_summarise_each_pair_and_group_the_outside() -> None:
    r = _round(1, FIRST)
    assert set(r.cells) == {
        ("app/a", "app/b"),
        ("app/a", "app/c"),
        ("app/c", "app/b"),
        ("app/b", OUTSIDE),
        (OUTSIDE, "app/b"),
    }
    ab = r.cells[("app/a", "app/b")]
    assert (ab.delivered, ab.total, ab.mismatches) == (2, 2, 0)
    assert r.cells[("app/c", "app/b")].delivered == 0
    assert r.probes == 6 and r.mismatches == ()


def test_first_round_has_no_changes() -> None:
    assert changes(None, _round(1, FIRST)) == []


def test_changes_name_the_flipped_services_only() -> None:
    second = [_c("app/a", "app/b", 80, False), *FIRST[1:]]  # 80/TCP revoked, 53/UDP kept
    found = changes(_round(1, FIRST), _round(2, second))
    assert [c.line() for c in found] == ["app/a -> app/b: 80/TCP IPv4 now blocked"]


def test_changes_report_engine_agreement_and_pairs_that_come_and_go() -> None:
    second = [
        *FIRST[:3],
        _c("app/c", "app/b", 80, False, expected=True),  # same outcome, engine now disagrees
        _c("app/b", "203.0.113.9", 443, True),
        _c("203.0.113.9", "app/b", 80, False),
        _c("app/d", "app/b", 80, True),  # a new pod
    ]
    lines = [c.line() for c in changes(_round(1, FIRST), _round(2, second))]
    assert lines == [
        "app/c -> app/b: 80/TCP IPv4 engine now disagrees",
        "app/d -> app/b: 80/TCP IPv4 new, delivered",
    ]
    back = [c.line() for c in changes(_round(2, second), _round(3, FIRST))]
    assert "app/d -> app/b: 80/TCP IPv4 no longer probed" in back


def test_outside_changes_name_the_address() -> None:
    second = [*FIRST[:4], _c("app/b", "203.0.113.9", 443, False), FIRST[5]]
    lines = [c.line() for c in changes(_round(1, FIRST), _round(2, second))]
    assert lines == ["app/b -> outside: 443/TCP IPv4 to 203.0.113.9 now blocked"]


def test_frame_shows_header_matrix_and_changes() -> None:
    second = [_c("app/a", "app/b", 80, False), *FIRST[1:]]
    text = _text(render(_round(2, second), _round(1, FIRST), 120, "demo"))
    lines = text.splitlines()
    assert "lab demo · round 2 · 12:00:00 · 6 probes in 1.5 s" in lines[0]
    assert "0 mismatch(es) · 1 pair(s) changed" in lines[0]
    # columns: destinations numbered like rows (a=1, b=2, c=3), then outside
    assert lines[1].split() == ["2", "3", "out"]
    rows = {line.split()[1]: line.split()[2:] for line in lines[2:6]}
    assert rows["app/a"] == ["◐", "●", "·"]  # to b: 80 blocked, 53 delivered; to c: all
    assert rows["app/b"] == ["·", "·", "●"]
    assert rows["app/c"] == ["○", "·", "·"]
    assert lines[5].split() == [OUTSIDE, "○", "·", "·"]
    assert "changed: app/a -> app/b: 80/TCP IPv4 now blocked" in text


def test_changed_cells_are_highlighted_and_mismatches_marked() -> None:
    revoked = _c("app/a", "app/b", 80, False)
    disagrees = _c("app/c", "app/b", 80, True, expected=False)
    second = [revoked, *FIRST[1:3], disagrees, *FIRST[4:]]
    console = Console(width=120, record=True, file=open(os.devnull, "w"), color_system="standard")  # noqa: SIM115
    console.print(render(_round(2, second), _round(1, FIRST), 120, "demo"))
    styled = console.export_text(styles=True, clear=False)
    cells = re.findall(r"\x1b\[([0-9;]*)m *([●◐○]!?) *\x1b\[0m", styled)
    reversed_ = sorted(glyph for codes, glyph in cells if "7" in codes.split(";"))
    assert reversed_ == ["●!", "◐"]  # exactly the two changed pairs
    assert ("32", "●") in cells  # app/a -> app/c: unchanged, all delivered, green
    text = console.export_text()
    assert "1 mismatch(es)" in text.splitlines()[0]
    assert "mismatch: MISMATCH app/c -> app/b 80/TCP IPv4: observed allowed" in text


def test_narrow_terminal_falls_back_to_the_list_of_changes() -> None:
    pods = [f"team-{i:02d}/backend-service-{i:02d}" for i in range(20)]
    cut = (pods[0], pods[1])
    first = _round(1, [_c(s, d, 80, True) for s in pods for d in pods if s != d])
    second = _round(2, [_c(s, d, 80, (s, d) != cut) for s in pods for d in pods if s != d])
    fits = 28 + 1 + 20 * 4  # abbreviated labels, then 20 columns of 3 characters and a space
    wide = _text(render(second, first, fits, "big"), fits).splitlines()
    assert len(wide) == 24  # header, column numbers, 20 rows, legend, one change
    assert max(len(line) for line in wide) <= fits
    assert wide[2].split()[:4] == ["1", "team-00/bac…nd-service-00", "·", "○"]
    assert wide[21].split()[:3] == ["20", "team-19/bac…nd-service-19", "●"]
    narrow = _text(render(second, first, fits - 1, "big"), fits - 1)
    assert "too narrow for the 20 x 20 matrix" in narrow
    assert f"changed: {cut[0]} -> {cut[1]}: 80/TCP IPv4 now blocked" in narrow
    assert "●" not in narrow


def test_abbreviate_keeps_both_ends() -> None:
    assert abbreviate("short", 10) == "short"
    cut = abbreviate("namespace-long/pod-name-xyz", 12)
    assert len(cut) == 12 and cut.startswith("namesp") and cut.endswith("z") and "…" in cut


def test_watch_rejects_json_output() -> None:
    result = CliRunner().invoke(app, ["lab", "probe", "--watch", "-o", "json"])
    assert result.exit_code == 2
    assert "--watch" in result.output


# -- root -----------------------------------------------------------------------------------


def test_watch_shows_a_policy_change_between_rounds(lab_name: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "m", CLUSTER % {"client": "client"}, ALLOW % {"allowed": "client"})
    up = CliRunner().invoke(app, ["lab", "up", str(folder), "--name", lab_name])
    assert up.exit_code == 0, up.output
    env = {**os.environ, "COLUMNS": "120", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "netfence", "lab", "probe", "--name", lab_name, "--watch"]
    watcher = subprocess.Popen(
        [*argv, "--rounds", "2", "--interval", "4"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert watcher.stdout is not None
        first = [watcher.stdout.readline()]
        while first[-1] and not first[-1].startswith(LEGEND):  # round 1 ends with the legend
            first.append(watcher.stdout.readline())
        # round 1 is drawn and the watcher sleeps: revoke the client's access now
        write(folder, CLUSTER % {"client": "client"}, ALLOW % {"allowed": "nobody"})
        applied = CliRunner().invoke(app, ["lab", "apply", str(folder), "--name", lab_name])
        assert applied.exit_code == 0, applied.output
        rest, _ = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0, [*first, rest]
    assert "round 1" in first[0] and "0 mismatch(es)" in first[0], first
    assert _row(first, "app/client") == {"app/server": "●", OUTSIDE: "●"}, first
    second = rest.splitlines()
    assert "round 2" in second[0] and "1 pair(s) changed" in second[0], rest
    assert _row(second, "app/client") == {"app/server": "○", OUTSIDE: "●"}, rest
    assert "changed: app/client -> app/server: 80/TCP IPv4 now blocked; " in rest
    assert "80/TCP IPv6 now blocked" in rest


def _row(lines: list[str], source: str) -> dict[str, str]:
    """One source's cells by destination, read with the column numbers of the frame."""
    columns = [{"out": OUTSIDE}.get(word, word) for word in lines[1].split()]
    numbered = {f"{i}": name for i, name in enumerate(sorted(["app/client", "app/server"]), 1)}
    for line in lines:
        words = line.split()
        if len(words) > 1 and words[1] == source:
            return {numbered.get(c, c): cell for c, cell in zip(columns, words[2:], strict=True)}
    raise AssertionError(f"no row for {source} in {lines}")
