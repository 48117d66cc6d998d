"""devstack.provision against a real Cosmos DB REST server on loopback, with the real SDK."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator

import pytest
from azure.cosmos import CosmosClient, PartitionKey

from devstack.provision import EMULATOR_CONNECTION_STRING, ProvisionError, provision_cosmos
from events.deployment.topology import load_topology
from tests.infra.bicep import REPO

pytestmark = [pytest.mark.infra, pytest.mark.integration]

_SERVER = REPO / "devstack" / "cosmos" / "node_modules" / "@vercel" / "cosmosdb-server" / "lib"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def client() -> Iterator[CosmosClient]:
    node = shutil.which("node")
    if node is None or not (_SERVER / "cli.js").exists():
        pytest.skip("needs node and devstack/cosmos/node_modules (make setup)")
    port = _free_port()
    server = subprocess.Popen(
        [node, str(_SERVER / "cli.js"), "--host", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        conn = EMULATOR_CONNECTION_STRING.replace("localhost:8081", f"127.0.0.1:{port}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self-signed certificate, verification off
            yield CosmosClient.from_connection_string(conn, connection_verify=False)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.filterwarnings("ignore")
def test_provision_cosmos_run_twice_creates_every_container_once(client: CosmosClient) -> None:
    topology = load_topology()
    first = provision_cosmos(client, topology)
    second = provision_cosmos(client, topology)
    assert first == second == tuple(c.name for c in topology.cosmos.containers)
    database = client.get_database_client(topology.cosmos.database)
    found = {c["id"]: c for c in database.list_containers()}
    assert set(found) == set(first)
    for spec in topology.cosmos.containers:
        assert found[spec.name]["partitionKey"]["paths"] == [spec.partition_key]


@pytest.mark.filterwarnings("ignore")
def test_provision_cosmos_existing_container_other_partition_key_raises(
    client: CosmosClient,
) -> None:
    topology = load_topology()
    database = client.create_database_if_not_exists(id=topology.cosmos.database)
    database.create_container(id="leases", partition_key=PartitionKey(path="/wrong"))
    with pytest.raises(ProvisionError, match="leases"):
        provision_cosmos(client, topology)
