"""Where traces and metrics go, chosen once per process from app settings.

``RELAY_TELEMETRY`` picks the exporter; unset (``auto``), the settings that are present decide:

======================  ========================================================================
value                   exporter
======================  ========================================================================
``auto`` (default)      ``azure-monitor`` when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set,
                        else ``otlp`` when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
                        ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, else ``none``
``azure-monitor``       Application Insights; ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
                        (``Authorization=AAD;ClientId=<id>``) names the managed identity
``otlp``                OTLP over HTTP (the ``OTEL_EXPORTER_OTLP_*`` variables)
``console``             one line per span and per metric point on stderr
``none``                nothing installed: the API's no-ops
======================  ========================================================================

Called by ``python -m events run`` and by ``function_app.py``. ``OTEL_SERVICE_NAME`` names
the service (default ``events-relay``). Every trace is kept unless ``OTEL_TRACES_SAMPLER``
asks otherwise (docs/observability.md, "What the distro is told, and why").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Final, Literal, get_args

from events.connections import connection_string_parts
from events.deployment.settings import TELEMETRY
from events.errors import SettingsError

__all__ = ["TELEMETRY", "Exporter", "choose_exporter", "configure_telemetry"]

logger = logging.getLogger(__name__)

APPINSIGHTS_CONNECTION: Final = "APPLICATIONINSIGHTS_CONNECTION_STRING"
APPINSIGHTS_AUTHENTICATION: Final = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
_OTLP_ENDPOINTS: Final = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_SERVICE_NAME: Final = "events-relay"
_SAMPLER: Final = "OTEL_TRACES_SAMPLER"

Exporter = Literal["azure-monitor", "otlp", "console", "none"]
_CHOICES: Final = ("auto", *get_args(Exporter))

_lock = threading.Lock()
_configured: Exporter | None = None


def choose_exporter(environ: Mapping[str, str]) -> Exporter:
    """The exporter the settings ask for; SettingsError naming the setting when they cannot
    be honoured."""
    raw = environ.get(TELEMETRY, "").strip().lower() or "auto"
    if raw not in _CHOICES:
        raise SettingsError(
            f"{TELEMETRY} must be one of {', '.join(_CHOICES)}, not {raw!r}", setting=TELEMETRY
        )
    connection = environ.get(APPINSIGHTS_CONNECTION, "").strip()
    if raw == "auto":
        if connection:
            return "azure-monitor"
        if any(environ.get(name, "").strip() for name in _OTLP_ENDPOINTS):
            return "otlp"
        return "none"
    if raw == "azure-monitor" and not connection:
        raise SettingsError(
            f"{TELEMETRY}=azure-monitor needs {APPINSIGHTS_CONNECTION}",
            setting=APPINSIGHTS_CONNECTION,
        )
    chosen: Exporter = raw  # type: ignore[assignment]  # checked against _CHOICES above
    return chosen


def _client_id(environ: Mapping[str, str]) -> tuple[bool, str | None]:
    """(Entra ID sign-in asked for, the user-assigned identity's client id or None)."""
    parts = connection_string_parts(environ.get(APPINSIGHTS_AUTHENTICATION, ""))
    aad = parts.get("authorization", "").upper() == "AAD"
    return aad, parts.get("clientid") or None


def configure_telemetry(
    environ: Mapping[str, str], *, service_name: str = _SERVICE_NAME
) -> Exporter:
    """Install the chosen exporter as the process's global providers, once: later calls
    return the first choice and change nothing (the API's global providers are set once)."""
    global _configured  # noqa: PLW0603 - one telemetry pipeline per process, by design
    with _lock:
        if _configured is not None:
            return _configured
        exporter = choose_exporter(environ)
        # Adapters are imported here so that a process without telemetry never loads the SDK.
        from events.adapters import telemetry  # noqa: PLC0415

        if exporter == "azure-monitor":
            from events.adapters.identity import credential_for  # noqa: PLC0415

            aad, client_id = _client_id(environ)
            telemetry.install_azure_monitor(
                environ[APPINSIGHTS_CONNECTION].strip(),
                credential_for("managedidentity", client_id) if aad else None,
                service_name=service_name,
                # Every trace, unless the standard variable asks for a sampler.
                sampling_ratio=None if environ.get(_SAMPLER, "").strip() else 1.0,
            )
        elif exporter == "otlp":
            telemetry.install_otlp(service_name=service_name)
        elif exporter == "console":
            telemetry.install_console(service_name=service_name)
        _configured = exporter
    logger.info("telemetry exporter=%s", exporter)
    return exporter
