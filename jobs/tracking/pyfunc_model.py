"""A registered variant as a real MLflow model: a pyfunc wrapper around the workbench's Predictor.

`mlflow.pyfunc.load_model("models:/NAME@ALIAS")` loads it in any process that can import the workbench's
`jobs.runtimes` package (the workbench installed; no database, no `WORKBENCH_HOME`: only the model's own files), and
`mlflow models serve -m models:/NAME@ALIAS --env-manager local` serves it. The one wrapper covers every runtime the
workbench has (PyTorch, ONNX Runtime, TensorRT), because it loads the variant through the runtime registry exactly as
the playground, evaluation and benchmarks do, so its answers are theirs.

What is stored with the model: the variant's directory as the artifact `variant` (safetensors or ONNX weights,
tokenizer, config, `workbench.json`; never pickled weights), the runtime's name in the model config, a signature
(a `text` column of strings in; `label`, `confidence` and one `p_<label>` probability column per label out), an input
example and pinned requirements. Nothing is pickled: the model is "models from code" (`pyfunc_entry.py`, copied into
the model, imports `VariantModel` from this module), which is why the workbench must be importable where it loads.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

ARTIFACT = "variant"  # the key of the variant's directory in `context.artifacts`
TEXT_COLUMN = "text"
LABEL_COLUMN = "label"
CONFIDENCE_COLUMN = "confidence"
PROBABILITY_PREFIX = "p_"  # as the playground's CSV names its probability columns
WORKBENCH_DIST = "transformer-deployment-workbench"
EXAMPLE_TEXTS = ("I loved it: it works perfectly and arrived early.", "Terrible. It broke after one day.")
BATCH_SIZE = 32


def probability_column(label: str) -> str:
    return f"{PROBABILITY_PREFIX}{label}"


def _texts(model_input: Any) -> list[str]:
    """The texts of a request: a DataFrame with a `text` column (or a single column), a list or Series of strings,
    one string, or a {"text": [...]} mapping."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            column = model_input[TEXT_COLUMN]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ValueError(f"the input needs a {TEXT_COLUMN!r} column; it has {', '.join(map(str, model_input.columns))}")
        # MLflow turns a {"text": [...]} request into a one-row DataFrame whose cell is the whole list
        values = [text for cell in column.tolist()
                  for text in (list(cell) if isinstance(cell, (list, tuple, np.ndarray)) else [cell])]
    elif isinstance(model_input, dict):
        if TEXT_COLUMN not in model_input:
            raise ValueError(f"the input needs a {TEXT_COLUMN!r} key; it has {', '.join(map(str, model_input))}")
        values = model_input[TEXT_COLUMN]
        values = [values] if isinstance(values, str) else list(values)
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, (list, tuple, pd.Series, np.ndarray)):
        values = list(model_input)
    else:
        raise ValueError(f"the input must be a DataFrame with a {TEXT_COLUMN!r} column or a list of strings, "
                         f"not {type(model_input).__name__}")
    for i, value in enumerate(values, 1):
        if not isinstance(value, str):
            raise ValueError(f"text {i} is a {type(value).__name__}, not a string")
    return values


def answers_frame(labels: list[str], probabilities: np.ndarray) -> pd.DataFrame:
    """One row per text: the most probable label, its probability, then every label's probability."""
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1, len(labels))
    best = probabilities.argmax(axis=1)
    frame = pd.DataFrame({
        LABEL_COLUMN: pd.Series([labels[i] for i in best], dtype=object),
        CONFIDENCE_COLUMN: probabilities[np.arange(len(best)), best],
    })
    for i, label in enumerate(labels):
        frame[probability_column(label)] = probabilities[:, i]
    return frame


class VariantModel(mlflow.pyfunc.PythonModel):
    """A workbench variant behind MLflow's pyfunc interface. It imports the workbench's `jobs.runtimes` package
    (installed with the workbench) and loads the variant from the model's own `variant` artifact.

    The model config says which runtime loads it (`runtime`), on which device (`device`, cpu unless a runtime runs
    only on its own) and with how many CPU threads (`threads`, 0 for the runtime's default); MLflow lets a user
    override those it holds: `mlflow.pyfunc.load_model(uri, model_config={"device": "cuda", "threads": 4})`.
    """

    def load_context(self, context) -> None:
        from jobs.runtimes import get_runtime

        config = dict(context.model_config or {})
        runtime = get_runtime(config["runtime"])
        threads = config.get("threads")
        self.predictor = runtime.load(Path(context.artifacts[ARTIFACT]), runtime.device_for(config.get("device", "cpu")),
                                      None, int(threads) if threads else None)
        # a Hugging Face fast tokenizer is not safe to call from two threads at once ("Already borrowed"), and a
        # serving process may call predict from several
        self._lock = threading.Lock()

    # MLflow hands `predict` a DataFrame once the signature is enforced (the annotation tells it to leave the input
    # to the signature); a direct call on the unwrapped model may pass a list of strings as well
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = _texts(model_input)
        with self._lock:
            probabilities = self.predictor.predict(texts, batch_size=BATCH_SIZE)
        return answers_frame(self.predictor.labels, probabilities)


# ---- what registration stores with it ----------------------------------------------------------------------------


def variant_labels(model_dir: Path) -> list[str]:
    """The label names in the order of the model's outputs, from the variant's config.json (no model loaded)."""
    from jobs.tasks import text_classification

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"the variant has no config.json in {model_dir}: its labels are unknown")
    labels = text_classification.labels(json.loads(path.read_text()))
    if not labels:
        raise ValueError("the variant's config.json names no labels (id2label): it is not a classifier")
    return labels


def signature(labels: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [ColSpec("string", LABEL_COLUMN), ColSpec("double", CONFIDENCE_COLUMN)]
    outputs += [ColSpec("double", probability_column(label)) for label in labels]
    return ModelSignature(inputs=Schema([ColSpec("string", TEXT_COLUMN)]), outputs=Schema(outputs))


def _pinned(dist: str, *alternatives: str) -> str | None:
    """`dist==version` as installed here (a local tag like +cpu dropped); None when not installed."""
    for name in (dist, *alternatives):
        try:
            return f"{dist}=={importlib.metadata.version(name).split('+')[0]}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def requirements(runtime_name: str, model_dir: Path) -> list[str]:
    """What loading the model needs, pinned to this machine's versions. Listed explicitly: MLflow would otherwise
    infer them by loading the model in a subprocess at every registration.

    The workbench's own distribution is listed because the wrapper imports it; it is not on PyPI, so serve the
    model with `--env-manager local` from an environment where the workbench is installed."""
    from jobs.runtimes import get_runtime

    dists = [(WORKBENCH_DIST,), ("mlflow",), ("transformers",), ("tokenizers",), ("numpy",), ("pandas",)]
    dists += [(r.dist, *r.same_as) for r in get_runtime(runtime_name).export_requires or ()]
    if any(Path(model_dir).glob("*.model")):  # a SentencePiece tokenizer
        dists.append(("sentencepiece",))
    pins = [_pinned(*names) for names in dists]
    return [pin for pin in pins if pin]


def save(path: Path, model_dir: Path, runtime_name: str, labels: list[str], mlflow_model=None) -> None:
    """Write the MLflow model of a variant directory to `path` (a directory that must not exist yet)."""
    mlflow.pyfunc.save_model(
        path=str(path),
        # "models from code": MLflow copies this file into the model and runs it at load, so nothing is pickled
        python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
        artifacts={ARTIFACT: str(model_dir)},
        # every key a user may override at load time must be here: MLflow overrides only the keys it holds
        model_config={"runtime": runtime_name, "device": "cpu", "threads": 0},
        signature=signature(labels),
        input_example=pd.DataFrame({TEXT_COLUMN: list(EXAMPLE_TEXTS)}),
        pip_requirements=requirements(runtime_name, model_dir),
        mlflow_model=mlflow_model,
    )
    # MLflow runs the entry file while saving: the bytecode that leaves behind is no part of the model
    for cache in Path(path).rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
