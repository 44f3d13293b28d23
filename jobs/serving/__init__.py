"""The model server a deployment runs: batcher, routes, metrics.

`python -m jobs.serving.server --variant-id N --port P` serves one stored variant over HTTP (FastAPI under
uvicorn, in that process): `POST /v1/predict`, `GET /health`, `GET /ready`, `GET /metrics`, `GET /v1/model`
and the OpenAPI docs at `/docs`. API keys come from WORKBENCH_SERVING_API_KEYS (comma-separated), never from
the command line.

    server.py    arguments, the stored variant, uvicorn
    app.py       `create_app`: routes, readiness (file hashes, then loading), API keys, the prediction cache
    batcher.py   the dynamic batcher: one queue, one worker task that owns the predictor
    metrics.py   the Prometheus registry of one app
"""

# Bearer keys a model server accepts (comma-separated), read from its environment only: a command line is readable
# by every user of the machine.
API_KEYS_ENV = "WORKBENCH_SERVING_API_KEYS"
