"""The comparison on stored measurements: fingerprints never mixed, the report self-contained with its charts."""

from __future__ import annotations

import json

import pytest

from tests.support.rows import placeholder_dataset, placeholder_model


def _variant(catalog, model_id: int, parent_id: int, name: str, runtime: str = "pytorch", precision: str = "fp32"):
    return catalog.create_variant(model_id=model_id, parent_id=parent_id, name=name, artifact_dir="/nonexistent",
                                  runtime=runtime, precision=precision, recipe={"steps": []}, files=[], sha256=name,
                                  size_bytes=90_000_000)


def samples_around(p50: float, n: int = 50) -> list[float]:
    """n timings whose median is p50, within 1 % of it (a quiet machine)."""
    return [p50 * (1 + 0.01 * ((i % 7) - 3) / 3) for i in range(n)]


def benchmark_job() -> int:
    """A real job row for measurements to belong to (speedups are only computed within one job)."""
    from storage import queue

    return queue.enqueue("benchmark", {}).id


def _measure(catalog, variant_id: int, fp: dict, p50: float, batch: int = 1, seq: int = 128, job_id: int | None = None,
             samples: int = 50, stable: bool = True, other_cpu: float = 0.02, rough: bool = False) -> None:
    from jobs.bench.fingerprint import fingerprint_hash

    catalog.add_measurements([{
        "variant_id": variant_id, "job_id": job_id, "device": "cpu", "batch_size": batch, "seq_len": seq,
        "samples": samples, "samples_ms": samples_around(p50, samples),
        "p50_ms": p50, "p90_ms": p50 * 1.1, "p95_ms": p50 * 1.2, "p99_ms": p50 * 1.3, "mean_ms": p50, "std_ms": 1.0,
        "throughput_sps": batch * 1000 / p50, "tokens_per_s": batch * seq * 1000 / p50, "peak_rss_bytes": 400_000_000,
        "load_time_s": 1.0, "threads": 2, "stable": stable, "spread": 0.01 if stable else 0.3, "fingerprint": fp,
        "fingerprint_hash": fingerprint_hash(fp), "rough": rough,
        "load": {"loadavg_1m": 1.0, "other_cpu_fraction": other_cpu, "steal_fraction": 0.0, "cpus": 2},
    }])


@pytest.fixture
def two_machines(home):
    """Three variants measured on an AMX Xeon, and one of them again on a GPU box, with accuracies."""
    from storage import catalog

    model, root = placeholder_model(size_bytes=90_000_000)
    ds = placeholder_dataset()
    fp32, int8, bf16 = (_variant(catalog, model.id, root.id, f"m > {n}") for n in ("finetune-full", "ort-dynamic-int8", "bf16"))
    for v, acc in ((fp32, 0.80), (int8, 0.795), (bf16, 0.801)):
        catalog.add_evaluation(variant_id=v.id, dataset_id=ds.id, split="test", num_examples=100, accuracy=acc,
                               macro_f1=acc, confusion={}, predictions=[])
    xeon = {"device": "cpu", "cpu": "Xeon", "cpu_count": 2, "cpu_flags": ["amx_bf16"], "libraries": {"torch": "2.13"}}
    gpu = {"device": "cuda", "cpu": "EPYC", "cpu_count": 16, "cpu_flags": [], "gpu": "H100", "libraries": {"torch": "2.11"}}
    on_xeon = benchmark_job()
    for v, p50 in ((fp32, 100.0), (int8, 25.0), (bf16, 30.0)):
        _measure(catalog, v.id, xeon, p50, job_id=on_xeon)
    _measure(catalog, fp32.id, gpu, 3.0, job_id=benchmark_job())  # newest: the GPU box
    return {"fp32": fp32, "int8": int8, "bf16": bf16, "xeon": xeon, "gpu": gpu, "xeon_job": on_xeon}


def test_fingerprints_are_never_mixed(two_machines):
    from jobs import api
    from jobs.bench.fingerprint import fingerprint_hash

    newest = api.comparison()
    assert len(newest.fingerprints) == 2 and "never mixed" in newest.note
    assert {r["fingerprint"] for r in newest.rows} == {fingerprint_hash(two_machines["gpu"])}
    assert [r["variant_id"] for r in newest.rows] == [two_machines["fp32"].id]
    xeon = api.comparison(fingerprint=fingerprint_hash(two_machines["xeon"]))
    assert {r["fingerprint"] for r in xeon.rows} == {fingerprint_hash(two_machines["xeon"])} and len(xeon.rows) == 3


def test_decision_on_stored_rows(two_machines):
    from jobs import api
    from jobs.bench.fingerprint import fingerprint_hash
    from workbench.formatting import decision_table

    rows = api.comparison(fingerprint=fingerprint_hash(two_machines["xeon"])).rows
    decision = api.decide(rows, 1, 128, baseline_id=two_machines["fp32"].id, max_drop_points=1.0, hourly_price=1.0)
    assert decision.sweet.variant_id == two_machines["int8"].id
    ratio = decision.ratios[two_machines["int8"].id]
    assert ratio["speedup"] == pytest.approx(4.0) and ratio["low"] <= 4.0 <= ratio["high"]
    assert ratio["n_baseline"] == ratio["n_candidate"] == 50
    strict = api.decide(rows, 1, 128, baseline_id=two_machines["fp32"].id, max_drop_points=0.1)
    assert strict.sweet.variant_id == two_machines["bf16"].id  # int8 lost 0.5 points
    assert [p.variant_id for p in decision.front] == [two_machines["int8"].id, two_machines["bf16"].id]
    table = decision_table(decision)
    assert table[0]["sweet spot"] == "★" and table[0]["cost / 1M predictions (USD)"]
    assert table[0]["speedup (95% interval)"].startswith("4.00x (")


@pytest.mark.browser
def test_report_is_self_contained_and_shows_its_charts(two_machines, tmp_path):
    from jobs.bench.fingerprint import fingerprint_hash
    from tests.conftest import run_cli
    from tests.support.browser import open_page, require_chromium

    require_chromium()
    out = tmp_path / "report"
    run_cli("report", "--out", str(out), "--fingerprint", fingerprint_hash(two_machines["xeon"]), "--price-per-hour", "1")
    html = (out / "report.html").read_text()
    assert "<script src=" not in html  # plotly.js is inlined: the file opens offline
    rows = json.loads((out / "rows.json").read_text())
    assert len(rows) == 3 and (out / "rows.csv").read_text().count("\n") == 4
    with open_page(f"file://{out / 'report.html'}") as page:
        page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
        assert page.locator(".js-plotly-plot").count() == 5
        assert page.locator(".js-plotly-plot .main-svg").count() >= 5  # drawn, not just placeholders
        assert "Sweet spot" in page.content() and "ort-dynamic-int8" in page.content()


def test_advice_cites_what_this_machine_measured(home):
    from jobs import api
    from jobs.bench.fingerprint import fingerprint
    from storage import catalog

    model, root = placeholder_model()
    assert not any("measured on this machine" in n for n in api.hardware_advice("quantize", {"method": "bf16"}))
    int8 = _variant(catalog, model.id, root.id, "m > ort-dynamic-int8", runtime="onnxruntime", precision="int8")
    here = fingerprint("cpu")
    job = benchmark_job()
    _measure(catalog, root.id, here, 100.0, job_id=job)
    _measure(catalog, int8.id, here, 25.0, job_id=job)
    _measure(catalog, int8.id, {**here, "cpu": "another machine"}, 1.0, job_id=job)  # not this machine: ignored
    notes = api.hardware_advice("quantize", {"method": "ort-dynamic-int8"})
    assert any("measured on this machine" in n and f"onnxruntime int8 4.0x (job {job}, " in n for n in notes), notes
    assert any("dense runtime" in n for n in api.hardware_advice("prune", {"method": "l1-unstructured"}))

    # A faster fp32 variant (a distilled student) is not the baseline of the full model's children: each variant
    # is compared with its nearest measured fp32 PyTorch ancestor.
    student = _variant(catalog, model.id, root.id, "m > distill", runtime="pytorch", precision="fp32")
    student_bf16 = _variant(catalog, model.id, student.id, "m > distill > bf16", runtime="pytorch", precision="bf16")
    _measure(catalog, student.id, here, 50.0, job_id=job)
    _measure(catalog, student_bf16.id, here, 40.0, job_id=job)
    from jobs.decisions.advice import measured_speedups

    def ratios():
        return {k: m.ratio for k, m in measured_speedups("cpu").items()}

    assert ratios() == pytest.approx({"onnxruntime int8": 4.0, "pytorch bf16": 1.25})
    # Rough (quick-trial), unstable, busy or too-short cells never become advice, nor do ratios across jobs.
    for bad in (dict(rough=True), dict(stable=False), dict(other_cpu=0.6), dict(samples=5)):
        later = benchmark_job()
        _measure(catalog, root.id, here, 100.0, job_id=later, **bad)
        _measure(catalog, int8.id, here, 10.0, job_id=later, **bad)
        assert ratios()["onnxruntime int8"] == pytest.approx(4.0), bad
    _measure(catalog, int8.id, here, 10.0, job_id=benchmark_job())  # its fp32 ancestor is not in this job
    assert ratios()["onnxruntime int8"] == pytest.approx(4.0)
    newer = benchmark_job()
    _measure(catalog, root.id, here, 100.0, job_id=newer)
    _measure(catalog, int8.id, here, 50.0, job_id=newer)
    assert ratios()["onnxruntime int8"] == pytest.approx(2.0)  # the newest sound job's figure


def test_compare_tab_renders_one_fingerprint_and_exports(two_machines):
    from jobs.bench.fingerprint import fingerprint_hash
    from workbench.tabs.compare import render, write_report

    xeon = fingerprint_hash(two_machines["xeon"])
    note, fp, run, cell, baseline, sweet, table, *figures, rows = render(None, xeon, None, None, None, 0, 1.0, 1.0)
    assert "never mixed" in note and fp["value"] == xeon and cell["value"] == "1 x 128"
    assert run["value"] == str(two_machines["xeon_job"]) and "samples_ms" not in rows.columns
    assert "ort-dynamic-int8" in sweet and len(table) == 3 and len(rows) == 3
    assert all(f is not None for f in figures)
    assert set(rows["fingerprint"]) == {xeon}
    files = write_report(None, xeon, None, "1 x 128", str(two_machines["fp32"].id), 0, 1.0, 1.0)
    assert sorted(p.rsplit("/", 1)[-1] for p in files) == ["report.html", "rows.csv", "rows.json"]


# ---- charts and report readability ----------------------------------------------------------------------------


def _crowd(n: int):
    """n variants close together: latencies 0.3 ms apart, accuracies up and down (a few on the frontier)."""
    from jobs.decisions.compare import Point, pareto_front

    points = [Point(i, f"#{i} variant-{i}", 10.0 + 0.3 * i, 0.80 + 0.004 * ((i * 7) % 5), 9.0 + 0.3 * i)
              for i in range(1, n + 1)]
    return points, pareto_front(points)


def test_accuracy_vs_latency_labels_stay_readable_with_many_points():
    from workbench.compare_charts import LABEL_EVERY_POINT_UP_TO, accuracy_vs_latency

    points, front = _crowd(12)
    sweet = front[0]
    variants = accuracy_vs_latency(points, front, sweet).data[0]
    assert sorted(variants.hovertext) == sorted(p.label for p in points)  # every point names itself on hover
    printed = [t for t in variants.text if t]
    assert set(printed) == {p.label for p in front} | {sweet.label} and len(printed) < len(points)
    positions = [pos for t, pos in zip(variants.text, variants.textposition, strict=True) if t]
    assert all(a != b for a, b in zip(positions, positions[1:], strict=False))  # neighbours on different sides

    few, few_front = _crowd(LABEL_EVERY_POINT_UP_TO)
    labels = accuracy_vs_latency(few, few_front, None).data[0].text
    assert all(labels) and len(set(accuracy_vs_latency(few, few_front, None).data[0].textposition)) > 1


def test_latency_vs_batch_uses_a_log_axis_only_for_several_batch_sizes():
    from workbench.compare_charts import latency_vs_batch

    def row(label: str, batch: int) -> dict:
        return {"label": label, "batch_size": batch, "seq_len": 128, "p50_ms": 10.0 * batch, "p95_ms": 12.0 * batch}

    one = latency_vs_batch([row("#1 a", 1), row("#2 b", 1)], 128)
    assert one.layout.xaxis.type == "category" and {t.mode for t in one.data} == {"markers"}
    several = latency_vs_batch([row("#1 a", b) for b in (1, 8, 32)], 128)
    assert several.layout.xaxis.type == "log" and list(several.layout.xaxis.tickvals) == [1, 8, 32]
    assert several.data[0].mode == "lines+markers"


def test_report_rounds_its_tables_and_states_its_settings(two_machines, tmp_path):
    import re

    from jobs import api
    from jobs.bench.fingerprint import fingerprint_hash
    from workbench.report import ReportSettings, build_report
    from workbench.tabs.compare import write_report

    xeon = fingerprint_hash(two_machines["xeon"])
    comparison = api.comparison(fingerprint=xeon)
    decision = api.decide(comparison.rows, 1, 128, baseline_id=two_machines["fp32"].id, slo_ms=50.0,
                          max_drop_points=0.5, hourly_price=2.5)
    page = build_report(comparison, decision, ReportSettings(slo_ms=50.0, max_drop_points=0.5, price_per_hour=2.5)).html
    tables = "".join(re.findall(r"<table>.*?</table>", page, flags=re.S))
    assert "110.00" in tables and not re.search(r"\d\.\d{4,}", tables), re.findall(r"\d+\.\d{4,}", tables)[:5]
    assert "79.50 %" in tables  # an accuracy as a percentage, two decimals
    settings = page.split("<h2>Settings</h2>", 1)[1].split("<h2>", 1)[0]
    for expected in ("1 x 128 tokens", f"#{two_machines['fp32'].id} finetune-full", "50 ms", "0.5 points",
                     "2.50 USD per hour"):
        assert expected in settings, expected
    assert "<th>cost / 1M predictions (USD)</th>" in tables

    files = write_report(None, xeon, None, "1 x 128", str(two_machines["fp32"].id), 0, 1.0, 1.0)
    written = open(next(f for f in files if f.endswith("report.html")), encoding="utf-8").read()
    settings = written.split("<h2>Settings</h2>", 1)[1].split("<h2>", 1)[0]
    assert "1.00 USD per hour" in settings and "<td>none</td>" in settings and "1 point<" in settings


def test_the_report_csv_neutralises_spreadsheet_formulas(home, tmp_path):
    """Variant names are user text: in rows.csv a cell starting with = + - @ gets a leading apostrophe (OWASP)."""
    import csv

    from jobs import api
    from jobs.bench.fingerprint import fingerprint
    from storage import catalog
    from workbench.report import build_report

    names = ["=cmd|' /C calc'!A0", '+HYPERLINK("http://evil.example","click")', "@SUM(1)"]
    model, root = placeholder_model()
    job, here = benchmark_job(), fingerprint("cpu")
    for i, name in enumerate(names):
        _measure(catalog, _variant(catalog, model.id, root.id, name).id, here, 10.0 + i, job_id=job)
    comparison = api.comparison()
    decision = api.decide(comparison.rows, 1, 128)
    report = build_report(comparison, decision)
    report.write(tmp_path / "report")
    with open(tmp_path / "report" / "rows.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["variant"] for r in rows) == sorted("'" + n for n in names)
    assert all(r["p50_ms"] and not r["p50_ms"].startswith("'") for r in rows)
    assert sorted(json.loads(report.json), key=lambda r: r["p50_ms"])[0]["variant"] == names[0]  # JSON is left as it is
