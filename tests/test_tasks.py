"""Tasks: the registry, recognising a model's task from its config, its labels and quality metric, and the task
recorded on a model at intake (a model no task can take is refused with nothing stored)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from jobs import tasks
from jobs.intake.models import ModelRequest, add_model
from jobs.tasks import get_task, known_tasks, register_task, task_of_config, text_classification
from storage import catalog, queue
from storage.errors import InvalidInput
from tests.conftest import stored_files

TEXT_CLASSIFICATION = text_classification.TASK


def hf_dir(root: Path, architectures: list[str] | None, **config) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if architectures is not None:
        config["architectures"] = architectures
    (root / "config.json").write_text(json.dumps({"model_type": "bert", **config}))
    (root / "model.safetensors").write_bytes(b"\0" * 64)
    (root / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return root


# ---- the registry -------------------------------------------------------------------------------------------


def test_the_registry_knows_text_classification_and_names_it_when_asked_for_another_task():
    assert known_tasks() == ["text-classification"]
    assert get_task("text-classification") is TEXT_CLASSIFICATION
    assert tasks.DEFAULT_TASK == "text-classification"
    with pytest.raises(InvalidInput, match="unknown task 'text-generation'; the workbench knows text-classification"):
        get_task("text-generation")


def test_a_task_registers_once_per_name():
    assert register_task(TEXT_CLASSIFICATION) is TEXT_CLASSIFICATION  # the same record again is harmless
    with pytest.raises(ValueError, match="registered twice"):
        register_task(replace(TEXT_CLASSIFICATION, display_name="Another"))


def test_text_classification_describes_what_differs_by_task():
    assert TEXT_CLASSIFICATION.display_name == "Text classification"
    assert TEXT_CLASSIFICATION.auto_model_class == "AutoModelForSequenceClassification"
    assert "[batch, num_labels]" in TEXT_CLASSIFICATION.prediction
    assert "batch size x sequence length" in TEXT_CLASSIFICATION.benchmark_measures
    scores = TEXT_CLASSIFICATION.metrics([0, 1, 1, 0], [0, 1, 0, 0], ["neg", "pos"])
    assert scores[TEXT_CLASSIFICATION.quality_metric] == 0.75
    assert scores["confusion"] == {"labels": ["neg", "pos"], "matrix": [[2, 0], [1, 1]]}


# ---- recognising a model's task -----------------------------------------------------------------------------


@pytest.mark.parametrize("architectures, has_head", [
    (["BertForSequenceClassification"], True),
    (["BertModel"], False),  # a bare encoder: fine-tuning gives it a head
    (["BertForMaskedLM"], False),  # how bert-base-uncased ships
    (["GPT2LMHeadModel"], False),
    ([], False),
    (None, False),
])
def test_text_models_are_taken_for_text_classification_with_or_without_a_head(architectures, has_head):
    config = {"model_type": "bert"} if architectures is None else {"model_type": "bert", "architectures": architectures}
    assert task_of_config(config) is TEXT_CLASSIFICATION
    assert TEXT_CLASSIFICATION.has_head(config) is has_head


def test_a_loaded_config_is_recognised_like_its_json():
    from transformers import BertConfig

    config = BertConfig(architectures=["BertForSequenceClassification"], id2label={0: "neg", 1: "pos"})
    assert task_of_config(config) is TEXT_CLASSIFICATION and TEXT_CLASSIFICATION.has_head(config)
    assert TEXT_CLASSIFICATION.labels(config) == ["neg", "pos"]
    assert not TEXT_CLASSIFICATION.has_head(BertConfig(architectures=["BertModel"]))


@pytest.mark.parametrize("architecture", ["ViTForImageClassification", "Wav2Vec2ForCTC", "DetrForObjectDetection"])
def test_image_and_audio_models_are_refused_naming_the_known_tasks(architecture):
    with pytest.raises(InvalidInput) as refused:
        task_of_config({"model_type": "x", "architectures": [architecture]}, shown="pixels")
    assert str(refused.value) == (f"pixels is a {architecture}, not a model the workbench can use: it handles text "
                                  f"classification (known tasks: text-classification)")


def test_a_task_whose_head_the_config_names_wins_over_one_that_could_fine_tune_it(monkeypatch):
    """The seam for text generation: a second task claims the configs that name its head."""
    generation = replace(TEXT_CLASSIFICATION, name="text-generation", display_name="Text generation",
                         has_head=lambda c: any(a.endswith("LMHeadModel") for a in c.get("architectures", [])),
                         can_become=lambda c: False)
    monkeypatch.setitem(tasks._TASKS, "text-generation", generation)
    assert task_of_config({"architectures": ["GPT2LMHeadModel"]}) is generation
    assert task_of_config({"architectures": ["BertModel"]}) is TEXT_CLASSIFICATION
    assert get_task("text-generation") is generation


# ---- labels ---------------------------------------------------------------------------------------------------


def test_labels_come_from_id2label_in_id_order():
    config = {"id2label": {"10": "k", "2": "c", "0": "a", "1": "b"}}
    assert TEXT_CLASSIFICATION.labels(config) == ["a", "b", "c", "k"]  # numeric order, not "10" before "2"
    assert TEXT_CLASSIFICATION.labels({}) == []
    assert text_classification.head_config(["neg", "pos"]) == {
        "num_labels": 2, "id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}


def test_head_labels_are_read_from_a_model_directory_only_when_it_has_the_head(tmp_path):
    classifier = hf_dir(tmp_path / "classifier", ["BertForSequenceClassification"], id2label={"1": "pos", "0": "neg"})
    encoder = hf_dir(tmp_path / "encoder", ["BertModel"], id2label={"0": "LABEL_0", "1": "LABEL_1"})
    assert TEXT_CLASSIFICATION.head_labels(classifier) == ["neg", "pos"]
    assert TEXT_CLASSIFICATION.head_labels(encoder) is None
    assert TEXT_CLASSIFICATION.head_labels(tmp_path / "missing") is None


def test_the_model_class_is_the_transformers_auto_class():
    from transformers import AutoModelForSequenceClassification

    assert TEXT_CLASSIFICATION.model_class() is AutoModelForSequenceClassification


# ---- the task recorded at intake ------------------------------------------------------------------------------


def test_intake_records_the_task_on_the_model(home, tmp_path):
    model = add_model(ModelRequest(str(hf_dir(tmp_path / "encoder", ["BertModel"])))).model
    assert model.task == "text-classification"
    assert catalog.get_model(model.id).task == "text-classification"
    assert [m.task for m in catalog.list_models()] == ["text-classification"]
    updated = catalog.update_model_info(model.id, {"architecture": "BertModel"})
    assert updated.task == "text-classification" and updated.info == {"architecture": "BertModel"}


def test_intake_refuses_a_model_no_task_can_take_and_stores_nothing(home, tmp_path):
    src = hf_dir(tmp_path / "vit", ["ViTForImageClassification"], model_type="vit")
    with pytest.raises(InvalidInput, match=r"^vit is a ViTForImageClassification, not a model the workbench can use: "
                                           r"it handles text classification \(known tasks: text-classification\)$"):
        add_model(ModelRequest(str(src)))
    assert catalog.list_models() == [] and catalog.list_variants() == [] and queue.list_jobs() == []
    assert stored_files(home) == []


def test_inspect_records_the_task_its_config_makes_and_what_the_checkpoint_does(home, tmp_path, minilm_dir):
    from jobs.runner.worker import Worker
    from tests.support.tiny import LABELS, tiny_classifier, tiny_encoder

    classifier = add_model(ModelRequest(str(tiny_classifier(tmp_path / "classifier", minilm_dir)))).model
    encoder = add_model(ModelRequest(str(tiny_encoder(tmp_path / "encoder", minilm_dir)))).model
    catalog.update_model_info(classifier.id, {}, task="stale")  # inspect sets it again from the config
    Worker(burst=True, poll_interval=0.05).run()
    classifier, encoder = catalog.get_model(classifier.id), catalog.get_model(encoder.id)
    assert classifier.task == "text-classification"
    assert classifier.info["task"] == "text-classification" and classifier.info["labels"] == list(LABELS)
    assert encoder.task == "text-classification"  # fine-tuning gives it a head
    assert encoder.info["task"] == "feature-extraction" and encoder.info["labels"] == []
