"""Measure on every machine class: the same tiny variants benchmarked through the Ray executor on each node of a
real two-node Ray cluster on this machine (tests/support/ray_cluster.py: node_a advertises the hardware class
node_a, node_b node_b), then the Compare tab's "Across machines" view built from those stored measurements, and
the Jobs tab's line on where jobs run (the Ray cluster's nodes and what runs on each; "local" without Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from storage.orm import JobStatus
from tests.conftest import REPO, use_database, wait_for
from tests.support.ray_cluster import RayCluster, ray_available

RAY_MISSING = ray_available()
BENCH = {"batch_sizes": [1], "seq_lens": [16], "warmup": 2, "window": 5, "min_samples": 10, "max_seconds": 1.5,
         "threads": 1}
CLASSES = ("node_a", "node_b")


def worker_process(*args: str, env: dict | None = None) -> subprocess.Popen:
    output = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker never blocks on a full pipe
    process = subprocess.Popen([sys.executable, "-m", "workbench", "worker", *args], cwd=REPO,
                               env={**os.environ, "WORKBENCH_HEARTBEAT_S": "0.5", **(env or {})},
                               stdout=output, stderr=subprocess.STDOUT)
    process.output = output
    return process


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.terminate()
    process.wait(timeout=60)
    process.output.seek(0)
    return process.output.read().decode(errors="replace")


@pytest.fixture(scope="module")
def measured(tmp_path_factory, minilm_dir):
    """One data directory for the module: two tiny models, benchmarked together on node_a and on
    node_b by one `workbench worker --executor ray` (one job at a time, so the two runs do not share the CPU);
    the worker and the cluster stay up for the Jobs tab's line."""
    if RAY_MISSING:
        pytest.skip(RAY_MISSING)
    from jobs import api
    from storage import db
    from tests.support.tiny import add_two_tiny_variants

    directory = tmp_path_factory.mktemp("machines")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_HOME", str(directory / "home"))
        patch.setenv("WORKBENCH_MLFLOW", "off")
        use_database(patch, None)
        db.dispose_all()
        db.upgrade()
        first, second = add_two_tiny_variants(directory, minilm_dir)
        cluster = RayCluster(cpus_per_node=1).start(node_a=1)
        worker = None
        try:
            cluster.add_node(node_b=1)
            cluster.wait_for_nodes(2)
            worker = worker_process("--executor", "ray", env={"RAY_ADDRESS": cluster.address})
            jobs = {cls: api.submit("benchmark", {**BENCH, "compare_with": [second.id], "hardware_class": cls},
                                    variant=first.id, dataset="toy") for cls in CLASSES}
            for cls, job in jobs.items():
                ended = wait_for(lambda j=job: (f := api.get_job(j.id)).status.finished and f, timeout=180,
                                 what=f"the benchmark on {cls}")
                assert ended.status is JobStatus.SUCCEEDED, api.job_log(job.id)[-3000:]
            yield {"cluster": cluster, "worker": worker, "home": directory / "home", "jobs": {c: api.get_job(j.id) for c, j in jobs.items()},
                   "first": first.id, "second": second.id}
        finally:
            output = stop(worker) if worker is not None else ""
            cluster.stop()
            db.dispose_all()
        assert "Traceback" not in output, output[-3000:]


def stored(job_id: int) -> dict[int, object]:
    from storage import catalog

    return {m.variant_id: m for m in catalog.list_measurements() if m.job_id == job_id}


def test_one_column_per_hardware_class_with_the_stored_figures(measured):
    from jobs import api
    from jobs.runner.params import RAN_ON

    view = api.across_machines("toy")
    assert (view.batch_size, view.seq_len) == (1, 16) and view.baseline_id == measured["first"]
    assert [c.hardware_class for c in view.columns] == list(CLASSES)
    assert [v for v, _ in view.variants] == [measured["first"], measured["second"]]
    for column in view.columns:
        job = measured["jobs"][column.hardware_class]
        rows = stored(job.id)
        # the column is that run on that node, under the fingerprint its measuring process recorded
        assert column.job_id == job.id and column.other_runs == 0
        assert column.fingerprint_hash == rows[measured["first"]].fingerprint_hash
        assert column.key == f"{column.hardware_class}/{column.fingerprint_hash}"
        assert column.node.startswith(f"node {job.params[RAN_ON]['node_id'][:12]} (")
        for variant_id, m in rows.items():
            cell = view.cell(variant_id, column.key)
            assert (cell.measurement_id, cell.p50_ms, cell.p95_ms, cell.throughput_sps, cell.samples) == \
                (m.id, m.p50_ms, m.p95_ms, m.throughput_sps, m.samples)
    # two nodes of one machine: the same fingerprint, kept apart by their classes, and said to be the same kind
    assert view.columns[0].fingerprint_hash == view.columns[1].fingerprint_hash
    assert view.columns[0].node != view.columns[1].node
    assert any("node_a and node_b have the same hardware/library fingerprint" in n for n in view.notes)
    # the main Compare view still holds one fingerprint, whose two runs are never mixed (one shown at a time)
    assert len(api.comparison("toy").fingerprints) == 1 and len(api.comparison("toy").runs) == 2


def test_busy_and_unstable_cells_are_marked_and_ratios_stay_within_a_column(measured):
    from jobs.decisions.compare import Rules
    from jobs.decisions.machines import across_machines
    from storage import catalog

    dataset = catalog.get_dataset("toy").id
    # any share of the CPU taken by other processes counts as busy: the cells' own recorded load decides
    strict = across_machines(dataset, rules=Rules(min_samples=1, busy_cpu_fraction=0.0))
    cells = list(strict.values.values())
    assert len(cells) == 4
    for cell in cells:
        m = next(m for m in catalog.list_measurements() if m.id == cell.measurement_id)
        busy = m.load["other_cpu_fraction"] + m.load["steal_fraction"]
        assert any(p.startswith("machine busy") for p in cell.problems) == (busy > 0)
        assert any(p.startswith("unstable") for p in cell.problems) == (not m.stable)
    # (whether any cell is busy depends on the machine's load then: the marks above are checked both ways instead)
    for column in strict.columns:
        base = strict.cell(strict.baseline_id, column.key)
        for variant_id, _ in strict.variants:
            cell = strict.cell(variant_id, column.key)
            # a ratio only where the column's baseline and the cell are both sound (they share the column's run)
            assert (cell.speedup is not None) == (base.sound and cell.sound)
            if cell.speedup is None:
                assert cell.no_speedup
    lenient = across_machines(dataset, rules=Rules(min_samples=1, busy_cpu_fraction=10.0))
    for (_, key), cell in lenient.values.items():
        base = lenient.cell(lenient.baseline_id, key)
        if cell.sound and base.sound:
            ratio = base.p50_ms / cell.p50_ms  # the median of the stored samples is the stored p50
            assert cell.speedup["speedup"] == pytest.approx(ratio, rel=0.02)


def test_the_across_machines_section_renders_the_columns(measured):
    from jobs import api
    from workbench.app import build_app
    from workbench.tabs.compare_machines import NOT_FACT, machines_view

    note, cell, baseline, chart, table = machines_view("", None, None)
    assert "on 2 machine(s)" in note and "node_a [" in note and "node_b [" in note
    assert cell["value"] == "1:16" and baseline["value"] == str(measured["first"])
    labels = [label for _, label in api.across_machines("toy").variants]
    # p50 and throughput side by side: one bar per variant in each, grouped by machine
    assert len(chart.data) == 4 and {t.name for t in chart.data} == set(labels)
    machines = sorted({x for t in chart.data for x in t.x})
    assert [m.split(" [")[0] for m in machines] == list(CLASSES)
    assert list(table["variant"]) == [f"{labels[0]} (baseline)", labels[1]]
    for machine in machines:
        assert f"{machine} p50 ms" in table.columns and f"{machine} samples/s" in table.columns
    view_cells = [v for c in table.columns if c.endswith("p50 ms") for v in table[c]]
    assert all(v.replace(".", "", 1).isdigit() or v.startswith("[") and NOT_FACT in v for v in view_cells)
    app = build_app()
    ids = {c.get("props", {}).get("elem_id") for c in app.config["components"]}
    assert {"machines-note", "machines-cell", "machines-baseline", "chart-machines", "machines-table",
            "executor-line"} <= ids


@pytest.mark.browser
def test_in_the_browser_the_section_draws_both_machines_and_the_jobs_tab_names_both_executors(measured):
    """The served app on the module's data directory: its own local worker beside the module's Ray worker."""
    from playwright.sync_api import expect

    from tests.support.browser import open_page, require_chromium, serve_app

    require_chromium()
    home = measured["home"]
    with serve_app(home, {"RAY_ADDRESS": ""}) as url, open_page(url) as page:
        page.get_by_role("tab", name="Compare").click()
        page.get_by_text("Across machines (one column per hardware class and fingerprint)").click()
        page.locator("#chart-machines .js-plotly-plot").wait_for(timeout=60_000)
        table = page.locator("#machines-table")
        expect(table).to_contain_text("node_a [", timeout=30_000)
        expect(table).to_contain_text("node_b [")
        expect(page.locator("#machines-note")).to_contain_text("have the same hardware/library fingerprint")
        page.get_by_role("tab", name="Jobs").click()
        line = page.locator("#executor-line")
        expect(line).to_contain_text("local (1 worker(s)", timeout=60_000)
        expect(line).to_contain_text(f"Ray cluster at {measured['cluster'].address} (1 worker(s))")


def test_the_jobs_line_shows_the_ray_nodes_and_what_runs_on_each(measured):
    from jobs import api
    from jobs.runner.executor_status import read_nodes
    from jobs.runner.params import RAN_ON
    from storage import queue
    from tests.conftest import free_port
    from workbench.cluster_view import executor_text

    cluster = measured["cluster"]
    job = api.submit("test-sleep", {"seconds": 60, "hardware_class": "node_b"})
    try:
        where = wait_for(lambda: api.get_job(job.id).params.get(RAN_ON), timeout=60, what="the job on node_b")

        def line_with_nodes():
            status = api.executor_status()  # the nodes are read in the background: the call never waits
            part = next((p for p in status.ray if p.address == cluster.address), None)
            return part is not None and part.probe is not None and executor_text(status)

        text = wait_for(line_with_nodes, timeout=90, what="the cluster's nodes in the Jobs line")
        assert f"Ray cluster at {cluster.address} (1 worker(s)), 2 node(s) alive: " in text
        assert f"node {where['node_id'][:8]} (CPU 1, GPU 0, node_b): job {job.id} test-sleep" in text
        assert "node_a): idle" in text and "local (" not in text
    finally:
        queue.request_cancel(job.id)
        wait_for(lambda: api.get_job(job.id).status.finished, timeout=30, what="the cancel")
    unreachable = read_nodes(f"127.0.0.1:{free_port()}", timeout=60)
    assert unreachable.nodes is None and unreachable.unreachable.startswith("no Ray cluster answers at 127.0.0.1:")


def test_the_jobs_line_says_local_without_ray(home):
    from workbench.tabs.jobs import executor_line

    assert executor_line() == "**Executor:** local (no worker running)"
    worker = worker_process("--concurrency", "2", env={"WORKBENCH_EXECUTOR": "local"})
    try:
        line = wait_for(lambda: "worker(s)" in (text := executor_line()) and text, timeout=60, what="the worker")
        assert line.startswith("**Executor:** local (1 worker(s), up to 2 job(s) at once") and "Ray" not in line
        # the UI's process (a fresh one here: this one imported Ray for the cluster) never imports Ray for it
        probe = subprocess.run([sys.executable, "-c", "import sys; from workbench.tabs.jobs import executor_line; "
                                "print(executor_line()); print('ray' in sys.modules)"],
                               capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
        assert probe.stdout.splitlines()[-2:] == [line, "False"]
    finally:
        stop(worker)
