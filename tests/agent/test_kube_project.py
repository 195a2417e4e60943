"""The API source's pieces that need no API server: projection of raw JSON, backoff."""

from __future__ import annotations

import ipaddress
import json

import yaml

from netfence.cluster.state import (
    HOSTNAME_LABEL,
    NAMESPACE_NAME_LABEL,
    ClusterPolicy,
    ClusterState,
    Namespace,
    Node,
    Policy,
)
from netfence.k8s.loader import load_text
from netfence.sources.changes import Change
from netfence.sources.kube import Backoff, KubeSource, _Held, _key, project

POD = """
metadata:
  name: web-1
  namespace: shop
  uid: 5d1c6c6e-0000-0000-0000-000000000000
  resourceVersion: "4711"
  labels: {app: web, pod-template-hash: 5d8f7c9b6f}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f7c9b6f, uid: x, controller: true}
  managedFields: [{manager: kubelet, operation: Update, fieldsV1: {f:status: {}}}]
spec:
  nodeName: node-3
  containers:
  - name: web
    image: nginx
    ports: [{name: http, containerPort: 8080}, {containerPort: 9090, protocol: UDP}]
status:
  phase: Running
  podIP: 10.0.3.7
  podIPs: [{ip: 10.0.3.7}, {ip: "fd00::3:7"}]
  conditions: [{type: Ready, status: "True"}]
"""


def test_a_pod_is_the_record_a_file_gives() -> None:
    """List items come without `kind`; the record equals the one from the same manifest."""
    raw = yaml.safe_load(POD)
    key, record, problems = project("Pod", json.loads(json.dumps(raw)))
    [expected] = ClusterState.build(load_text("kind: Pod\n" + POD, file="")).pods
    assert (key, record, problems) == ("shop/web-1", expected, ())


def test_a_namespace_carries_its_name_label() -> None:
    raw = {"metadata": {"name": "shop", "labels": {"team": "a"}}, "status": {"phase": "Active"}}
    assert project("Namespace", raw) == (
        "shop",
        Namespace("shop", {"team": "a", NAMESPACE_NAME_LABEL: "shop"}),
        (),
    )


def test_a_policy_this_netfence_cannot_read_fails_closed_with_the_file_problem() -> None:
    """A newer API server may return a field netfence does not know: reject, do not guess,
    and enforce it closed: the pods it selects are isolated with no rule."""
    manifest = """
metadata: {name: p, namespace: shop}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}], newPeerKind: {}}]
"""
    key, record, problems = project("NetworkPolicy", yaml.safe_load(manifest))
    expected = ClusterState.build(
        load_text("kind: NetworkPolicy\n" + manifest, file=""), fail_closed=True
    ).problems
    assert key == "shop/p"
    assert isinstance(record, Policy) and record.closed
    assert not record.spec.ingress and record.spec.policy_types == ["Ingress", "Egress"]
    assert list(problems) == expected
    assert [(p.obj, p.path, p.severity) for p in problems if p.severity == "error"] == [
        ("NetworkPolicy shop/p", "spec.ingress[0].newPeerKind", "error")
    ]
    assert [p.code for p in problems if p.severity == "warning"] == ["fails-closed"]


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(initial=0.5, cap=8.0)
    delays = [backoff.next_delay() for _ in range(40)]
    ceilings = [min(8.0, 0.5 * 2**i) for i in range(40)]
    assert all(ceiling / 2 <= d <= ceiling for d, ceiling in zip(delays, ceilings, strict=True))
    assert len(set(delays)) > 30  # jittered: agents do not retry in step
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_watch_events_move_the_resource_version_and_change_only_what_changed() -> None:
    """Bookmarks (kube-apiserver 1.20 sends one about every minute) only move the version a
    watch resumes from; a status update that policy does not see changes nothing."""
    source = KubeSource(api=None)  # type: ignore[arg-type]  (no request is made)
    held = _Held(version="10")
    raw = yaml.safe_load(POD)
    bookmark = {"kind": "Pod", "metadata": {"resourceVersion": "12"}}
    assert source._event("Pod", held, {"type": "BOOKMARK", "object": bookmark}) is None
    assert held.version == "12"
    step = source._event("Pod", held, {"type": "ADDED", "object": raw})
    assert step is not None and [c.key for c in step.changes] == ["shop/web-1"]
    raw["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    raw["metadata"]["resourceVersion"] = "13"
    assert source._event("Pod", held, {"type": "MODIFIED", "object": raw}) is None
    assert held.version == "13"
    step = source._event("Pod", held, {"type": "DELETED", "object": raw})
    assert step is not None and step.changes == (Change.delete("Pod", "shop/web-1"),)
    assert source.stats.bookmarks["Pod"] == 1 and source.stats.events["Pod"] == 4


NODE = """
metadata:
  name: node-3
  resourceVersion: "77"
  labels: {kubernetes.io/hostname: node-3, topology.kubernetes.io/zone: z1}
  annotations: {node.alpha.kubernetes.io/ttl: "0"}
spec: {podCIDR: 10.0.3.0/24, providerID: "kind://docker/kind/node-3"}
status:
  addresses:
  - {type: InternalIP, address: 172.18.0.3}
  - {type: InternalIP, address: "fc00:f853:ccd:e793::3"}
  - {type: Hostname, address: node-3}
  - {type: InternalDNS, address: node-3.internal}
  capacity: {cpu: "8", memory: 16Gi}
  images: [{names: [registry.k8s.io/pause:3.9], sizeBytes: 300000}]
"""
ANP = """
metadata: {name: no-metadata, resourceVersion: "9"}
spec:
  priority: 5
  subject: {namespaces: {}}
  egress: [{action: Deny, to: [{networks: [169.254.169.254/32]}]}]
"""


def test_a_node_is_its_labels_ip_addresses_and_pod_ranges() -> None:
    key, record, problems = project("Node", yaml.safe_load(NODE))
    assert (key, problems) == ("node-3", ())
    assert record == Node(
        "node-3",
        {HOSTNAME_LABEL: "node-3", "topology.kubernetes.io/zone": "z1"},
        (ipaddress.ip_address("172.18.0.3"), ipaddress.ip_address("fc00:f853:ccd:e793::3")),
        pod_cidrs=(ipaddress.ip_network("10.0.3.0/24"),),
    )


def test_a_cluster_policy_is_keyed_by_kind_and_is_the_record_a_file_gives() -> None:
    raw = yaml.safe_load(ANP)
    key, record, problems = project("AdminNetworkPolicy", raw)
    manifest = load_text("kind: AdminNetworkPolicy\n" + ANP, file="")
    [expected] = ClusterState.build(manifest).cluster_policies
    assert (key, record, problems) == ("AdminNetworkPolicy/no-metadata", expected, ())
    assert _key("ClusterNetworkPolicy", raw) == "ClusterNetworkPolicy/no-metadata"
    assert Change.upsert(expected).key == key  # the change's key is the watch's


def test_a_cluster_policy_this_netfence_rejects_fails_closed() -> None:
    raw = yaml.safe_load(ANP.replace("169.254.169.254/32", "fe80::/129"))
    key, record, problems = project("AdminNetworkPolicy", raw)
    assert key == "AdminNetworkPolicy/no-metadata"
    assert isinstance(record, ClusterPolicy) and record.closed
    assert [(p.code, p.path) for p in problems] == [
        ("invalid-cidr", "spec.egress[0].to[0].networks[0]"),
        ("fails-closed", ""),
    ]
