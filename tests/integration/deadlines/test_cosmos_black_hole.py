"""The Cosmos DB adapters against a server that stops answering (the local server, stopped)
and against one that never answered (a black hole): StoreUnavailableError, named, bounded."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator

import pytest
from azure.cosmos import CosmosClient, PartitionKey

from devstack.cosmos import LocalCosmos
from events.adapters.cosmos.changefeed import CosmosChangeFeed, CosmosLeaseStore
from events.adapters.cosmos.client import cosmos_client
from events.adapters.cosmos.stores import CosmosQuarantine
from events.changefeed.feed import FeedRange
from events.connections import CosmosConnection
from events.errors import StoreUnavailableError
from tests.fixtures.blackhole import BlackHole

pytestmark = pytest.mark.integration

#: Bound for each call under test; the clients' own deadline is 2 s.
BOUND = 90.0
TIMEOUT = 2.0


def _bounded(call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` on a thread, at most BOUND seconds; the exception it raised, if any."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), "the call did not return within the bound"
    return errors[0] if errors else None


@contextlib.contextmanager
def _stopped(server: LocalCosmos) -> Iterator[None]:
    """SIGSTOP the server process: the kernel still accepts connections and keeps the open
    ones, nothing answers (a black hole with the server's own address, which the SDK's
    endpoint discovery would route to around any proxy). SIGCONT afterwards."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


@pytest.fixture
def own_cosmos() -> Iterator[LocalCosmos]:
    """A server of this test's own: it is stopped mid-test."""
    with LocalCosmos() as server:
        yield server


def cosmos_client_via(connection: CosmosConnection) -> CosmosClient:
    return cosmos_client(connection, verify_tls=False, timeout=TIMEOUT)


def test_cosmos_client_black_hole_raises_store_unavailable_naming_endpoint(
    black_hole: BlackHole,
) -> None:
    connection = CosmosConnection(
        "RELAY_COSMOS",
        connection_string=f"AccountEndpoint=https://{black_hole.address}/;AccountKey=a2V5;",
    )

    error = _bounded(lambda: cosmos_client_via(connection))

    assert isinstance(error, StoreUnavailableError)
    assert black_hole.address in str(error)


def test_cosmos_adapters_black_holed_raise_store_unavailable_naming_resource(
    own_cosmos: LocalCosmos, caplog: pytest.LogCaptureFixture
) -> None:
    direct = own_cosmos.client().create_database(id="relay")
    direct.create_container(id="quarantine", partition_key=PartitionKey(path="/partitionKey"))
    direct.create_container(id="leases", partition_key=PartitionKey(path="/id"))
    direct.create_container(id="orders", partition_key=PartitionKey(path="/pk"))
    client = cosmos_client_via(
        CosmosConnection("RELAY_COSMOS", connection_string=own_cosmos.connection_string)
    )
    database = client.get_database_client("relay")
    endpoint = own_cosmos.endpoint.removeprefix("https://").rstrip("/")
    quarantine = CosmosQuarantine(database.get_container_client("quarantine"))
    leases = CosmosLeaseStore(database.get_container_client("leases"))
    feed = CosmosChangeFeed(database.get_container_client("orders"))
    caplog.set_level(logging.INFO, logger="events.adapters.cosmos.errors")

    with _stopped(own_cosmos):
        errors = {
            "quarantine": _bounded(quarantine.list),
            "leases": _bounded(lambda: leases.list("p.")),
            "orders": _bounded(lambda: feed.read_page(FeedRange("", "FF"), "beginning", 10)),
        }
        # A second failure of the same resource logs nothing new.
        again = _bounded(quarantine.list)
        check = _bounded(lambda: quarantine.parked("relay_orders", {"order-1"}))
    recovered = _bounded(quarantine.list)

    for container, error in errors.items():
        assert isinstance(error, StoreUnavailableError), (container, error)
        assert endpoint in str(error)
        assert f"relay/{container}" in str(error)
    assert isinstance(again, StoreUnavailableError)
    assert isinstance(check, StoreUnavailableError)  # the relay retries the batch
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "events.adapters.cosmos.errors"
    ]
    assert len(warnings) == 3, warnings  # one per resource, not one per failure
    assert recovered is None
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("relay/quarantine available again" in line for line in infos)
