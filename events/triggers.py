"""Azure Functions host: one Cosmos DB trigger per feed. The only module importing
azure.functions.

The Cosmos DB trigger checkpoints a batch even when the function raises, so every trigger
carries a retry policy that retries forever with capped exponential backoff: a failed batch
is redelivered, never skipped
(https://learn.microsoft.com/azure/azure-functions/functions-bindings-error-pages#retries).
"""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func

from events import settings
from events.catalog import FEEDS, FeedDefinition
from events.runtime import Runtime, current

__all__ = ["MAX_ITEMS_PER_INVOCATION", "RETRY_MAXIMUM_INTERVAL", "blueprint"]

MAX_ITEMS_PER_INVOCATION = 100
RETRY_MINIMUM_INTERVAL = "00:00:02"
RETRY_MAXIMUM_INTERVAL = "00:05:00"


def _handler(
    definition: FeedDefinition, runtime: Callable[[], Runtime]
) -> Callable[[func.DocumentList], None]:
    def relay(documents: func.DocumentList) -> None:
        # Raising (transient error, or any bug) makes the host retry the same batch.
        runtime().relay(definition.function_name).process([doc.to_dict() for doc in documents])

    relay.__name__ = definition.function_name
    relay.__qualname__ = definition.function_name
    return relay


def blueprint(runtime: Callable[[], Runtime] = current) -> func.Blueprint:
    """The triggers of every feed in the catalog, bound to setting names, not values."""
    bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the library leaves it untyped
    for definition in FEEDS:
        handler = _handler(definition, runtime)
        bp.function_name(definition.function_name)(
            bp.retry(
                strategy="exponential_backoff",
                max_retry_count="-1",
                minimum_interval=RETRY_MINIMUM_INTERVAL,
                maximum_interval=RETRY_MAXIMUM_INTERVAL,
            )(
                bp.cosmos_db_trigger(
                    arg_name="documents",
                    connection=settings.COSMOS_CONNECTION,
                    database_name=f"%{settings.DATABASE}%",
                    container_name=f"%{definition.container_setting}%",
                    lease_connection=settings.COSMOS_CONNECTION,
                    lease_database_name=f"%{settings.DATABASE}%",
                    lease_container_name=f"%{settings.LEASES_CONTAINER}%",
                    lease_container_prefix=definition.lease_prefix,
                    create_lease_container_if_not_exists=False,
                    max_items_per_invocation=MAX_ITEMS_PER_INVOCATION,
                )(handler)
            )
        )
    return bp
