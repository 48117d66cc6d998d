"""The Functions app's registered functions, indexed once per test session.

``FunctionApp.get_functions()`` may be called only once per app (as the host does): a second
call reports every function name as duplicated.
"""

from __future__ import annotations

import functools
from typing import Any

import function_app


@functools.cache
def registered_functions() -> tuple[Any, ...]:
    return tuple(function_app.app.get_functions())
