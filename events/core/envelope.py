"""The integration event: a CloudEvents 1.0 envelope with deterministic ids.

Spec: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md
Extensions used: ``sequence`` (lexicographically ordered string), ``traceparent`` (W3C trace
context, distributed-tracing extension) and ``partitionkey`` (partitioning extension), which is
also the Service Bus session id: events of one aggregate stay in order.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from events.core.contracts import PublicData

__all__ = ["IntegrationEvent", "deterministic_id", "sequence_of"]

# A fixed namespace makes uuid5 ids stable across processes, hosts and releases.
_ID_NAMESPACE = uuid.UUID("6f1c0b8e-2d4a-5c3b-9e7f-0a1b2c3d4e5f")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_SEQUENCE_WIDTH = 20  # fits any non-negative 64-bit integer


def deterministic_id(*parts: str) -> str:
    """The same parts always give the same id: a retry publishes the same message id.

    Parts are joined with a separator no part can contain unescaped, so ``("a", "b")`` and
    ``("a\x1fb",)`` differ; any text is accepted, lone surrogates included.
    """
    joined = "\x1f".join(part.replace("\\", "\\\\").replace("\x1f", "\\x1f") for part in parts)
    # uuid5 by hand: uuid.uuid5 encodes strictly and refuses lone surrogates.
    digest = hashlib.sha1(
        _ID_NAMESPACE.bytes + joined.encode("utf-8", "surrogatepass"), usedforsecurity=False
    ).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def sequence_of(number: int) -> str:
    """A sequence value that sorts as text in the same order as the number."""
    if number < 0:
        raise ValueError("a sequence number cannot be negative")
    return str(number).zfill(_SEQUENCE_WIDTH)


class IntegrationEvent(BaseModel):
    """One CloudEvents 1.0 event whose data is JSON already reduced to a public contract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str = Field(min_length=1, max_length=128)
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    data: dict[str, Any]
    sequence: str | None = None
    traceparent: str | None = None
    partitionkey: str = Field(min_length=1, max_length=128)

    @field_validator("data", mode="wrap")
    @classmethod
    def _data_once(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        # Data a contract produced was validated there (strictly, through JSON): taken as is.
        # Anything else (an event read back from a message, a test) is validated here.
        return value if type(value) is PublicData else handler(value)

    @field_validator("traceparent")
    @classmethod
    def _valid_traceparent(cls, value: str | None) -> str | None:
        # A malformed traceparent is dropped by tracing systems anyway; refuse it early.
        if value is not None and not _TRACEPARENT.match(value):
            raise ValueError(
                "traceparent must follow W3C trace context (00-<32hex>-<16hex>-<2hex>)"
            )
        return value

    def attributes(self) -> dict[str, str]:
        """Context attributes as strings (everything but ``data``), for binary-mode bindings."""
        out: dict[str, str] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": _rfc3339(self.time),
            "datacontenttype": self.datacontenttype,
            "partitionkey": self.partitionkey,
        }
        for name in ("dataschema", "sequence", "traceparent"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
