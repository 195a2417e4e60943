"""`netfence lab probe --watch`: the lab's connectivity as a matrix redrawn every round.

While policies are being written, the question is "what did my last change do?", which
thousands of probe lines answer poorly. So each round probes the whole lab again and
draws one cell per (source, destination) pair that summarises its probes (all ports and
protocols of both families delivered, some, or none), marks cells where the lab and the
engine disagree, and highlights cells that changed since the previous round; the changed
pairs and the disagreements are spelled out below the matrix.

Each round reloads the plan and the lab's manifest snapshot and holds the lab lock only
while it probes, so a `netfence lab apply` from another terminal lands between two rounds
and shows in the next one (a round that finds the lock taken waits for it).

On a terminal `rich.live.Live` redraws in place. To a pipe or a file (scripts, tests) every
round is printed after the previous one instead: Live writes only its last frame there.

Outside addresses are one endpoint, `outside`, in both directions: the pods are what a
policy author names, the outside ranges are detail (the changes list shows the address).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths
from netfence.lab import netns
from netfence.lab.compare import Comparison, compare
from netfence.lab.probe import Probe, plan_probes, run_probes
from netfence.lab.signals import interrupting
from netfence.lab.topology import LabError, check_name

OUTSIDE = "outside"
LABEL_WIDTH = 28  # row labels: "NN namespace/name", abbreviated in the middle beyond this
CELL_WIDTH = 3  # a glyph, the mismatch mark and room for two-digit column numbers
LIST_LIMIT = 12  # lines of changes or mismatches shown under the matrix
LOCK_RETRY = 0.2  # seconds between attempts while another lab command holds the lock
LEGEND = (
    "● all delivered  ◐ some  ○ none  · no probes  ! engine disagrees  "
    "reversed: changed since the last round"
)

Pair = tuple[str, str]
Outcome = tuple[bool, bool]  # (delivered, matches the engine)


def endpoint(name: str, kind: str) -> str:
    return name if kind == "pod" else OUTSIDE


def service(probe: Probe) -> str:
    """What distinguishes the probes of one pair: port, protocol, family and, for the
    outside endpoint, which address."""
    text = f"{probe.port}/{probe.protocol} IPv{probe.family}"
    if probe.src_kind == "outside":
        return f"{text} from {probe.src}"
    if probe.dst_kind == "outside":
        return f"{text} to {probe.dst}"
    return text


@dataclass(frozen=True, slots=True)
class Cell:
    """The probes of one (source, destination) pair, by service."""

    outcomes: tuple[tuple[str, Outcome], ...]  # sorted by service

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def delivered(self) -> int:
        return sum(delivered for _, (delivered, _) in self.outcomes)

    @property
    def mismatches(self) -> int:
        return sum(not matches for _, (_, matches) in self.outcomes)


@dataclass(frozen=True, slots=True)
class Round:
    number: int
    at: datetime
    seconds: float
    probes: int
    mismatches: tuple[str, ...]  # the comparisons' mismatch lines
    cells: dict[Pair, Cell]


def make_round(
    number: int, comparisons: Sequence[Comparison], seconds: float, at: datetime
) -> Round:
    grouped: dict[Pair, dict[str, Outcome]] = {}
    for c in comparisons:
        pair = (endpoint(c.probe.src, c.probe.src_kind), endpoint(c.probe.dst, c.probe.dst_kind))
        grouped.setdefault(pair, {})[service(c.probe)] = (c.result.delivered, c.matches)
    cells = {pair: Cell(tuple(sorted(by.items()))) for pair, by in grouped.items()}
    bad = tuple(c.mismatch_line() for c in comparisons if not c.matches)
    return Round(number, at, seconds, len(comparisons), bad, cells)


@dataclass(frozen=True, slots=True)
class Change:
    """What became different for one pair since the previous round."""

    pair: Pair
    notes: tuple[str, ...]  # "80/TCP IPv4 now blocked", ...

    def line(self) -> str:
        return f"{self.pair[0]} -> {self.pair[1]}: " + "; ".join(self.notes)


def changes(previous: Round | None, current: Round) -> list[Change]:
    """Pairs whose probes came out differently (or whose agreement with the engine did),
    appeared or disappeared. Nothing has changed in the first round."""
    if previous is None:
        return []
    out = []
    for pair in sorted(previous.cells.keys() | current.cells.keys()):
        before = dict(previous.cells[pair].outcomes) if pair in previous.cells else {}
        after = dict(current.cells[pair].outcomes) if pair in current.cells else {}
        notes = [
            note
            for name in sorted(before.keys() | after.keys())
            if (note := _note(name, before.get(name), after.get(name)))
        ]
        if notes:
            out.append(Change(pair, tuple(notes)))
    return out


def _note(name: str, before: Outcome | None, after: Outcome | None) -> str:
    if before == after:
        return ""
    if after is None:
        return f"{name} no longer probed"
    word = "delivered" if after[0] else "blocked"
    if before is None:
        return f"{name} new, {word}"
    if before[0] != after[0]:
        return f"{name} now {word}" + ("" if after[1] else " (engine disagrees)")
    return f"{name} engine now " + ("agrees" if after[1] else "disagrees")


# -- rendering ----------------------------------------------------------------------------


def abbreviate(text: str, width: int) -> str:
    """Cut the middle: a pod's namespace and the end of its name tell pods apart best."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep - keep // 2] + "…" + text[len(text) - keep // 2 :]


def _order(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda n: (n == OUTSIDE, n))


def _glyph(cell: Cell | None, changed: bool) -> Text:
    if cell is None:
        return Text("·", style="dim")
    if cell.delivered == cell.total:
        glyph, style = "●", "green"
    elif cell.delivered:
        glyph, style = "◐", "yellow"
    else:
        glyph, style = "○", "red"
    if cell.mismatches:
        glyph, style = glyph + "!", f"bold {style}"
    return Text(glyph, style=f"{style} reverse" if changed else style)


@dataclass(frozen=True, slots=True)
class Layout:
    """Who is a row, who a column, and the row labels. Columns are numbered like the rows
    they share a name with, so 20 pods fit in 80-odd characters; `outside` comes last."""

    sources: list[str]
    targets: list[str]
    numbers: dict[str, str]

    @classmethod
    def of(cls, current: Round) -> Layout:
        sources = _order({src for src, _ in current.cells})
        targets = _order({dst for _, dst in current.cells})
        numbers = {name: str(i) for i, name in enumerate(_order({*sources, *targets}), 1)}
        numbers[OUTSIDE] = "out"
        return cls(sources, targets, numbers)

    def label(self, source: str) -> str:
        text = source if source == OUTSIDE else f"{self.numbers[source]:>2} {source}"
        return abbreviate(text, LABEL_WIDTH)

    @property
    def width(self) -> int:
        """Characters the matrix needs: every column is followed by a space."""
        labels = max((len(self.label(s)) for s in self.sources), default=0)
        return labels + 1 + len(self.targets) * (CELL_WIDTH + 1)


def matrix(current: Round, layout: Layout, changed: set[Pair]) -> Table:
    table = Table(box=None, padding=(0, 1, 0, 0), show_edge=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    for dst in layout.targets:
        table.add_column(layout.numbers[dst], justify="center", width=CELL_WIDTH, no_wrap=True)
    for src in layout.sources:
        cells = [
            _glyph(current.cells.get((src, dst)), (src, dst) in changed) for dst in layout.targets
        ]
        table.add_row(layout.label(src), *cells)
    return table


def render(current: Round, previous: Round | None, width: int, lab: str) -> RenderableType:
    """One frame: a header, the matrix (or, on a terminal too narrow for it, the list of
    changed pairs only), then what changed and where the engine disagrees."""
    found = changes(previous, current)
    header = Text(
        f"lab {lab} · round {current.number} · {current.at:%H:%M:%S} · "
        f"{current.probes} probes in {current.seconds:.1f} s · "
        f"{len(current.mismatches)} mismatch(es) · {len(found)} pair(s) changed",
        style="bold red" if current.mismatches else "bold",
    )
    parts: list[RenderableType] = [header]
    layout = Layout.of(current)
    if layout.width <= width:
        parts.append(matrix(current, layout, {c.pair for c in found}))
        parts.append(Text(LEGEND, style="dim"))
    else:
        size = f"{len(layout.sources)} x {len(layout.targets)}"
        parts.append(Text(f"(terminal too narrow for the {size} matrix)", style="dim"))
    parts += _listed("changed", [c.line() for c in found])
    parts += _listed("mismatch", list(current.mismatches), style="red")
    return Group(*parts)


def _listed(title: str, lines: list[str], style: str = "") -> list[RenderableType]:
    shown: list[RenderableType] = [
        Text(f"{title}: {line}", style=style) for line in lines[:LIST_LIMIT]
    ]
    if len(lines) > LIST_LIMIT:
        shown.append(Text(f"... and {len(lines) - LIST_LIMIT} more", style="dim"))
    return shown


# -- probing ------------------------------------------------------------------------------


@contextlib.contextmanager
def _lock_when_free(name: str) -> Iterator[None]:
    """The lab lock, waiting while another command (a `lab apply`) holds it. The name is
    checked first, so the only LabError left from `locked` is a busy lock."""
    check_name(name)
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(netns.locked(name))
                break
            except LabError:
                time.sleep(LOCK_RETRY)
        yield


def probe_lab(name: str, wait: bool = False) -> tuple[list[Comparison], float]:
    """Probe the running lab as it is now; the comparisons and the probing time (s).
    `wait`: wait for the lab lock instead of failing when another command holds it."""
    with _lock_when_free(name) if wait else netns.locked(name):
        plan = netns.load_plan(name)
        state = ClusterState.build(load_paths([netns.manifests_dir(name)]), fail_closed=True)
        start = time.monotonic()
        results = run_probes(plan_probes(plan))
        seconds = time.monotonic() - start
    return compare(plan, state, results), seconds


def watch(name: str, console: Console, interval: float, rounds: int | None = None) -> int:
    """Probe and redraw every `interval` seconds (from the start of one round to the
    next), for `rounds` rounds or until Ctrl-C/SIGTERM. Exit status: 1 if the last
    complete round had mismatches, else 0."""
    last: Round | None = None
    number = 0
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    try:
        with interrupting(), live or contextlib.nullcontext():
            while rounds is None or number < rounds:
                number += 1
                started = time.monotonic()
                comparisons, seconds = probe_lab(name, wait=True)
                current = make_round(number, comparisons, seconds, datetime.now())
                frame = render(current, last, console.width, name)
                if live is not None:
                    live.update(frame, refresh=True)
                else:
                    console.print(frame)
                last = current
                if rounds is None or number < rounds:
                    time.sleep(max(0.0, started + interval - time.monotonic()))
    except KeyboardInterrupt:
        pass
    return 1 if last is not None and last.mismatches else 0
