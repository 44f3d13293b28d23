"""The Optimize tab's choices, without a browser: every kind a user launches by hand, benchmark included."""

from __future__ import annotations

import pytest


def test_the_kind_list_offers_benchmark_but_not_what_is_queued_for_you():
    from workbench.tabs.optimize import kind_note, step_kinds

    names = [k["name"] for k in step_kinds()]
    assert {"finetune", "quantize", "prune", "distill", "export-onnx", "benchmark"} <= set(names)
    assert "evaluate" not in names and "inspect" not in names  # queued after each new variant / after intake
    assert "test-sleep" not in names  # takes no variant
    benchmark = next(k for k in step_kinds() if k["name"] == "benchmark")
    assert not benchmark["yields_variant"] and "last step" in kind_note("benchmark")


def test_a_benchmark_is_launched_from_the_tab_and_ends_a_pipeline(home, minilm_dir):
    from jobs import api
    from storage.errors import InvalidInput
    from workbench.tabs.optimize import add_step, launch_job

    root = api.add_model(api.ModelRequest(str(minilm_dir), name="mini")).variant
    status = launch_job("benchmark", {}, str(root.id), None, 0, 1.0)
    assert status.startswith("✓") and "(benchmark)" in status and "Compare" in status, status
    assert api.list_jobs(limit=1)[0].kind == "benchmark"

    steps, _, message = add_step([], "quantize", {"method": "torch-dynamic-int8"}, str(root.id), None)
    steps, _, message = add_step(steps, "benchmark", {}, str(root.id), None)
    assert [s["kind"] for s in steps] == ["quantize", "benchmark"], message
    after, _, refused = add_step(steps, "prune", {}, str(root.id), None)
    assert after == steps and "can only be the last step" in refused
    with pytest.raises(InvalidInput, match="yields no variant"):
        api.check_pipeline([api.Step("benchmark", {}), api.Step("quantize", {})], variant=root.id)
