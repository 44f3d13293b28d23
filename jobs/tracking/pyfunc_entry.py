"""The code MLflow copies into every registered variant's model and runs to make the model object ("models from
code", see `jobs.tracking.pyfunc_model`): nothing is pickled, and loading needs the workbench installed."""

import mlflow.models

from jobs.tracking.pyfunc_model import VariantModel

mlflow.models.set_model(VariantModel())
