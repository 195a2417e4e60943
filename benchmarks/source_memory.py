"""Memory of holding N pods as the Kubernetes API source does, next to the alternatives.

The pods are generate.py's, dressed as an API server returns them: uid, resourceVersion,
creationTimestamp, managedFields, a full container spec (image, resources, env, probes, volume
mounts), volumes, tolerations, and a status with conditions and container statuses. Three ways
of holding them are measured with tracemalloc (bytes still allocated while they are held, after
the JSON text itself is gone):

- `records`: what `netfence.sources.kube` keeps, the `cluster.state.Pod` record per pod, built
  from the raw JSON through the loader and validation (`kube.project`);
- `json`: the parsed JSON dicts (what a client that keeps raw objects would hold);
- `typed`: kubernetes_asyncio's `V1Pod` models, as `list_pod_for_all_namespaces()` returns them.

    python benchmarks/source_memory.py --pods 10000 [--typed]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate
from netfence.sources.kube import project


def api_pod(pod: dict[str, Any], i: int) -> dict[str, Any]:
    """`pod` with the fields a real API server adds or a real controller writes."""
    pod = copy.deepcopy(pod)
    meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
    stamp = "2024-05-01T10:00:00Z"
    meta.update(
        resourceVersion=str(100000 + i),
        creationTimestamp=stamp,
        generateName=meta["name"].rsplit("-", 1)[0] + "-",
        annotations={"kubectl.kubernetes.io/restartedAt": stamp},
        managedFields=[
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": stamp,
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {
                        "f:generateName": {},
                        "f:labels": {f"f:{k}": {} for k in meta.get("labels", {})},
                        "f:ownerReferences": {},
                    },
                    "f:spec": {"f:containers": {}, "f:volumes": {}},
                },
            },
            {
                "manager": "kubelet",
                "operation": "Update",
                "apiVersion": "v1",
                "time": stamp,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:conditions": {}, "f:podIP": {}, "f:podIPs": {}}},
            },
        ],
    )
    for container in spec["containers"]:
        container.update(
            imagePullPolicy="IfNotPresent",
            resources={
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"memory": "256Mi"},
            },
            env=[{"name": "LOG_LEVEL", "value": "info"}, {"name": "GOMAXPROCS", "value": "2"}],
            readinessProbe={"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10},
            volumeMounts=[
                {
                    "name": "kube-api-access",
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    "readOnly": True,
                }
            ],
            terminationMessagePath="/dev/termination-log",
            terminationMessagePolicy="File",
        )
    spec.update(
        restartPolicy="Always",
        terminationGracePeriodSeconds=30,
        dnsPolicy="ClusterFirst",
        schedulerName="default-scheduler",
        securityContext={},
        enableServiceLinks=True,
        preemptionPolicy="PreemptLowerPriority",
        priority=0,
        volumes=[
            {
                "name": "kube-api-access",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}
                    ]
                },
            }
        ],
        tolerations=[
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    )
    status.update(
        qosClass="Burstable",
        startTime=stamp,
        hostIPs=[{"ip": status.get("hostIP", "192.168.0.2")}],
        conditions=[
            {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": stamp}
            for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        containerStatuses=[
            {
                "name": container["name"],
                "ready": True,
                "restartCount": 0,
                "image": container["image"],
                "imageID": "docker-pullable://" + container["image"] + "@sha256:" + "ab" * 32,
                "containerID": "containerd://" + f"{i:064x}",
                "started": True,
                "state": {"running": {"startedAt": stamp}},
            }
            for container in spec["containers"]
        ],
    )
    return pod


def measure(build: Callable[[], object]) -> tuple[int, float]:
    """Bytes held by what `build` returns (traced), and the seconds it takes (untraced:
    tracemalloc slows allocation down several times)."""
    gc.collect()
    start = time.perf_counter()
    held = build()
    seconds = time.perf_counter() - start
    del held
    gc.collect()
    tracemalloc.start()
    held = build()
    gc.collect()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del held
    return size, seconds


async def typed(text: bytes) -> tuple[int, float]:
    from kubernetes_asyncio.client import ApiClient

    class Response:
        data = text

    async with ApiClient() as client:  # it wants a running loop
        return measure(lambda: client.deserialize(Response(), "V1PodList"))


def report(name: str, size: int, seconds: float, pods: int) -> None:
    print(f"{name:8} {size / 2**20:8.1f} MB {size / pods:8.0f} B/pod {seconds:6.2f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--typed", action="store_true", help="also measure the typed models")
    args = parser.parse_args()

    pods = [api_pod(pod, i) for i, pod in enumerate(generate.generate(args.pods, 0).pods)]
    text = json.dumps({"kind": "PodList", "apiVersion": "v1", "items": pods}).encode()
    del pods
    print(f"{args.pods} pods, {len(text) / args.pods:.0f} bytes of JSON each")

    def records() -> dict[str, object]:
        held = {}
        for raw in json.loads(text)["items"]:
            key, record, problems = project("Pod", raw)
            assert record is not None and not problems, problems
            held[key] = record
        return held

    report("records", *measure(records), args.pods)
    report("json", *measure(lambda: json.loads(text)["items"]), args.pods)
    if args.typed:
        report("typed", *asyncio.run(typed(text)), args.pods)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
