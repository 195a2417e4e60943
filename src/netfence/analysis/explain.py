"""`explain`: the verdict for one source and destination, and exactly why.

For each side (the source's egress, the destination's ingress) it says whether the pod is
isolated and by which policies, then which rules select the peer and what each allows.
When nothing allows the asked port, the isolating policies are the answer, along with the
rules that select the peer but on other ports, which is usually the mistake people look for.

With cluster-wide policies, rules are listed in evaluation order with their tier and action,
and for an asked port each side names what decided it: the admin rule that allowed or denied
it (or passed it on), the NetworkPolicies that then allowed it or left it denied, the baseline
rule, or the default allow when no rule decided.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netfence.analysis.connlist import Peer
from netfence.cluster.state import ClusterState, Pod
from netfence.policy.engine import (
    Contribution,
    DirectionVerdict,
    Endpoint,
    Engine,
    Verdict,
    endpoint_name,
)
from netfence.policy.ir import AnyPolicy, Rule, TierPolicy


class EndpointError(ValueError):
    """An endpoint the user named cannot be found or parsed."""


@dataclass(frozen=True)
class Explanation:
    verdict: Verdict
    port: tuple[str, int] | None
    notes: tuple[str, ...]
    engine: Engine

    @property
    def allowed(self) -> bool:
        if self.port is None:
            return bool(self.verdict.conns)
        return self.verdict.allows(*self.port)


def resolve_endpoint(state: ClusterState, text: str) -> tuple[Endpoint, list[str]]:
    """`ns/name` (a pod or a workload), `name` (in default), an IP, or a CIDR."""
    notes: list[str] = []
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is None and "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            net = None
        if net is not None:
            ip = net.network_address
            notes.append(f"{text} is evaluated at its first address, {ip}")
    if ip is not None:
        owners = state.pods_by_ip.get(ip, [])
        if owners:
            notes.append(f"{ip} is the address of pod {owners[0].key}")
            return owners[0], notes
        return ip, notes
    namespace, _, name = text.rpartition("/")
    namespace = namespace or "default"
    pods = state.find_pods(namespace, name)
    if not pods:
        known = sorted({p.owner.name for p in state.pods_by_namespace.get(namespace, [])})
        hint = f"; workloads there: {', '.join(known[:10])}" if known else ""
        raise EndpointError(f"no pod or workload named {name!r} in namespace {namespace!r}{hint}")
    if len(pods) > 1:
        notes.append(f"{namespace}/{name} has {len(pods)} pods; showing {pods[0].key}")
    return pods[0], notes


def explain(
    engine: Engine, src_text: str, dst_text: str, port: tuple[str, int] | None = None
) -> Explanation:
    src, src_notes = resolve_endpoint(engine.state, src_text)
    dst, dst_notes = resolve_endpoint(engine.state, dst_text)
    if not isinstance(src, Pod) and not isinstance(dst, Pod):
        raise EndpointError("at least one of --from and --to must be a pod or workload")
    return Explanation(engine.verdict(src, dst), port, tuple(src_notes + dst_notes), engine)


def _who(endpoint: Endpoint) -> str:
    if isinstance(endpoint, Pod):
        return f"pod {endpoint.key} ({Peer.of_pod(endpoint)})"
    return f"address {endpoint}"


def describe_rule(rule: Rule) -> str:
    peers = "everyone" if rule.peers is None else "; ".join(str(p) for p in rule.peers)
    ports = "all ports" if rule.ports is None else ", ".join(str(p) for p in rule.ports)
    return f"peers: {peers} | ports: {ports}"


def describe_policy(policy: AnyPolicy) -> str:
    """A policy's key, with its tier and priority when it is a cluster-wide one."""
    if not isinstance(policy, TierPolicy):
        return policy.key
    priority = "" if policy.priority is None else f", priority {policy.priority}"
    return f"{policy.key} ({policy.tier} tier{priority})"


def _rule_title(exp: Explanation, c: Contribution) -> str:
    """`ns/p ingress[0]` for a NetworkPolicy rule; cluster-wide rules add name and action."""
    if c.tier == "networkpolicy":
        return f"{c.provenance}: {c.conns}"
    name = exp.engine.rules[c.provenance].name
    named = f' "{name}"' if name else ""
    return f"{c.provenance}{named}: {c.action} {c.conns}"


_DECIDES = {
    "Allow": "  <- allows the port",
    "Deny": "  <- denies the port",
    "Pass": "  <- passes the port on (to NetworkPolicy, or else the baseline)",
}


def _mark(exp: Explanation, side: DirectionVerdict, c: Contribution) -> str:
    port = exp.port
    if port is None:
        return ""
    if port not in c.conns:
        return "  (other ports)"
    if port in c.decided:
        if c.action == "Pass" and c.tier == "baseline":
            return "  <- passes the port to the default (allowed)"
        return _DECIDES[c.action]
    if c.tier == "networkpolicy" or (c.tier == "baseline" and side.np_isolated):
        return "  (the admin tier decided the port)"
    return "  (an earlier rule decided the port)"


def deciding(side: DirectionVerdict, port: tuple[str, int]) -> tuple[bool, str]:
    """What decided `port` on this side: (True, the rule, with tier and action) when a rule
    did, else (False, why no rule did)."""
    protocol, number = port
    if not side.applies:
        return False, "policies govern pods only"
    passed = next((c for c in side.contributions if c.action == "Pass" and port in c.decided), None)
    after = f", passed on by {passed.provenance}" if passed is not None else ""
    by = side.decided_by(protocol, number)
    if by is not None:
        how = f"{by.tier} tier, {by.action}" if by.tier != "networkpolicy" else "NetworkPolicy tier"
        return True, f"{by.provenance} ({how}){after}"
    if side.np_isolated:
        policies = [
            k for k, t in zip(side.isolating, side.tiers, strict=True) if t == "networkpolicy"
        ]
        return False, (
            f"isolated by {', '.join(policies)} and no rule allows {number}/{protocol} "
            f"for this peer{after}"
        )
    return False, f"no rule decides it (allowed by default){after}"


def decision_text(side: DirectionVerdict, port: tuple[str, int]) -> str:
    """`allowed by <rule> (<tier>)`, `denied: isolated by ...`: the side's answer for a port."""
    by_rule, reason = deciding(side, port)
    word = "allowed" if port in side.allowed else "denied"
    return f"{word} by {reason}" if by_rule else f"{word}: {reason}"


def _side_lines(exp: Explanation, side: DirectionVerdict, subject: Endpoint) -> list[str]:
    title = f"{side.direction.capitalize()} of {endpoint_name(subject)}"
    if not side.applies:
        return [f"{title}: an address outside the cluster; no policy applies"]
    if not side.isolated:
        return [f"{title}: not isolated (no policy selects it for {side.direction}): all allowed"]
    assert isinstance(subject, Pod)
    selecting = exp.engine.selecting(subject, side.direction)
    word = "isolated" if side.tiers == ("networkpolicy",) * len(side.tiers) else "selected"
    lines = [f"{title}: {word} by {', '.join(describe_policy(p) for p in selecting)}"]
    if not side.contributions:
        lines.append(
            "  no rule of these policies selects the peer: nothing is allowed"
            if side.np_isolated
            else "  no rule of these policies selects the peer: nothing denies, all allowed"
        )
    for c in side.contributions:
        lines.append(f"  {_rule_title(exp, c)}{_mark(exp, side, c)}")
        lines.append(f"      {describe_rule(exp.engine.rules[c.provenance])}")
    matched = {c.provenance for c in side.contributions}
    for policy in selecting:
        for rule in policy.rules(side.direction):
            if rule.provenance not in matched:
                peer = exp.verdict.dst if side.direction == "egress" else exp.verdict.src
                why = (
                    "selects this peer, but its ports allow nothing on this destination"
                    if exp.engine.rule_matches(rule, peer)
                    else "does not select this peer"
                )
                lines.append(f"  {rule.provenance}: {why}")
                lines.append(f"      {describe_rule(rule)}")
    lines.append(f"  allowed on this side: {side.allowed}")
    if exp.port is not None:
        lines.append(f"  {exp.port[1]}/{exp.port[0]}: {decision_text(side, exp.port)}")
    return lines


def render_text(exp: Explanation) -> str:
    v = exp.verdict
    lines = [f"from: {_who(v.src)}", f"to:   {_who(v.dst)}"]
    lines += [f"note: {n}" for n in exp.notes]
    if exp.port is not None:
        protocol, number = exp.port
        word = "ALLOWED" if exp.allowed else "DENIED"
        lines.append(f"verdict: {word} on {number}/{protocol}")
    else:
        lines.append(f"verdict: {v.conns if v.conns else 'DENIED (no connection allowed)'}")
    lines.append("")
    lines += _side_lines(exp, v.egress, v.src)
    lines += _side_lines(exp, v.ingress, v.dst)
    if exp.port is not None and not exp.allowed:
        blocking = [s for s in (v.egress, v.ingress) if s.applies and exp.port not in s.allowed]
        for side in blocking:
            lines.append(f"denied by {side.direction}: {deciding(side, exp.port)[1]}")
    return "\n".join(lines) + "\n"


def _side_dict(exp: Explanation, side: DirectionVerdict) -> dict[str, object]:
    result: dict[str, object] = {
        "applies": side.applies,
        "isolated": side.isolated,
        "isolating_policies": list(side.isolating),
        "tiers": list(side.tiers),
        "allowed": str(side.allowed),
        "rules": [
            {
                "rule": str(c.provenance),
                "policy": c.provenance.policy,
                "direction": c.provenance.direction,
                "index": c.provenance.rule,
                "name": exp.engine.rules[c.provenance].name,
                "tier": c.tier,
                "action": c.action,
                "allows": str(c.conns),  # the ports the rule covers (its action on them)
                "decides": str(c.decided) if c.decided else "",
                "definition": describe_rule(exp.engine.rules[c.provenance]),
            }
            for c in side.contributions
        ],
    }
    if exp.port is not None:
        result["decision"] = decision_text(side, exp.port)
    return result


def as_dict(exp: Explanation) -> dict[str, object]:
    v = exp.verdict
    result: dict[str, object] = {
        "from": endpoint_name(v.src),
        "to": endpoint_name(v.dst),
        "allowed": exp.allowed,
        "conns": str(v.conns) if v.conns else "No Connections",
        "egress": _side_dict(exp, v.egress),
        "ingress": _side_dict(exp, v.ingress),
        "notes": list(exp.notes),
    }
    if exp.port is not None:
        result["port"] = f"{exp.port[1]}/{exp.port[0]}"
    return result
