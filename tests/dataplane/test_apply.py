"""Loading tables into a real kernel, inside a throw-away `nf-` namespace, through both
backends (libnftables in a worker thread, the `nft` command)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator

import pytest

from netfence.cluster.state import ClusterState
from netfence.dataplane.apply import (
    ApplyError,
    Nftables,
    apply_ruleset,
    check_ruleset,
    default_backend,
    list_table,
)
from netfence.dataplane.compile import compile_node
from netfence.k8s.loader import load_paths
from tests.dataplane.test_compile import _place


def seed_state() -> ClusterState:
    return _place(ClusterState.build(load_paths(["examples/seed"])))


@pytest.fixture(params=["libnftables", "nft command"])
def nft(request: pytest.FixtureRequest, netns: str) -> Iterator[Nftables]:
    """An `Nftables` in the test namespace with each backend; libnftables is required in CI
    (scripts/setup installs it)."""
    library = request.param == "libnftables"
    if library and default_backend() != "libnftables":
        if os.environ.get("CI") == "true":
            pytest.fail("CI must test the libnftables backend but libnftables.so.1 is missing")
        pytest.skip("libnftables.so.1 is not installed")
    with Nftables(netns, library=library) as nft:
        assert nft.backend == request.param
        yield nft


SET = "table inet netfence {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n"


def test_seed_table_loads_and_replaces_atomically(nft: Nftables) -> None:
    script = compile_node(seed_state(), "n0")
    nft.check(script)
    nft.apply(script)
    first = nft.list_table()
    assert "10.244.1.10" in first and "chain forward" in first
    nft.apply(script)  # replacing the table with itself is a no-op in effect
    assert nft.list_table() == first


def test_failed_load_keeps_previous_rules(nft: Nftables) -> None:
    nft.apply(compile_node(seed_state(), "n0"))
    before = nft.list_table()
    broken = compile_node(seed_state(), "n1").replace("type ipv4_addr : mark", "type nonsense", 1)
    with pytest.raises(ApplyError, match="nft -f -"):
        nft.apply(broken)
    assert nft.list_table() == before


def test_element_transaction_with_a_bad_second_command_changes_nothing(nft: Nftables) -> None:
    """The first command is fine on its own; the kernel refuses the second (no such set),
    and the error names its line."""
    nft.apply(SET)
    script = "add element inet netfence s { 10.9.0.1 }\nadd element inet netfence t { 10.9.0.2 }\n"
    with pytest.raises(ApplyError, match=r"failed in nf-\w+: \S+:2:27-27: Error: "):
        nft.apply(script)
    assert nft.list_table() == SET
    nft.apply(script.splitlines()[0])
    assert "10.9.0.1" in nft.list_table()


def test_check_applies_nothing_and_reports(nft: Nftables) -> None:
    nft.apply(SET)
    nft.check("add element inet netfence s { 10.9.0.1 }")
    assert nft.list_table() == SET
    with pytest.raises(ApplyError, match=r"nft -c -f - failed.*syntax error"):
        nft.check("add element inet netfence s { 10.9.0.1 ")
    with pytest.raises(ApplyError, match="nft list table inet absent failed"):
        nft.list_table("absent")
    with pytest.raises(ValueError, match="invalid table name"):
        nft.list_table("x; flush ruleset")


def test_backends_see_the_same_namespace(nft: Nftables, netns: str) -> None:
    """What one backend loads, the other lists: the worker thread really is in the test
    namespace (and the calling thread is not moved)."""
    here = os.readlink("/proc/thread-self/ns/net")
    nft.apply(SET)
    assert os.readlink("/proc/thread-self/ns/net") == here
    for library in (False, None):
        with Nftables(netns, library=library) as other:
            assert other.list_table() == SET


def test_concurrent_callers_are_serialised(nft: Nftables) -> None:
    """Many threads share one `Nftables`; every transaction lands exactly once."""
    nft.apply(SET)
    count = 16 if nft.backend == "nft command" else 200
    failures: list[BaseException] = []

    def add(i: int) -> None:
        try:
            nft.apply(f"add element inet netfence s {{ 10.9.{i // 250}.{i % 250 + 1} }}")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    listed = set(re.findall(r"10\.9\.\d+\.\d+", nft.list_table()))
    assert len(listed) == count


def test_shape_and_rules_ignore_elements_and_counters(nft: Nftables) -> None:
    """The agent's drift check: a table hit by traffic (counters) or changed by elements
    keeps its declarations and rules; a rule added changes the rules, a set or the table
    deleted the declarations. Other tables are not part of either."""
    nft.apply(
        "table inet netfence {\n set s { type ipv4_addr; }\n map m { type mark : mark; }\n"
        " chain c { type filter hook input priority 0; policy accept;\n"
        "  counter packets 5 bytes 7 drop; }\n}\n"
        "table inet other {\n set o { type ipv4_addr; }\n}\n"
    )
    shape, rules = nft.table_shape(), nft.table_rules()
    assert "set s" in shape and "map m" in shape and "chain c" in shape and "other" not in shape
    assert "counter drop" in rules
    nft.apply("add element inet netfence s { 192.0.2.1 }\nadd element inet netfence m { 1 : 2 }\n")
    nft.apply("add element inet other o { 192.0.2.9 }\ndelete table inet other\n")
    full = nft.list_table()
    assert "192.0.2.1" in full and "packets 5" in full
    assert (nft.table_shape(), nft.table_rules()) == (shape, rules)
    assert "192.0.2.1" not in rules and "packets" not in rules
    nft.apply("add rule inet netfence c ip saddr 192.0.2.2 accept\n")
    assert nft.table_shape() == shape and nft.table_rules() != rules
    nft.apply("delete map inet netfence m\n")
    assert nft.table_shape() != shape
    nft.apply("delete table inet netfence\n")
    assert nft.table_shape() == ""
    with pytest.raises(ApplyError):
        nft.table_rules()


def test_missing_namespace_is_an_apply_error(nft: Nftables) -> None:
    library = nft.backend == "libnftables"
    with (
        Nftables("nf-no-such-namespace", library=library) as absent,
        pytest.raises(ApplyError, match="nf-no-such-namespace"),
    ):
        absent.apply(SET)


def test_close_stops_the_worker(nft: Nftables) -> None:
    nft.apply(SET)
    before = threading.active_count()
    nft.close()
    assert threading.active_count() == before - (nft.backend == "libnftables")
    with pytest.raises(RuntimeError, match="closed"):
        nft.apply(SET)


def test_module_functions_use_a_short_lived_context(netns: str) -> None:
    script = compile_node(seed_state(), "n0")
    check_ruleset(netns, script)
    apply_ruleset(netns, script)
    assert "chain forward" in list_table(netns)
    before = threading.active_count()
    apply_ruleset(netns, script)
    assert threading.active_count() == before  # its worker is gone


def test_odd_names_cannot_change_the_ruleset(netns: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A policy and pods whose names look like nft syntax give the same table as tame ones."""
    template = """
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: {ns}, labels: {{app: {label}}}}}
spec: {{containers: [{{name: c, ports: [{{name: web, containerPort: 80}}]}}]}}
status: {{podIP: 10.244.0.10}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {policy}, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: {label}}}}}
  ingress: [{{ports: [{{port: web}}]}}]
"""
    odd = tmp_path / "odd.yaml"
    odd.write_text(
        template.format(
            pod="drop.accept", ns="flush", label="counter_drop", policy="delete.table.inet"
        )
    )
    tame = tmp_path / "tame.yaml"
    tame.write_text(template.format(pod="a", ns="b", label="c", policy="d"))
    scripts = []
    for path in (odd, tame):
        state = ClusterState.build(load_paths([path]))
        assert not state.problems
        state = _place(state, nodes=1)
        scripts.append(compile_node(state, "n0"))
    # The ids are hashes of what they stand for, so they differ; up to a consistent
    # renaming of the numbers the two tables are the same, byte for byte.
    assert _numbered(scripts[0]) == _numbered(scripts[1])
    apply_ruleset(netns, scripts[0])


def _numbered(script: str) -> str:
    """Numbers (ids, tags) renamed in order of first appearance."""
    names: dict[str, str] = {}
    return re.sub(
        r"\b(?:0x[0-9a-f]+|[0-9]{4,})\b",
        lambda m: names.setdefault(m.group(0), f"#{len(names)}"),
        script,
    )
