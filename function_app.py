"""Azure Functions entry point: create the app and register the relay's triggers. Wiring only."""

import azure.functions as func

from events.hosts.functions import blueprint

app = func.FunctionApp()
app.register_functions(blueprint())
