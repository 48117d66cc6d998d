"""A small change-feed processor run as a child process by the takeover test.

    python processor_script.py ENDPOINT KEY DATABASE CONTAINER LEASES INSTANCE OUT_FILE

Each handled batch's ids are appended to OUT_FILE (one per line, flushed) and the handler
then sleeps a little, so that the parent can kill the process in the middle of the feed.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import urllib3
from azure.cosmos import CosmosClient

from events.adapters.cosmos.changefeed import CosmosChangeFeed, CosmosLeaseStore
from events.changefeed import ChangeFeedProcessor


def main(argv: list[str]) -> int:
    endpoint, key, database_id, container_id, leases_id, instance, out_file = argv
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    client = CosmosClient(endpoint, credential=key, connection_verify=False)
    database = client.get_database_client(database_id)
    with open(out_file, "a", encoding="utf-8") as out:

        def handler(documents: list[dict[str, Any]]) -> None:
            out.write("".join(f"{d['id']}\n" for d in documents))
            out.flush()
            time.sleep(0.3)

        processor = ChangeFeedProcessor(
            CosmosChangeFeed(database.get_container_client(container_id)),
            CosmosLeaseStore(database.get_container_client(leases_id)),
            handler,
            name="takeover.",
            instance_id=instance,
            max_items=5,
            poll_interval=0.1,
            lease_duration=2.0,
            renew_interval=0.5,
            acquire_interval=0.5,
        )
        processor.run(threading.Event())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
