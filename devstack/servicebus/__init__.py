"""A local AMQP 1.0 broker that the real ``azure-servicebus`` SDK sends to and receives from.

Entities come from the project's topology file. See ``devstack/README.md`` for what it
emulates and what it does not.
"""

from __future__ import annotations

from .errors import BrokerStartError, LocalServiceBusError, UnsupportedTopologyError
from .faults import Faults
from .server import LocalServiceBus
from .stats import BrokerStats

__all__ = [
    "BrokerStartError",
    "BrokerStats",
    "Faults",
    "LocalServiceBus",
    "LocalServiceBusError",
    "UnsupportedTopologyError",
]
