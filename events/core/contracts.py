"""Contract base class and registry: event type + version -> payload model -> JSON Schema."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from events.errors import InvalidDocumentError, MappingError

__all__ = ["ContractRegistry", "EventPayload", "PublicData", "describe_validation_error"]

SCHEMA_BASE = "https://schemas.integration-relay.dev/events"


class PublicData(dict[str, Any]):
    """Event data a contract validated and reduced to its public fields (JSON-ready values).

    The envelope takes it as is: it was validated once, by the contract, and validating it
    again as ``dict[str, Any]`` would only copy it.
    """

    __slots__ = ()


def describe_validation_error(error: ValidationError) -> str:
    """Where and what kind of problems a validation found: field paths and error kinds, never
    the values (they may be personal data)."""
    return ", ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['type']}" for e in error.errors()
    )


class EventPayload(BaseModel):
    """A public event payload. Subclasses set ``event_type`` and ``version``.

    Unknown input fields are ignored (never copied out); JSON names are camelCase. Validation
    is strict, as JSON sees it: ``"4200"`` or ``true`` is not an integer, a number is not a
    string, NaN and infinities are refused; times, UUIDs and enums are read from their JSON
    text forms.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        populate_by_name=True,
        strict=True,
        allow_inf_nan=False,
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
    def public_data(cls, raw: Mapping[str, Any]) -> PublicData:
        """Validate raw data and return only the contract's fields, as JSON-ready values."""
        try:
            # Through JSON text: strict JSON-mode validation is what documents are (they come
            # from JSON), and text that is not valid Unicode is refused here, not on the wire.
            text = json.dumps(raw, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidDocumentError(
                f"data for {cls.event_type} v{cls.version} is not JSON: {type(exc).__name__}"
            ) from None
        try:
            model = cls.model_validate_json(text)
        except ValidationError as exc:
            # The message names fields and error kinds, never the values.
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                # json.dumps escapes any text; only a lone surrogate makes its output invalid.
                raise InvalidDocumentError(
                    f"data for {cls.event_type} v{cls.version} holds text that is not valid "
                    "Unicode (a lone surrogate)"
                ) from None
            problems = describe_validation_error(exc)
            raise InvalidDocumentError(
                f"data does not match {cls.event_type} v{cls.version}: {problems}"
            ) from None
        return PublicData(model.model_dump(mode="json", by_alias=True))


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
