"""Typed job parameters: conversion and clear refusals."""

from __future__ import annotations

import pytest

from jobs.runner.params import describe, parse_params
from storage.errors import InvalidInput
from tests.support.kinds import SleepParams


def test_values_are_converted_to_their_declared_types():
    p = parse_params(SleepParams, {"seconds": "1.5", "outcome": "raise"})
    assert p.seconds == 1.5 and p.outcome == "raise"


def test_unknown_parameters_are_refused_with_the_known_ones():
    with pytest.raises(InvalidInput, match="unknown parameter.*secs.*takes seconds, outcome, marker"):
        parse_params(SleepParams, {"secs": 1})


def test_choices_and_checks_explain_the_fix():
    with pytest.raises(InvalidInput, match="use one of succeed, raise, segfault, exit"):
        parse_params(SleepParams, {"outcome": "explode"})
    with pytest.raises(InvalidInput, match="seconds must be >= 0"):
        parse_params(SleepParams, {"seconds": -1})
    with pytest.raises(InvalidInput, match="must be a number"):
        parse_params(SleepParams, {"seconds": "soon"})


def test_describe_lists_fields_with_help_and_choices():
    fields = {f.name: f for f in describe(SleepParams)}
    assert fields["outcome"].choices == ("succeed", "raise", "segfault", "exit")
    assert fields["seconds"].default == 0.2 and fields["seconds"].help == "how long to run"


def test_a_pipeline_step_takes_list_values_after_its_commas():
    from jobs.kinds.benchmark import BenchmarkParams
    from jobs.runner.submit import parse_steps

    first, second = parse_steps("benchmark:batch_sizes=1,16,seq_lens=128,compare_with=2, 28 -> quantize:method=bf16")
    assert first.kind == "benchmark" and first.params == {"batch_sizes": "1,16", "seq_lens": "128",
                                                          "compare_with": "2,28"}
    parsed = parse_params(BenchmarkParams, first.params)
    assert list(parsed.batch_sizes) == [1, 16] and list(parsed.seq_lens) == [128]
    assert list(parsed.compare_with) == [2, 28]
    assert second.params == {"method": "bf16"}
    with pytest.raises(InvalidInput, match="expected key=value, got '16'"):  # nothing to continue
        parse_steps("benchmark:16,batch_sizes=1")
