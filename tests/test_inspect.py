"""`inspect` checks that a model's weights fit its architecture: random (missing) weights are a failure, a fresh
classification head on a base checkpoint is not. Real job processes on tiny models generated here."""

from __future__ import annotations

from pathlib import Path

from jobs.intake.models import ModelRequest, add_model
from jobs.runner.worker import Worker
from storage import queue
from storage.orm import JobStatus
from tests.support.tiny import tiny_classifier, tiny_encoder


def _tiny_config(tokenizer_dir: Path, **extra):
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, **extra)
    return config, tokenizer


def unrelated_weights(path: Path, tokenizer_dir: Path) -> Path:
    """A valid BERT config and tokenizer, and a safetensors file holding one tensor that belongs to nothing."""
    import torch
    from safetensors.torch import save_file

    config, tokenizer = _tiny_config(tokenizer_dir)
    config.architectures = ["BertModel"]
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    save_file({"unrelated.weight": torch.zeros(4, 4)}, str(path / "model.safetensors"))
    return path


def pretraining_checkpoint(path: Path, tokenizer_dir: Path) -> Path:
    """BERT's pretraining heads (`cls.*`) beside the encoder, as on the Hub: extra weights, not wrong ones."""
    from transformers import BertForPreTraining

    config, tokenizer = _tiny_config(tokenizer_dir)
    BertForPreTraining(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    config.architectures = ["BertModel"]
    config.save_pretrained(path)
    return path


def base_with_classifier_config(path: Path, tokenizer_dir: Path) -> Path:
    """An encoder without pooler whose config names a classifier: the head (and pooler) are newly initialised."""
    from transformers import BertModel

    config, tokenizer = _tiny_config(tokenizer_dir, num_labels=2)
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    config.architectures = ["BertForSequenceClassification"]
    config.save_pretrained(path)
    return path


def test_inspect_fails_weights_that_do_not_fit_and_passes_good_ones(home, tmp_path, minilm_dir):
    models = {
        "broken": unrelated_weights(tmp_path / "broken", minilm_dir),
        "classifier": tiny_classifier(tmp_path / "classifier", minilm_dir),
        "encoder": tiny_encoder(tmp_path / "encoder", minilm_dir),
        "pretraining": pretraining_checkpoint(tmp_path / "pretraining", minilm_dir),
        "fresh-head": base_with_classifier_config(tmp_path / "fresh-head", minilm_dir),
    }
    variants = {name: add_model(ModelRequest(str(path), name=name)).variant for name, path in models.items()}
    Worker(burst=True, poll_interval=0.05).run()
    jobs = {j.variant_id: j for j in queue.list_jobs(kind="inspect")}
    result = {name: jobs[v.id] for name, v in variants.items()}

    broken = result.pop("broken")
    assert broken.status is JobStatus.FAILED
    assert "the weights do not match the BertModel architecture" in broken.message
    assert "weights missing (they would be random): embeddings." in broken.message
    assert "1 unexpected weights the architecture has no place for: unrelated.weight" in broken.message
    assert "encoder.layer.0.attention.self.query.weight" in queue.job_log(broken.id)  # the full list is in the log

    for name, job in result.items():
        assert job.status is JobStatus.SUCCEEDED, (name, job.message, job.error)
    assert result["classifier"].result["task_note"] == ""
    assert "newly initialised" in result["fresh-head"].result["task_note"]
    assert result["fresh-head"].result["task"] == "text-classification"


def test_missing_pooler_and_fresh_head_are_expected_but_shape_mismatches_are_not(tmp_path):
    from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig, BertModel

    from jobs.kinds.inspect import check_loaded_weights

    small = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(BertConfig(**small), add_pooling_layer=False).save_pretrained(tmp_path / "nopool")
    model, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "nopool", output_loading_info=True)
    assert check_loaded_weights(model, info) == ([], ["classifier.bias", "classifier.weight"])
    model, info = AutoModel.from_pretrained(tmp_path / "nopool", output_loading_info=True)
    assert check_loaded_weights(model, info) == ([], [])

    BertConfig(**{**small, "intermediate_size": 64}).save_pretrained(tmp_path / "nopool")
    model, info = AutoModel.from_pretrained(tmp_path / "nopool", output_loading_info=True, ignore_mismatched_sizes=True)
    problems, _ = check_loaded_weights(model, info)
    assert problems == ["3 weights of the wrong shape: encoder.layer.0.intermediate.dense.bias (stored [32], the "
                        "architecture needs [64]), encoder.layer.0.intermediate.dense.weight (stored [32, 16], the "
                        "architecture needs [64, 16]), encoder.layer.0.output.dense.weight (stored [16, 32], the "
                        "architecture needs [16, 64])"]
