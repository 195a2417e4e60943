"""The API server the agent tests talk to: skip without it, fail loudly in CI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.apiserver import Api, ApiServer, Proxy, running


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """etcd + kube-apiserver for the whole session (tests use their own namespaces)."""
    with running(tmp_path_factory.mktemp("apiserver")) as server:
        yield server


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
