"""Contract base class and registry: event type + version -> payload model -> JSON Schema."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from events.errors import InvalidDocumentError, MappingError

__all__ = ["ContractRegistry", "EventPayload", "default_registry"]

SCHEMA_BASE = "https://schemas.integration-relay.dev/events"


class EventPayload(BaseModel):
    """A public event payload. Subclasses set ``event_type`` and ``version``.

    Unknown input fields are ignored (never copied out); JSON names are camelCase.
    """

    model_config = ConfigDict(
        frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True
    )

    event_type: ClassVar[str]
    version: ClassVar[int]

    @classmethod
    def schema_uri(cls) -> str:
        return f"{SCHEMA_BASE}/{cls.event_type}/v{cls.version}.json"

    @classmethod
    def schema_file_name(cls) -> str:
        return f"{cls.event_type}.v{cls.version}.schema.json"

    @classmethod
    def public_data(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate raw data and return only the contract's fields, as JSON-ready values."""
        try:
            model = cls.model_validate(dict(raw))
        except ValidationError as exc:
            # The message names fields and error kinds, never the values.
            problems = ", ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['type']}" for e in exc.errors()
            )
            raise InvalidDocumentError(
                f"data does not match {cls.event_type} v{cls.version}: {problems}"
            ) from None
        return model.model_dump(mode="json", by_alias=True)


class ContractRegistry:
    """Which payload model governs each (event type, version)."""

    def __init__(self, *models: type[EventPayload]) -> None:
        self._models: dict[tuple[str, int], type[EventPayload]] = {}
        for model in models:
            self.register(model)

    def register(self, model: type[EventPayload]) -> None:
        key = (model.event_type, model.version)
        if key in self._models:
            raise ValueError(f"contract {key} registered twice")
        self._models[key] = model

    def __iter__(self) -> Iterator[type[EventPayload]]:
        return iter(sorted(self._models.values(), key=lambda m: (m.event_type, m.version)))

    def knows(self, event_type: str) -> bool:
        return any(t == event_type for t, _ in self._models)

    def get(self, event_type: str, version: int = 1) -> type[EventPayload]:
        try:
            return self._models[(event_type, version)]
        except KeyError:
            raise MappingError(f"no contract for event type {event_type!r} v{version}") from None

    def schemas(self) -> dict[str, str]:
        """File name -> JSON Schema text, stable (sorted keys, trailing newline)."""
        out: dict[str, str] = {}
        for model in self:
            schema = model.model_json_schema(by_alias=True, mode="serialization")
            schema["$id"] = model.schema_uri()
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            out[model.schema_file_name()] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        return out

    def export(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in self.schemas().items():
            path = directory / name
            path.write_text(text, encoding="utf-8")
            written.append(path)
        return written


def default_registry() -> ContractRegistry:
    from events.contracts import orders, payments  # noqa: PLC0415 - avoid an import cycle

    return ContractRegistry(
        orders.OrderPlacedV1,
        orders.OrderShippedV1,
        orders.OrderUpsertedV1,
        orders.OrderDeletedV1,
        payments.PaymentAuthorizedV1,
        payments.PaymentCapturedV1,
    )
