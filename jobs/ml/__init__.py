"""Machine learning shared by the kinds: the training loop, metrics and model validity, data splits, artifact
files and hashes, and the lineage of variants."""
