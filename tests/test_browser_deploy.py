"""The Deploy tab in headless Chromium: a tiny classifier is deployed from the tab (starting → ready in the live
table), a few predictions sent to its URL show up as live metrics (requests, p50/p95 latency, the chart), its log
shows, and Stop turns it stopped."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from tests.support.browser import choose, module_home, open_page, require_chromium, serve_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT = 60_000
READY_WAIT = 120_000  # a server process imports torch and loads the model before it is ready
PREDICTIONS = 5


@pytest.fixture(scope="module")
def served(tmp_path_factory, minilm_dir):
    """The app on a fresh home holding one tiny classifier; any deployment still running afterwards is stopped."""
    require_chromium()
    from jobs import api
    from tests.support.tiny import tiny_classifier

    root = tmp_path_factory.mktemp("deploy")
    home = root / "home"
    with module_home(home):
        try:
            tiny = tiny_classifier(root / "tiny", minilm_dir)
            variant = api.add_model(api.ModelRequest(str(tiny), name="tiny")).variant
            with serve_app(home) as url:
                yield {"url": url, "variant": variant}
        finally:
            for deployment in api.list_deployments():  # a failed test leaves no server behind
                if deployment.running:
                    api.stop_deployment(deployment.id)


def row(page, deployment_id: int, status: str):
    return page.locator(f"#deployments-table tr[data-deployment-id='{deployment_id}'][data-status='{status}']")


def predict(url: str, text: str) -> dict:
    request = urllib.request.Request(f"{url}/v1/predict", data=json.dumps({"text": text}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_deploy_watch_live_metrics_and_stop_from_the_deploy_tab(served, tmp_path):
    from jobs import api

    started = time.monotonic()
    variant = served["variant"]
    with open_page(served["url"]) as page:
        page.get_by_role("tab", name="Deploy").click()
        choose(page, "deploy-variant", f"#{variant.id} ")
        page.locator("#deploy-name textarea").fill("tiny-live")
        page.locator("#deploy-max-wait input").fill("2")
        page.locator("#deploy-button").click()
        page.locator("#deploy-status").get_by_text("is starting").wait_for(timeout=WAIT)
        deployment = api.list_deployments()[0]
        assert deployment.name == "tiny-live" and deployment.variant_id == variant.id
        assert deployment.config["max_wait_ms"] == 2 and deployment.config["max_batch"] == 16

        # the handler returned at once; the table's refresh shows the server become ready
        row(page, deployment.id, "ready").wait_for(timeout=READY_WAIT)
        assert deployment.url in page.locator("#deployments-table").inner_text()
        assert f"#{deployment.id} tiny-live" in page.locator("#deploy-pick input").input_value()

        answers = [predict(deployment.url, f"text number {i}") for i in range(PREDICTIONS)]
        assert all(a["predictions"][0]["label"] in ("negative", "neutral", "positive") for a in answers), answers
        metrics = page.locator("#deploy-metrics")
        metrics.get_by_text(f"{PREDICTIONS} predict requests so far").wait_for(timeout=WAIT)
        metrics.get_by_text("/s over the last").wait_for(timeout=WAIT)
        text = metrics.inner_text()
        assert re.search(r"p50 \d+\.\d ms", text) and re.search(r"p95 \d+\.\d ms", text), text
        assert "Errors 0" in text, text
        page.locator("#deploy-chart .js-plotly-plot").wait_for(timeout=WAIT)
        assert "Texts per batch" in page.locator("#deploy-chart").text_content()  # the chart's SVG text
        page.screenshot(path=str(tmp_path / "deploy-ready.png"), full_page=True)

        page.get_by_text("Server log").first.click()
        page.locator("#deploy-log-refresh").click()
        page.wait_for_function("() => document.querySelector('#deploy-log textarea').value.includes("
                               f"'# deployment {deployment.id}')", timeout=WAIT)

        page.locator("#deploy-stop").click()
        page.locator("#deploy-status").get_by_text("stopped on request").wait_for(timeout=WAIT)
        row(page, deployment.id, "stopped").wait_for(timeout=WAIT)
        metrics.get_by_text("is stopped").wait_for(timeout=WAIT)
        assert api.get_deployment(deployment.id).status == "stopped"
        page.screenshot(path=str(tmp_path / "deploy-stopped.png"), full_page=True)
    print(f"deploy tab in {time.monotonic() - started:.0f}s")
