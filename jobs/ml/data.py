"""Examples for jobs: texts and label indices of a dataset split, aligned with a model's label names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from jobs.intake.datasets import load_split
from storage.entities import Dataset
from storage.errors import InvalidInput

SAMPLE_SEED = 1234  # fixed so a limited evaluation of a child and of its parent see the same examples


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def label_ids(self, label_names: Sequence[str]) -> list[int]:
        """Indices into `label_names`; refuses labels the model does not know."""
        index = {str(name): i for i, name in enumerate(label_names)}
        unknown = sorted(set(self.labels) - set(index))
        if unknown:
            raise InvalidInput(
                f"the dataset has labels the model does not know: {', '.join(unknown[:5])}; "
                f"model labels: {', '.join(map(str, label_names))}. Fine-tune on this dataset first."
            )
        return [index[label] for label in self.labels]


def stratified_sample(frame, limit: int):
    """`limit` rows with the split's label proportions (so a small evaluation is not skewed towards one label by
    chance), seeded so a child and its parent see the same rows; plain random when a label is too rare to split."""
    from sklearn.model_selection import train_test_split

    try:
        sample, _ = train_test_split(frame, train_size=limit, stratify=frame["label"], random_state=SAMPLE_SEED)
    except ValueError:  # a label with one row, or fewer rows per label than the split needs
        sample = frame.sample(n=limit, random_state=SAMPLE_SEED)
    return sample.sort_index()


def split_examples(dataset: Dataset, split: str, limit: int = 0) -> Examples:
    """A split in stored order, or a fixed random sample of `limit` examples from it."""
    if limit < 0:
        raise InvalidInput(f"the number of examples must be 0 (all) or positive, not {limit}")
    frame = load_split(dataset, split)
    if limit and limit < len(frame):
        frame = stratified_sample(frame, limit)
    return Examples([str(t) for t in frame["text"]], [str(label) for label in frame["label"]])
