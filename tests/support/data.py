"""A small, learnable 3-class sentiment CSV, so optimization tests train in seconds and accuracy means something."""

from __future__ import annotations

import csv
import random
from pathlib import Path

WORDS = {
    "positive": ["love", "great", "excellent", "wonderful", "happy", "fantastic", "amazing", "superb"],
    "negative": ["hate", "awful", "terrible", "horrible", "sad", "bad", "worst", "disgusting"],
    "neutral": ["table", "chair", "window", "paper", "street", "monday", "meeting", "train"],
}
TEMPLATES = ["the {x} one today", "i found it {x}", "what a {x} day", "{x} again, as usual", "my {x} experience", "so {x}"]


def write_sentiment_csv(path: Path, per_class: int = 70, seed: int = 7) -> Path:
    rng = random.Random(seed)
    rows = [
        (rng.choice(TEMPLATES).format(x=rng.choice(words)), label)
        for label, words in WORDS.items()
        for _ in range(per_class)
    ]
    rng.shuffle(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def write_mixed_lengths_csv(path: Path, rows: int = 200, seed: int = 5) -> Path:
    """Short and long texts mixed (2-4 words or 25-60 words): arrival-order batches pad short texts a lot."""
    rng = random.Random(seed)
    words = ["good", "bad", "table", "great", "awful", "chair", "train", "happy", "sad", "paper"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(rows):
            n = rng.randint(2, 4) if rng.random() < 0.6 else rng.randint(25, 60)
            writer.writerow([" ".join(rng.choice(words) for _ in range(n)), ("negative", "neutral", "positive")[i % 3]])
    return path
