"""MLflow: a run per job (`runs`, logged by a tracker process beside the worker), the model registry with its
aliases (`model_registry`), and `NAME@ALIAS` references to registered variants (`variant_refs`)."""
