"""A real Kubernetes API server for tests: etcd and kube-apiserver 1.20 on 127.0.0.1.

`scripts/kube-apiserver` builds the binary (from Debian's source package) and caches it; etcd
is Debian's. Both listen on free loopback ports with their data in a temporary folder; the
API server authenticates one static token (group `system:masters`), serves a self-signed
certificate it writes into its cert folder (the tests trust it), and runs without the
ServiceAccount admission plugin (there is no controller manager to make service accounts).
There is no kubelet or scheduler either: pods are created with `spec.nodeName` and their
addresses set through `pods/status`, as a kubelet would.

`Proxy` sits between a client and the API server and can cut its connections and refuse new
ones for a while: the way to make a watcher miss events (a network partition).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TOKEN = "netfence-test-admin-token"
ROOT = Path(__file__).resolve().parents[2]


def binaries() -> tuple[Path, Path] | str:
    """(kube-apiserver, etcd), or why they are not there."""
    script = ROOT / "scripts" / "kube-apiserver"
    path = subprocess.run(
        ["bash", str(script), "--path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    apiserver = Path(path)
    if not apiserver.is_file():
        return f"no kube-apiserver at {apiserver} (run scripts/kube-apiserver to build it)"
    etcd = Path("/usr/bin/etcd")
    if not etcd.is_file():
        return "no etcd (apt-get install etcd-server)"
    return apiserver, etcd


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[ApiServer]:
    """etcd + kube-apiserver in `workdir` for the block; without the binaries the test is
    skipped, or fails loudly in CI (CI=true), which must run it."""
    found = binaries()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the API server tests but there is {found}")
        pytest.skip(found)
    server = ApiServer(workdir, *found)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: be killed when the test process dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ApiServer:
    def __init__(self, workdir: Path, apiserver: Path, etcd: Path) -> None:
        self.workdir = workdir
        self._apiserver_bin = apiserver
        self._etcd_bin = etcd
        self.etcd_port = free_port()
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca_file = workdir / "certs" / "apiserver.crt"
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{TOKEN},admin,admin,"system:masters"\n')
        key = self.workdir / "service-account.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        peer = f"http://127.0.0.1:{free_port()}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._etcd = self._spawn(
            "etcd",
            [
                str(self._etcd_bin),
                "--name=nf",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=nf={peer}",
            ],
        )
        self._wait(lambda: b"true" in _http_get(f"{client}/health"), "etcd", self._etcd)
        self.start_apiserver()

    def start_apiserver(self) -> None:
        key = self.workdir / "service-account.key"
        self._apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self._apiserver_bin),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--insecure-port=0",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={key}",
                f"--service-account-signing-key-file={key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--disable-admission-plugins=ServiceAccount",
                "--profiling=false",
                # As in real clusters (kubeadm, kind): node agents such as deploy/'s run
                # privileged, and the default refuses such pods.
                "--allow-privileged=true",
            ],
        )
        self._wait(self._ready, "kube-apiserver", self._apiserver)

    def stop_apiserver(self) -> None:
        _stop(self._apiserver)
        self._apiserver = None

    def restart_apiserver(self) -> None:
        """Stop and start again on the same port, certificate and etcd (a fresh watch cache)."""
        self.stop_apiserver()
        self.start_apiserver()

    def stop(self) -> None:
        self.stop_apiserver()
        _stop(self._etcd)
        self._etcd = None

    def kubeconfig(self, path: Path, server: str | None = None) -> Path:
        """A kubeconfig for the admin token; `server` to go through a proxy."""
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {
                                "server": server or self.url,
                                "certificate-authority": str(self.ca_file),
                            },
                        }
                    ],
                    "users": [{"name": "admin", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
                    "current-context": "test",
                }
            )
        )
        return path

    def _ready(self) -> bool:
        if not self.ca_file.exists():
            return False
        return Api(self.url, self.ca_file).raw("GET", "/readyz") == b"ok"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        with log:
            return subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=_die_with_parent,
            )

    def _wait(self, ready: Any, name: str, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
            with contextlib.suppress(OSError, ValueError, ApiError):
                if ready():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after 60 s; see {self.workdir / name}.log")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL: a terminating kube-apiserver 1.20 stops listening at once but
    keeps serving open watches until they time out, as a real one does until it is killed."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        data: bytes = response.read()
        return data


class ApiError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status


class Api:
    """The few API calls the tests make, as plain JSON over HTTPS (what kubectl would send)."""

    def __init__(self, url: str, ca_file: Path) -> None:
        self.url = url
        self._tls = ssl.create_default_context(cafile=str(ca_file))

    def raw(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {TOKEN}")
        request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self._tls, timeout=30) as response:
                result: bytes = response.read()
                return result
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read()) from None

    def call(self, method: str, path: str, body: Any = None, **kwargs: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.raw(method, path, body, **kwargs))
        return result

    def patch(self, path: str, patch: Any) -> dict[str, Any]:
        return self.call("PATCH", path, patch, content_type="application/merge-patch+json")

    def create(self, manifest: dict[str, Any]) -> None:
        """Any object of the kinds `object_path` knows, as `kubectl create -f` sends it."""
        meta = manifest["metadata"]
        self.call("POST", object_path(manifest["kind"], meta.get("namespace"), ""), manifest)

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.call("POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": labels}})

    def delete_namespace(self, name: str) -> None:
        """Delete and finalize, as the namespace controller would once it is empty."""
        self.call("DELETE", f"/api/v1/namespaces/{name}")
        namespace = self.call("GET", f"/api/v1/namespaces/{name}")
        namespace["spec"]["finalizers"] = []
        self.call("PUT", f"/api/v1/namespaces/{name}/finalize", namespace)

    def create_pod(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str],
        *,
        node: str = "node-1",
        ports: tuple[int, ...] = (80,),
        owner: tuple[str, str] | None = None,
        host_network: bool = False,
    ) -> None:
        metadata: dict[str, Any] = {"name": name, "labels": labels}
        if owner:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner[0],
                    "name": owner[1],
                    "uid": "00000000-0000-0000-0000-000000000001",
                    "controller": True,
                }
            ]
        container = {
            "name": "main",
            "image": "registry.invalid/none",
            "ports": [{"name": f"p{port}", "containerPort": port} for port in ports],
        }
        spec = {"nodeName": node, "hostNetwork": host_network, "containers": [container]}
        self.call(
            "POST", f"/api/v1/namespaces/{namespace}/pods", {"metadata": metadata, "spec": spec}
        )

    def set_pod_ips(self, namespace: str, name: str, *ips: str, phase: str = "Running") -> None:
        """What the kubelet reports once the pod's sandbox has its addresses."""
        status = {"phase": phase, "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}
        self.patch(f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status})

    def delete_pod(self, namespace: str, name: str) -> None:
        """At once: there is no kubelet to confirm a graceful deletion."""
        self.call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}?gracePeriodSeconds=0")

    def create_policy(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        self.call(
            "POST",
            f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
            {"metadata": {"name": name}, "spec": spec},
        )

    def policy_path(self, namespace: str, name: str) -> str:
        return f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"

    def install_policy_crds(self) -> None:
        """The three CRDs, once each serves its collection."""
        for kind in POLICY_CRDS:
            self.call("POST", _CRDS, _crd(kind))
        self._until(lambda: all(self._served(kind) for kind in POLICY_CRDS), "CRDs served")

    def remove_policy_crds(self) -> None:
        """Delete the CRDs (their objects go with them) and wait until they are gone."""
        for kind in POLICY_CRDS:
            with contextlib.suppress(ApiError):
                self.call("DELETE", f"{_CRDS}/{_crd(kind)['metadata']['name']}")
        self._until(lambda: not any(self._served(kind) for kind in POLICY_CRDS), "CRDs gone")

    def _served(self, kind: str) -> bool:
        try:
            self.raw("GET", policy_path(kind))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _until(self, check: Any, what: str, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {seconds} s")
            time.sleep(0.1)

    def create_node(self, name: str, labels: dict[str, str], addresses: dict[str, str]) -> None:
        """A Node and, as its kubelet would report them, its addresses (`{address: type}`)."""
        self.call("POST", "/api/v1/nodes", {"metadata": {"name": name, "labels": labels}})
        self.set_node_addresses(name, addresses)

    def set_node_addresses(self, name: str, addresses: dict[str, str]) -> None:
        entries = [{"type": kind, "address": ip} for ip, kind in addresses.items()]
        self.patch(f"/api/v1/nodes/{name}/status", {"status": {"addresses": entries}})


# The cluster-wide policy kinds of the network-policy-api project, as minimal CRDs: served at
# the paths the source follows, cluster-scoped, with a schema that keeps every field (the real
# CRDs validate more; what the API server stores unchecked here is netfence's to reject).
POLICY_CRDS = {
    "AdminNetworkPolicy": ("adminnetworkpolicies", "v1alpha1"),
    "BaselineAdminNetworkPolicy": ("baselineadminnetworkpolicies", "v1alpha1"),
    "ClusterNetworkPolicy": ("clusternetworkpolicies", "v1alpha2"),
}
POLICY_GROUP = "policy.networking.k8s.io"
_CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def policy_path(kind: str, name: str = "") -> str:
    plural, version = POLICY_CRDS[kind]
    return f"/apis/{POLICY_GROUP}/{version}/{plural}" + (f"/{name}" if name else "")


_PATHS = {
    "Namespace": "/api/v1/namespaces",
    "Node": "/api/v1/nodes",
    "Pod": "/api/v1/namespaces/{namespace}/pods",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
}


def object_path(kind: str, namespace: str | None, name: str) -> str:
    """The object's path (its collection's with `name` empty) for the kinds the tests use."""
    if kind in POLICY_CRDS:
        return policy_path(kind, name)
    base = _PATHS[kind].format(namespace=namespace)
    return base + (f"/{name}" if name else "")


def _crd(kind: str) -> dict[str, Any]:
    plural, version = POLICY_CRDS[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{POLICY_GROUP}",
            # *.k8s.io groups need it; the project's own CRDs carry this one.
            "annotations": {
                "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/network-policy-api/pull/30"
            },
        },
        "spec": {
            "group": POLICY_GROUP,
            "scope": "Cluster",
            "names": {"plural": plural, "kind": kind, "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


class Proxy:
    """A TCP relay to `target` (TLS passes through untouched) that can cut the line."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Reset every connection and refuse new ones until `resume`."""
        self._open.clear()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._sockets.clear()

    def resume(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            with self._lock:
                self._sockets.discard(source)
            source.close()
