"""The Functions app's registered functions, indexed once per test session.

``FunctionApp.get_functions()`` may be called only once per app (as the host does): a second
call reports every function name as duplicated.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import function_app


@functools.cache
def registered_functions() -> tuple[Any, ...]:
    return tuple(function_app.app.get_functions())


def feed_functions() -> tuple[Any, ...]:
    """The registered functions triggered by a Cosmos DB change feed (one per declared feed)."""
    return tuple(
        fn
        for fn in registered_functions()
        if any(
            b["type"] == "cosmosDBTrigger" for b in json.loads(fn.get_function_json())["bindings"]
        )
    )
