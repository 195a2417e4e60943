"""Shared helpers: build a ClusterState from YAML text and ask it questions by name.

The standard model follows the Kubernetes e2e network policy suite: namespaces x, y, z
(labelled `ns: <name>`), pods a, b, c in each (labelled `pod: <name>`), every pod serving
ports 80 and 81 on TCP, UDP and SCTP under the port names `serve-80-tcp`, `serve-81-udp`...
Pod x/a has the address 192.168.1.1, y/b 192.168.2.2 and so on (namespace x=1, y=2, z=3;
pod a=1, b=2, c=3).
"""

from __future__ import annotations

import ipaddress
import textwrap

from netfence.analysis.connlist import connectivity
from netfence.cluster.state import ClusterState, Pod
from netfence.k8s.loader import load_text
from netfence.policy.engine import Engine, HostNetworkMode

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PROTOCOLS = ("TCP", "UDP", "SCTP")
PORTS = (80, 81)


def pod_ip(namespace: str, pod: str) -> str:
    return f"192.168.{NAMESPACES.index(namespace) + 1}.{PODS.index(pod) + 1}"


def model_yaml(namespaces: tuple[str, ...] = NAMESPACES, pods: tuple[str, ...] = PODS) -> str:
    """The e2e model as YAML: Namespace objects and Pods with named ports and addresses."""
    docs = []
    for ns in namespaces:
        docs.append(
            f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n"
        )
        for pod in pods:
            containers = "".join(
                f"  - name: cont-{port}-{proto.lower()}\n"
                f"    ports:\n"
                f"    - name: serve-{port}-{proto.lower()}\n"
                f"      containerPort: {port}\n"
                f"      protocol: {proto}\n"
                for port in PORTS
                for proto in PROTOCOLS
            )
            docs.append(
                "apiVersion: v1\nkind: Pod\n"
                f"metadata:\n  name: {pod}\n  namespace: {ns}\n  labels:\n    pod: {pod}\n"
                f"spec:\n  containers:\n{containers}"
                f"status:\n  podIP: {pod_ip(ns, pod)}\n"
            )
    return "---\n".join(docs)


def build(text: str, *, model: bool = False, allow_problems: bool = False) -> ClusterState:
    """A ClusterState from YAML text (dedented); `model=True` prepends the e2e model.

    Unless `allow_problems`, the input must load and validate without any problem, so a
    typo in a test's YAML fails loudly instead of silently dropping a policy.
    """
    text = textwrap.dedent(text)
    if model:
        text = model_yaml() + ("---\n" + text if text.strip() else "")
    state = ClusterState.build(load_text(text, "test.yaml"))
    if not allow_problems:
        assert state.problems == [], [str(p) for p in state.problems]
    return state


def find_pod(state: ClusterState, key: str) -> Pod:
    namespace, _, name = key.partition("/")
    found = [p for p in state.pods if p.namespace == namespace and p.name == name]
    assert len(found) == 1, f"expected exactly one pod {key}, found {len(found)}"
    return found[0]


def endpoint(state: ClusterState, key: str) -> Pod | ipaddress.IPv4Address | ipaddress.IPv6Address:
    """`ns/name` is a pod; anything else is read as an external IP address."""
    if "/" in key:
        return find_pod(state, key)
    return ipaddress.ip_address(key)


def conns(state: ClusterState, src: str, dst: str, host_network: HostNetworkMode = "pod") -> str:
    """What `src` may open to `dst` as the connlist string (`No Connections` when none)."""
    engine = Engine(state, host_network=host_network)
    return str(engine.verdict(endpoint(state, src), endpoint(state, dst)).conns)


def allows(state: ClusterState, src: str, dst: str, port: int, protocol: str = "TCP") -> bool:
    engine = Engine(state)
    return engine.verdict(endpoint(state, src), endpoint(state, dst)).allows(protocol, port)


def assert_conns(
    state: ClusterState, expected: dict[tuple[str, str], str], host_network: HostNetworkMode = "pod"
) -> None:
    """Every (src, dst) in `expected` gets exactly that conns string; all mismatches shown."""
    actual = {pair: conns(state, *pair, host_network=host_network) for pair in expected}
    assert actual == expected


def matrix(state: ClusterState, keys: list[str] | None = None) -> dict[tuple[str, str], str]:
    """conns() for every ordered pair of distinct pods (or of `keys`)."""
    keys = keys or [p.key for p in state.pods]
    return {(s, d): conns(state, s, d) for s in keys for d in keys if s != d}


def connlist(state: ClusterState) -> dict[tuple[str, str], str]:
    """The whole-cluster list as {(src peer, dst peer): conns string}."""
    result: dict[tuple[str, str], str] = {}
    for conn in connectivity(state):
        key = (str(conn.src), str(conn.dst))
        assert key not in result, f"pair listed twice: {key}"
        result[key] = str(conn.conns)
    return result
