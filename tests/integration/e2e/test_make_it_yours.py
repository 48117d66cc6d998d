"""README "Make it yours", done on a copy of the declaration: a monitored ``invoices``
container with an outbox and CDC rules, its contracts (defined here, registered next to the
example's), and nothing else. The copy is accepted, the Functions app built from it has the new
trigger, the Bicep/declaration agreement holds with the Bicep unchanged, and an invoice written
with the real SDK reaches a session receiver on the local broker with allow-listed fields only.
No module of ``events/`` is edited: the package never names the new domain.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import azure.functions as func
import pytest
from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage
from pydantic import Field

from devstack.cosmos import LocalCosmos
from devstack.provision import provision_cosmos
from devstack.servicebus import LocalServiceBus
from events.adapters.cosmos.changefeed import CosmosChangeFeed, CosmosLeaseStore
from events.adapters.cosmos.outbox import OutboxEvent, OutboxWriter
from events.adapters.servicebus import ServiceBusPublisher
from events.changefeed import ChangeFeedProcessor
from events.core.contracts import ContractRegistry, EventPayload
from events.core.envelope import IntegrationEvent
from events.core.messages import event_from_message
from events.core.relay import BatchOutcome
from events.core.sources import CdcSource, OutboxSource
from events.core.sources.cdc import cdc_event_id
from events.deployment.catalog import Deployment, load_deployment
from events.deployment.contracts import default_registry
from events.deployment.settings import COSMOS_CONNECTION, DATABASE, SERVICEBUS_CONNECTION
from events.deployment.topology import DEFAULT_TOPOLOGY
from events.hosts.functions import RETRY_MAXIMUM_INTERVAL, blueprint
from events.hosts.runtime import Runtime
from tests.infra.agreement import (
    AGREEMENT_CHECKS,
    Check,
    RegisteredApp,
    check_bicep_code_names_no_feed_of_the_declaration,
    feed_vocabulary,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "events"

#: Bounds of the change-feed and broker waits: steps of the processor, seconds in all.
MAX_STEPS = 200
WAIT_SECONDS = 60.0


# --- (b) the contracts, as a deployment would put them in events/deployment/contracts/ -----


class InvoiceIssuedV1(EventPayload):
    event_type = "InvoiceIssued"
    version = 1

    invoice_id: str = Field(min_length=1)
    tenant_id: str = Field(min_length=1)
    total_cents: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)


class InvoiceUpsertedV1(EventPayload):
    """Change data capture of an Invoice document: only these fields are ever published."""

    event_type = "InvoiceUpserted"
    version = 1

    invoice_id: str = Field(min_length=1)
    status: Literal["issued", "paid", "void"]
    total_cents: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)


class InvoiceDeletedV1(EventPayload):
    event_type = "InvoiceDeleted"
    version = 1

    invoice_id: str = Field(min_length=1)


def registry() -> ContractRegistry:
    """default_registry() with the invoice contracts added, as its module would register them."""
    return ContractRegistry(
        *default_registry(), InvoiceIssuedV1, InvoiceUpsertedV1, InvoiceDeletedV1
    )


# --- (a) the declaration: one more container entry in a copy of infra/topology.json --------

INVOICES_CONTAINER: dict[str, Any] = {
    "name": "invoices",
    "role": "monitored",
    "setting": "RELAY_INVOICES_CONTAINER",
    "partitionKey": "/tenantId",
    "defaultTtl": -1,
    "feed": {
        "function": "relay_invoices",
        "leasePrefix": "relay-invoices.",
        "sources": ["outbox", "cdc"],
        "cdc": [
            {
                "documentType": "Invoice",
                "upserted": "InvoiceUpserted",
                "deleted": "InvoiceDeleted",
                "version": 1,
                "idField": "invoiceId",
                "fields": ["status", "totalCents", "currency"],
            }
        ],
    },
}

#: An Invoice entity as the application writes it: the e-mail and address must never leave.
INVOICE: dict[str, Any] = {
    "id": "inv-1",
    "tenantId": "tenant-7",
    "type": "Invoice",
    "status": "issued",
    "totalCents": 990,
    "currency": "EUR",
    "customerEmail": "someone@example.com",
    "billingAddress": {"street": "1 Private Road"},
}


@pytest.fixture(scope="module")
def declaration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
    raw["cosmos"]["containers"].append(INVOICES_CONTAINER)
    path = tmp_path_factory.mktemp("declaration") / "topology.json"
    path.write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def deployment(declaration: Path) -> Deployment:
    return load_deployment(declaration, registry())


@pytest.fixture(scope="module")
def registered(deployment: Deployment) -> RegisteredApp:
    """The functions a FunctionApp registers from the copy (get_functions runs once per app)."""
    app = func.FunctionApp()
    app.register_functions(blueprint(deployment=deployment))
    return RegisteredApp.of(app.get_functions())


# --- (d) what the tests check: the declaration, the app, the Bicep, the package -------------


def test_declaration_copy_with_invoices_container_is_accepted_as_an_outbox_and_cdc_feed(
    deployment: Deployment,
) -> None:
    feed = deployment.feed("relay_invoices")

    assert [f.function_name for f in deployment.feeds] == [
        "relay_orders",
        "relay_eventstore",
        "relay_invoices",
    ]
    assert (feed.container, feed.container_setting) == ("invoices", "RELAY_INVOICES_CONTAINER")
    assert (feed.lease_prefix, feed.partition_key_path) == ("relay-invoices.", "/tenantId")
    assert [type(source) for source in feed.sources] == [OutboxSource, CdcSource]


def test_functions_app_from_the_copy_registers_relay_invoices_bound_to_settings_with_retry(
    registered: RegisteredApp,
) -> None:
    triggers = {str(b["function"]): b for b in registered.triggers()}

    assert set(triggers) == {"relay_orders", "relay_eventstore", "relay_invoices"}
    binding = triggers["relay_invoices"]
    assert binding["type"] == "cosmosDBTrigger"
    assert binding["containerName"] == "%RELAY_INVOICES_CONTAINER%"
    assert binding["leaseContainerPrefix"] == "relay-invoices."
    assert binding["connection"] == binding["leaseConnection"] == COSMOS_CONNECTION
    assert binding["databaseName"] == binding["leaseDatabaseName"] == f"%{DATABASE}%"
    assert binding["leaseContainerName"] == "%RELAY_LEASES_CONTAINER%"
    assert binding["createLeaseContainerIfNotExists"] is False
    policy = registered.retry_policies["relay_invoices"]
    assert (policy["strategy"], policy["max_retry_count"]) == ("exponential_backoff", "-1")
    assert policy["maximum_interval"] == RETRY_MAXIMUM_INTERVAL


def test_events_package_with_invoices_declared_names_no_invoice() -> None:
    # The trigger, the settings and the relay above came from the copy and this module alone.
    naming = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "invoice" in path.read_text(encoding="utf-8").lower()
    ]

    assert naming == []


@pytest.mark.parametrize("check", AGREEMENT_CHECKS, ids=lambda check: check.__name__)
def test_agreement_check_on_the_copy_passes_with_the_bicep_unchanged(
    deployment: Deployment, registered: RegisteredApp, check: Check
) -> None:
    check(deployment.topology, registered)


def test_bicep_with_the_copy_declared_names_none_of_its_feeds(
    deployment: Deployment, registered: RegisteredApp
) -> None:
    # Bicep loops over the declaration: neither the example's feeds nor the new one appear in it.
    vocabulary = feed_vocabulary(deployment.topology)

    assert {"orders", "eventstore", "RELAY_ORDERS_CONTAINER", "relay-orders."} <= vocabulary
    assert {"invoices", "RELAY_INVOICES_CONTAINER", "relay_invoices", "InvoiceUpserted"} <= (
        vocabulary
    )
    check_bicep_code_names_no_feed_of_the_declaration(deployment.topology, registered)


def _readme_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the README's "Make it yours" section, in order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Make it yours", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def test_readme_make_it_yours_declares_and_defines_what_this_test_walks_through() -> None:
    declaration, *_ = _readme_blocks("json")
    contracts, *_ = _readme_blocks("python")
    defined: dict[str, Any] = {}
    # As a reader's module would run it: without this module's `from __future__` imports.
    exec(compile(contracts, "README.md", "exec", dont_inherit=True), defined)

    assert json.loads(declaration) == INVOICES_CONTAINER
    for model in (InvoiceIssuedV1, InvoiceUpsertedV1, InvoiceDeletedV1):
        documented = defined[model.__name__]
        assert (documented.event_type, documented.version) == (model.event_type, model.version)
        assert documented.model_json_schema() == model.model_json_schema()


# --- (e) on the local stack, with the real SDKs -----------------------------------------------


def _drive(processor: ChangeFeedProcessor, documents: int) -> None:
    """Step the processor until it has handled ``documents`` in all (bounded)."""
    deadline = time.monotonic() + WAIT_SECONDS
    for _ in range(MAX_STEPS):
        if processor.documents_handled >= documents or time.monotonic() > deadline:
            break
        if processor.run_once() == 0:
            time.sleep(0.05)
    assert processor.documents_handled == documents


def _receive_session(connection_string: str, session_id: str, count: int) -> list[IntegrationEvent]:
    """Every event of one session on integration-events/all ('all' requires sessions)."""
    received: list[ServiceBusReceivedMessage] = []
    deadline = time.monotonic() + WAIT_SECONDS
    with (
        ServiceBusClient.from_connection_string(connection_string) as client,
        client.get_subscription_receiver(
            "integration-events", "all", session_id=session_id, max_wait_time=5
        ) as receiver,
    ):
        while len(received) < count and time.monotonic() < deadline:
            for message in receiver.receive_messages(max_message_count=10, max_wait_time=2):
                receiver.complete_message(message)
                received.append(message)
        # One more short receive: nothing beyond the expected events (no duplicate, no extra).
        received += receiver.receive_messages(max_message_count=10, max_wait_time=1)
    return [
        event_from_message(b"".join(m.body), m.application_properties or {}, m.content_type)
        for m in received
    ]


@pytest.fixture
def local_stack(
    deployment: Deployment, tmp_path: Path
) -> Iterator[tuple[LocalCosmos, LocalServiceBus]]:
    topology = deployment.topology
    with (
        LocalCosmos(data_file=tmp_path / "cosmos.json") as cosmos,
        LocalServiceBus(topology) as bus,
    ):
        yield cosmos, bus


def test_relay_invoices_on_the_local_stack_delivers_outbox_and_cdc_events_allow_listed_only(
    deployment: Deployment, local_stack: tuple[LocalCosmos, LocalServiceBus]
) -> None:
    cosmos, bus = local_stack
    topology = deployment.topology
    [subscription] = [
        s for t in topology.service_bus.topics for s in t.subscriptions if s.name == "all"
    ]
    assert subscription.requires_session
    client = cosmos.client()
    assert "invoices" in provision_cosmos(client, topology)
    runtime = Runtime.from_environment(
        {COSMOS_CONNECTION: cosmos.connection_string, SERVICEBUS_CONNECTION: bus.connection_string},
        verify_tls=False,
        deployment=deployment,
    )
    database = client.get_database_client(runtime.settings.database)
    invoices = database.get_container_client(runtime.settings.container("invoices"))
    feed = deployment.feed("relay_invoices")
    relay = runtime.relay("relay_invoices")
    outcomes: list[BatchOutcome] = []

    def handler(documents: list[dict[str, Any]]) -> None:
        outcomes.append(relay.process(documents))

    processor = ChangeFeedProcessor(
        CosmosChangeFeed(invoices),
        CosmosLeaseStore(database.get_container_client(runtime.settings.role("leases"))),
        handler,
        name=feed.lease_prefix,
        poll_interval=0.05,
    )
    writer = OutboxWriter(invoices, partition_key_path=feed.partition_key_path)
    try:
        [issued_id] = writer.save(
            INVOICE,
            [
                OutboxEvent(
                    InvoiceIssuedV1(
                        invoice_id="inv-1", tenant_id="tenant-7", total_cents=990, currency="EUR"
                    ),
                    subject="inv-1",
                )
            ],
        )
        lsns = [invoices.read_item("inv-1", partition_key="tenant-7")["_lsn"]]
        _drive(processor, documents=2)  # the entity and its outbox event
        invoices.upsert_item({**INVOICE, "status": "paid"})
        lsns.append(invoices.read_item("inv-1", partition_key="tenant-7")["_lsn"])
        _drive(processor, documents=3)
        invoices.upsert_item({**INVOICE, "status": "paid", "deleted": True, "ttl": 3600})
        lsns.append(invoices.read_item("inv-1", partition_key="tenant-7")["_lsn"])
        _drive(processor, documents=4)
    finally:
        processor.release_all()
        if isinstance(runtime.publisher, ServiceBusPublisher):
            runtime.publisher.close()

    events = _receive_session(bus.connection_string, "tenant-7", count=4)

    cdc = [cdc_event_id("invoices", "tenant-7", "inv-1", lsn) for lsn in lsns]
    amounts = {"totalCents": 990, "currency": "EUR"}
    assert {e.id: (e.type, e.data) for e in events} == {
        issued_id: ("InvoiceIssued", {"invoiceId": "inv-1", "tenantId": "tenant-7", **amounts}),
        cdc[0]: ("InvoiceUpserted", {"invoiceId": "inv-1", "status": "issued", **amounts}),
        cdc[1]: ("InvoiceUpserted", {"invoiceId": "inv-1", "status": "paid", **amounts}),
        cdc[2]: ("InvoiceDeleted", {"invoiceId": "inv-1"}),
    }
    assert len(events) == 4
    assert [e.id for e in events if e.id in cdc] == cdc  # in change order, one session
    assert sum(outcome.quarantined for outcome in outcomes) == 0
