"""Reading the parts of a changed Cosmos DB document the relay relies on.

Change-feed items carry ``_lsn`` (monotonic within a partition) and other system fields; a
change's identity is (container, id, ``_lsn``). Nothing here copies a document's body.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from events.errors import InvalidDocumentError

__all__ = [
    "SYSTEM_FIELDS",
    "Document",
    "change_time",
    "document_id",
    "document_lsn",
    "integer",
    "mapping",
    "optional_str",
    "parse_time",
    "partition_key_value",
    "required_str",
]

Document = Mapping[str, Any]

#: Cosmos DB system properties: never published.
SYSTEM_FIELDS: Final = frozenset({"_rid", "_self", "_etag", "_attachments", "_ts", "_lsn"})


def _unicode(value: str, what: str) -> str:
    """The text, refused when it cannot be sent as UTF-8 (a lone surrogate, which JSON can
    carry as an escape but AMQP strings and message ids cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidDocumentError(f"{what} is not valid Unicode (a lone surrogate)") from None
    return value


def document_id(document: Document) -> str:
    value = document.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidDocumentError("document has no string 'id'")
    return _unicode(value, "field 'id'")


def document_lsn(document: Document) -> int:
    value = document.get("_lsn")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidDocumentError("document has no '_lsn' (is it a change-feed item?)")
    return value


def partition_key_value(document: Document, path: str) -> str:
    """The value at a partition key path such as ``/partitionKey`` or ``/a/b``, as text."""
    node: Any = document
    for part in path.strip("/").split("/"):
        if not isinstance(node, Mapping) or part not in node:
            raise InvalidDocumentError(f"document has no partition key at {path}")
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, str | int | float) or node == "":
        raise InvalidDocumentError(f"partition key at {path} is not a string or number")
    if isinstance(node, float) and not math.isfinite(node):
        raise InvalidDocumentError(f"partition key at {path} is not a finite number")
    return _unicode(str(node), f"partition key at {path}")


def required_str(document: Document, name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidDocumentError(f"field {name!r} must be a non-empty string")
    return _unicode(value, f"field {name!r}")


def optional_str(document: Document, name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidDocumentError(f"field {name!r} must be a string when present")
    return _unicode(value, f"field {name!r}")


def integer(document: Document, name: str, default: int | None = None) -> int:
    """An integer field (booleans refused); ``default`` when absent, if one is given."""
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidDocumentError(f"field {name!r} must be an integer")
    return value


def mapping(document: Document, name: str) -> Mapping[str, Any]:
    value = document.get(name)
    if not isinstance(value, Mapping):
        raise InvalidDocumentError(f"field {name!r} must be an object")
    return value


def parse_time(document: Document, name: str) -> datetime:
    """An ISO 8601 time field; naive times are refused (their zone is unknowable)."""
    raw = required_str(document, name)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidDocumentError(f"field {name!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise InvalidDocumentError(f"field {name!r} has no time zone offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00:00+01:00: valid ISO 8601, but before year 1 in UTC.
        raise InvalidDocumentError(f"field {name!r} is out of range in UTC") from None


def change_time(document: Document) -> datetime:
    """When the change was written, from ``_ts`` (seconds since the epoch)."""
    value = document.get("_ts")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidDocumentError("document has no '_ts'")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, ValueError, OSError):
        # NaN, infinities and seconds beyond year 9999 have no datetime.
        raise InvalidDocumentError("field '_ts' is not a time in range") from None
