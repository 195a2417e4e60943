"""Manifests shared by the lab tests: a small cluster that exercises every lab path.

Pods: `shop/web-0..2` (a Deployment: allocated addresses; web-0 and web-2 share node n0,
so their traffic is bridged), `shop/db` (status IPs outside any lab range: routed by its
node, host routes elsewhere), `shop/client` (no ports: a source only) and `kube/exporter`
(hostNetwork: lives in its node's namespace with the node's address). Every protocol.
"""

from __future__ import annotations

from pathlib import Path

CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx
        ports:
        - {containerPort: 80, protocol: TCP}
        - {containerPort: 53, protocol: UDP}
        - {containerPort: 7000, protocol: SCTP}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec:
  containers:
  - name: db
    image: postgres
    ports:
    - {containerPort: 5432, protocol: TCP}
    - {containerPort: 3868, protocol: SCTP}
status:
  podIPs: [{ip: 10.99.0.7}, {ip: "fd00:99::7"}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec:
  containers:
  - {name: c, image: curl}
---
apiVersion: v1
kind: Pod
metadata: {name: exporter, namespace: kube}
spec:
  hostNetwork: true
  containers:
  - name: e
    image: node-exporter
    ports:
    - {containerPort: 9100, protocol: TCP}
"""

POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    ports:
    - {port: 80}
    - {port: 7000, protocol: SCTP}
  - from:
    - ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}
    ports:
    - {port: 53, protocol: UDP}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports:
    - {port: 3868, protocol: SCTP}
  egress:
  - to:
    - ipBlock: {cidr: "fd00::/8"}
"""


def write(directory: Path, *texts: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (directory / f"{i}.yaml").write_text(text)
    return directory
