"""The runner: how a job goes from a queued row to a finished one.

`registry` (kinds by name, with typed `params`), `submit` (checked params in, one queued row out), `worker` (claims
jobs, keeps their heartbeats, hands each to an executor), `executors` (how a claimed job runs: a local child
process today), `child` (the process that runs one job), `context` (what a running kind may do: progress, logs,
cancel checks, its result). The runner knows no kind by name: what a kind needs after it is declared in the registry.
"""
