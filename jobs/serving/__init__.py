"""The model server a deployment runs: batcher, routes, metrics.

`python -m jobs.serving.server --variant-id N --port P` serves one stored variant over HTTP (FastAPI under
uvicorn, in that process): `POST /v1/predict`, `GET /health`, `GET /ready`, `GET /metrics`, `GET /v1/model`
and the OpenAPI docs at `/docs`. API keys come from WORKBENCH_SERVING_API_KEYS (comma-separated), never from
the command line.

    server.py    arguments, the stored variant, uvicorn
    app.py       `create_app`: routes, readiness (file hashes, then loading), API keys, the prediction cache
    batcher.py   the dynamic batcher: one queue, one worker task that owns the predictor
    metrics.py   the Prometheus registry of one app
    canary.py    a canary beside the stable variant: routing by X-User-Id, the rollout policy, rollback rules
    canary_recorder.py   what a server with a canary writes to the database (feedback, its own rollbacks)
    rollout.py   the workbench's side of a canary: deploy's options, share, promote (the alias moves), rollback
"""

# Bearer keys a model server accepts (comma-separated), read from its environment only: a command line is readable
# by every user of the machine.
API_KEYS_ENV = "WORKBENCH_SERVING_API_KEYS"
# The token a deployment's server accepts on /v1/admin/* (the workbench changing its rollout), from its environment.
ADMIN_TOKEN_ENV = "WORKBENCH_SERVING_ADMIN_TOKEN"
