"""The error tree: transient or permanent by type, data besides the message, drawn in the
module docstring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from events import errors
from events.core.messages import OutgoingMessage
from events.core.publisher import InMemoryPublisher
from events.deployment.catalog import load_deployment
from events.deployment.topology import DEFAULT_TOPOLOGY
from events.errors import (
    EventTooLargeError,
    OutboxConflictError,
    OutboxPreconditionFailedError,
    RelayError,
    SettingsError,
    is_transient,
)


def _classes() -> list[type[RelayError]]:
    found = [getattr(errors, name) for name in errors.__all__]
    return [c for c in found if isinstance(c, type) and issubclass(c, RelayError)]


def test_errors_every_class_is_drawn_in_the_module_tree() -> None:
    doc = errors.__doc__ or ""

    assert [c.__name__ for c in _classes() if c.__name__ not in doc] == []


def test_errors_transient_is_a_property_of_the_type() -> None:
    transient = {c.__name__ for c in _classes() if is_transient(c("x"))}

    assert transient == {
        "TransientError",
        "PublishUnavailableError",
        "StoreUnavailableError",
        "EventInProgressError",
        "InboxConflictError",
    }


def test_errors_conflict_and_failed_precondition_are_different_errors() -> None:
    assert not issubclass(OutboxPreconditionFailedError, OutboxConflictError)
    assert not issubclass(OutboxConflictError, OutboxPreconditionFailedError)


def test_errors_carry_data_besides_the_message() -> None:
    error = RelayError("nope", status=503, resource="db/orders", ids={"lease": "l-1"})

    assert (str(error), error.status, error.resource, dict(error.ids)) == (
        "nope",
        503,
        "db/orders",
        {"lease": "l-1"},
    )
    assert (error.setting, error.size, error.limit) == (None, None, None)


def test_errors_event_too_large_names_size_limit_destination_and_message() -> None:
    publisher = InMemoryPublisher(["t"], max_message_size=100)
    message = OutgoingMessage("t", "m-1", "s", "T", "application/json", b"x" * 200, {})

    with pytest.raises(EventTooLargeError) as raised:
        publisher.check(message)

    error = raised.value
    assert (error.resource, dict(error.ids), error.limit) == ("t", {"message": "m-1"}, 100)
    assert error.size is not None
    assert error.size > 100


def test_errors_bad_declaration_names_the_file_and_container_as_data(tmp_path: Path) -> None:
    declaration = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
    declaration["cosmos"]["containers"][0]["feed"]["cdc"][0]["upserted"] = "Nothing"
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(declaration), encoding="utf-8")

    with pytest.raises(SettingsError) as raised:
        load_deployment(path)

    assert raised.value.resource == str(path)
    assert dict(raised.value.ids) == {"container": "orders"}
