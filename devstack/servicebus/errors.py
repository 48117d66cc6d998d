"""Errors of the local Service Bus broker.

LocalServiceBusError
├── UnsupportedTopologyError    the topology asks for something the broker does not emulate
└── BrokerStartError            the broker thread failed to listen or to start in time
"""

from __future__ import annotations

__all__ = ["BrokerStartError", "LocalServiceBusError", "UnsupportedTopologyError"]


class LocalServiceBusError(Exception):
    """Base of every error the local broker raises."""


class UnsupportedTopologyError(LocalServiceBusError, ValueError):
    """A rule or setting in the topology that the local broker cannot honour."""


class BrokerStartError(LocalServiceBusError, RuntimeError):
    """The broker could not start (port in use, reactor failure, start timeout)."""
