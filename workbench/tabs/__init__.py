"""One module per tab; each has `build()` that lays out its components inside the current Blocks."""
