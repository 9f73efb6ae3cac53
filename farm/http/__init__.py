"""The controller's HTTP API, metrics and dashboard (docs/api-http.md).

A view and a client of the controller: `server.HttpServer` runs uvicorn in a thread of the
controller's process, and every route asks the controller through `farm.client.Client` over
its in-process socket. `app.create_app` builds the application; `tokens` keeps the API's
bearer tokens beside the CURVE keys; `guard` decides who may call it.
"""
