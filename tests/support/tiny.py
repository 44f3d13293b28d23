"""A tiny randomly initialised BERT classifier with MiniLM's tokenizer: loads and runs in a blink."""

from __future__ import annotations

from pathlib import Path

LABELS = ("negative", "neutral", "positive")


def tiny_classifier(path: Path, tokenizer_dir: Path, seed: int = 0, init_range: float = 0.02,
                    max_positions: int = 512) -> Path:
    """`init_range` above ~0.5 gives confident, input-dependent answers (two seeds then disagree often);
    `max_positions` is its `max_position_embeddings` (the most tokens it takes)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)}, initializer_range=init_range,
        max_position_embeddings=max_positions,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def add_two_tiny_variants(directory: Path, tokenizer_dir: Path):
    """Two tiny classifiers that disagree often (seeds 0 and 1, confident initialisation) as models "a" and "b",
    and the toy sentiment dataset as "toy", in the current data directory. Returns the two root variants."""
    from jobs import api
    from tests.support.data import write_sentiment_csv

    a, b = (
        api.add_model(api.ModelRequest(str(tiny_classifier(directory / name, tokenizer_dir, seed, init_range=0.5)), name=name)).variant
        for seed, name in enumerate("ab")
    )
    api.add_dataset(api.DatasetRequest(str(write_sentiment_csv(directory / "toy.csv")), name="toy"))
    return a, b


def tiny_encoder(path: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A tiny BERT encoder without a classification head (like a pretrained checkpoint): it must be fine-tuned."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
