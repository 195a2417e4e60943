"""The API server the agent tests talk to: skip without it, fail loudly in CI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.apiserver import Api, ApiServer, Proxy, binaries


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """etcd + kube-apiserver for the whole session (tests use their own namespaces)."""
    found = binaries()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the API server tests but there is {found}")
        pytest.skip(found)
    server = ApiServer(tmp_path_factory.mktemp("apiserver"), *found)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(apiserver: ApiServer) -> Api:
    return Api(apiserver.url, apiserver.ca_file)


@pytest.fixture
def kubeconfig(apiserver: ApiServer, tmp_path: Path) -> Path:
    return apiserver.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def proxy(apiserver: ApiServer) -> Iterator[Proxy]:
    relay = Proxy(apiserver.port)
    try:
        yield relay
    finally:
        relay.close()
