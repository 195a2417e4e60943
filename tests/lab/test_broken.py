"""The seed's YAML mistake, enforced for real: the rejected policy's selector is what is
wrong, so the lab isolates every pod of its namespace (granting none of its allowances),
the other policies keep working, and the probes match the engine's view of what is
enforced (zero mismatches)."""

from __future__ import annotations

from typer.testing import CliRunner

from netfence.cli import app
from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths
from netfence.lab import netns
from netfence.lab.compare import compare, mismatches
from netfence.lab.probe import plan_probes, run_probes


def test_the_seed_mistake_closes_production_in_the_lab(lab_name: str) -> None:
    up = CliRunner().invoke(app, ["lab", "up", "examples/seed-broken", "--name", lab_name])
    assert up.exit_code == 0, up.output
    plan = netns.load_plan(lab_name)
    state = ClusterState.build(load_paths([netns.manifests_dir(lab_name)]), fail_closed=True)
    results = run_probes(plan_probes(plan))
    assert [c.mismatch_line() for c in mismatches(compare(plan, state, results))] == []
    into_production = {
        (r.probe.src, r.probe.dst)
        for r in results
        if r.delivered and r.probe.dst.startswith("production/")
    }
    # What the broken policy would have opened (staging/client -> web-server 8000) stays
    # shut; production's own valid policies still let its pods talk to each other.
    assert into_production
    assert all(src.startswith("production/") for src, _ in into_production), into_production
    assert any(r.delivered and r.probe.dst.startswith("staging/") for r in results)
