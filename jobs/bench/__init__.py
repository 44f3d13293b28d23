"""Benchmarking: the stop rule, latency statistics, the isolated per-variant process and the hardware fingerprint."""
