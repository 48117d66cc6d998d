"""Azure Functions entry point: create the app, configure telemetry once and register the
relay's triggers. Wiring only."""

import os

import azure.functions as func

from events.hosts.functions import blueprint
from events.hosts.telemetry import configure_telemetry

configure_telemetry(os.environ)
app = func.FunctionApp()
app.register_functions(blueprint())
