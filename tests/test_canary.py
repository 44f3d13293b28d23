"""Canary deployments: real deployments (`python -m jobs.serving.server` processes started by `jobs.api.deploy`)
of tiny classifiers, real HTTP on 127.0.0.1, a real MLflow registry (SQLite under the test's home).

One data directory for the module: variants "a" (stable) and "b" (canary) that disagree often, and "broken", the
tiny model's files served by a test runtime that fails on every text (tests/support/canary_runtimes.py).
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import run_cli, wait_for

PLUGINS = "tests.support.kinds,tests.support.canary_runtimes"
READY_WITHIN_S = 120
TEXT = "what a wonderful day"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, minilm_dir):
    from jobs.plugins import import_plugins
    from storage import catalog, db
    from tests.support.tiny import add_two_tiny_variants

    root = tmp_path_factory.mktemp("canary")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root / "home"))
        for name in ("WORKBENCH_DB_URL", "MLFLOW_TRACKING_URI", "WORKBENCH_SERVING_API_KEYS"):
            mp.delenv(name, raising=False)
        mp.setenv("WORKBENCH_PLUGINS", PLUGINS)  # the server processes inherit it, and load the failing runtime
        # this process may have read WORKBENCH_PLUGINS before (another module ran first): register them here too,
        # since deploy checks the canary's runtime before it starts the server
        import_plugins()
        mp.setenv("WORKBENCH_MLFLOW", "on")
        db.dispose_all()
        db.upgrade()
        from jobs import api
        from jobs.tracking import model_registry

        a, b = add_two_tiny_variants(root, minilm_dir)
        fields = {k: getattr(a, k) for k in ("model_id", "artifact_dir", "precision", "files", "sha256",
                                             "size_bytes", "dataset_id")}
        broken = catalog.create_variant(parent_id=a.id, name="a > broken", runtime="test-failing",
                                        recipe={"steps": []}, info={}, **fields)
        model_registry.register_variant(a.id, "sentiment")
        model_registry.promote("sentiment", "1", "production")
        yield {"api": api, "a": a, "b": b, "broken": broken, "home": root / "home"}
        for deployment in api.list_deployments():
            if deployment.running:
                api.stop_deployment(deployment.id)
        db.dispose_all()


def ask(client: httpx.Client, url: str, user: str | None, text: str = TEXT) -> dict:
    headers = {"X-User-Id": user} if user is not None else {}
    response = client.post(f"{url}/v1/predict", json={"text": text}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def deploy_ready(api, *args, **kwargs):
    deployment = api.deploy(*args, wait_s=READY_WITHIN_S, **kwargs)
    assert deployment.status == "ready", api.deployment_logs(deployment.id).text[-3000:]
    return deployment


# ---- no server ----------------------------------------------------------------------------------------------


def test_events_and_feedback_round_trip_and_the_migration_goes_both_ways(home):
    from alembic import command
    from sqlalchemy import create_engine, inspect

    from storage import db, rollouts, settings
    from storage import deployments as store
    from storage.migrations import alembic_config

    made = store.create_deployment(
        name="d", variant_id=1, variant_sha256="a" * 64, alias=None, host="127.0.0.1", port=8123, config={},
        pid=None, status="ready", reason=None, log_path="", canary_variant_id=2, canary_variant_sha256="b" * 64,
        canary_ref="2", canary_percent=25.0, rollout={"min_requests": 50})
    assert (made.canary_variant_id, made.canary_percent, made.rollout) == (2, 25.0, {"min_requests": 50})
    assert rollouts.record_feedback(made.id, "r1", "canary", 2, "positive", True) is True
    assert rollouts.record_feedback(made.id, "r1", "canary", 2, "positive", False) is False  # replaced, not added
    rollouts.record_feedback(made.id, "r2", "stable", 1, None, True)
    assert rollouts.feedback_counts(made.id) == {2: {"with_feedback": 1, "correct": 0},
                                                 1: {"with_feedback": 1, "correct": 1}}
    event = rollouts.add_event(made.id, "auto_rollback", "canary rolled back automatically: x", {"k": 1},
                               canary_variant_id=None, canary_percent=0.0)
    after = store.get_deployment(made.id)
    assert (after.canary_variant_id, after.canary_percent) == (None, 0.0)
    assert rollouts.latest_events([made.id]) == {made.id: event}
    with pytest.raises(ValueError, match="a deployment event is one of"):
        rollouts.add_event(made.id, "exploded", "no")

    db.dispose_all()
    command.downgrade(alembic_config(settings.db_url()), "0009")
    raw = create_engine(settings.db_url())
    inspector = inspect(raw)
    assert "served_feedback" not in inspector.get_table_names()
    assert "canary_percent" not in {c["name"] for c in inspector.get_columns("deployments")}
    assert db.upgrade() == ("0009", db.head_revision())
    assert "canary_percent" in {c["name"] for c in inspect(raw).get_columns("deployments")}
    assert store.get_deployment(made.id).canary_percent == 0.0  # the rows kept, the new column defaulted
    raw.dispose()


def test_the_split_is_on_target_sticky_and_only_moves_users_to_the_canary():
    from jobs.playground import traffic
    from jobs.serving.canary import CANARY, pick_arm

    users = [f"user-{i}" for i in range(100_000)]
    at_10 = [pick_arm(u, "unused", 10, "deployment-7")[0] for u in users]
    at_25 = [pick_arm(u, "unused", 25, "deployment-7")[0] for u in users]
    assert abs(at_10.count(CANARY) / len(users) - 0.10) < 0.01 and abs(at_25.count(CANARY) / len(users) - 0.25) < 0.01
    assert all(after == CANARY for before, after in zip(at_10, at_25, strict=True) if before == CANARY)
    # the A/B tab's experiments hash the same way (one implementation, shared)
    assert all((traffic.assign_arm(u, 25, "deployment-7") == "B") == (arm == CANARY)
               for u, arm in zip(users[:2000], at_25[:2000], strict=True))
    # without a user id the request's own id decides: not sticky, the share holds on average
    assert pick_arm(None, "req-1", 100, "s") == (CANARY, "request_id")


def test_rollback_rules_compare_the_arms_with_figures_and_refuse_bad_thresholds():
    from jobs.serving.canary import ArmWindow, RolloutPolicy, rollback_reason

    policy = RolloutPolicy(percent=20, error_rate_increase=0.05, p95_ratio=1.5, min_requests=20, window_s=60)
    stable, canary = ArmWindow(60), ArmWindow(60)
    for i in range(40):
        stable.add(i % 20 == 0, 0.010, now=100.0)  # 5 % errors, 10 ms
        canary.add(False, 0.030 if i % 10 else 0.012, now=100.0)  # no errors, p95 30 ms: 3x slower
    reason = rollback_reason(stable.summary(100.0), canary.summary(100.0), policy)
    assert reason and "canary p95 30.0 ms vs stable 10.0 ms (3.00x > the allowed 1.5x)" in reason
    assert rollback_reason(stable.summary(100.0), canary.summary(100.0), RolloutPolicy(p95_ratio=4, min_requests=20)) is None
    # too few requests in the window: no verdict
    assert rollback_reason(stable.summary(100.0), canary.summary(100.0), RolloutPolicy(p95_ratio=1.5, min_requests=41)) is None
    failing = ArmWindow(60)
    for i in range(40):
        failing.add(i % 4 == 0, 0.010, now=100.0)
    reason = rollback_reason(stable.summary(100.0), failing.summary(100.0), policy)
    assert reason and reason.startswith("canary error rate 25.0% vs stable 5.0% (+20.0 points > the allowed +5)")
    assert stable.summary(161.0)["requests"] == 0  # older than the window: forgotten
    for bad, message in [({"percent": 101}, "canary_percent must be a number from 0 to 100"),
                         ({"p95_ratio": 1}, "rollback_p95_ratio must be a number above 1"),
                         ({"min_requests": 0}, "rollback_min_requests must be a whole number from 1")]:
        with pytest.raises(ValueError, match=message):
            RolloutPolicy(**bad)


def test_canary_flags_are_refused_with_one_line(lab):
    api = lab["api"]
    from storage.errors import InvalidInput

    with pytest.raises(InvalidInput, match="canary_percent needs a canary"):
        api.deploy(lab["a"].id, canary_percent=20)
    with pytest.raises(InvalidInput, match="the stable variant itself"):
        api.deploy(lab["a"].id, canary=str(lab["a"].id))
    proc = run_cli("deploy", str(lab["a"].id), "--canary", str(lab["b"].id), "--canary-percent", "150", check=False)
    assert proc.returncode == 2 and "canary_percent must be a number from 0 to 100, not 150.0 (--canary-percent)" \
        in proc.stderr, proc.stderr


# ---- a canary from NAME@ALIAS: routing, metrics, feedback, promote ------------------------------------------


def test_routing_metrics_feedback_and_promote_moving_the_alias(lab):
    from statsmodels.stats.proportion import proportion_confint

    from jobs.serving.canary import CANARY, STABLE, pick_arm
    from jobs.tracking.variant_refs import alias_target
    from storage import rollouts

    api, a, b = lab["api"], lab["a"], lab["b"]
    deployment = deploy_ready(api, "sentiment@production", canary=str(b.id), canary_percent=30)
    assert (deployment.variant_id, deployment.canary_variant_id, deployment.canary_percent) == (a.id, b.id, 30)
    salt = f"deployment-{deployment.id}"
    sent = {STABLE: 0, CANARY: 0}
    with httpx.Client(timeout=30) as client:
        # the same user always gets the same arm, the one consistent hashing names
        for user in [f"u{i}" for i in range(12)]:
            answers = [ask(client, deployment.url, user) for _ in range(4)]
            expected = pick_arm(user, "", 30, salt)[0]
            assert {(r["arm"], r["variant_id"], r["routed_by"]) for r in answers} == {
                (expected, b.id if expected == CANARY else a.id, "user")}
            sent[expected] += 4
        # without the header: the request id decides, so one caller reaches both arms
        anonymous = [ask(client, deployment.url, None) for _ in range(40)]
        assert {r["routed_by"] for r in anonymous} == {"request_id"}
        assert {r["arm"] for r in anonymous} == {STABLE, CANARY}
        for r in anonymous:
            sent[r["arm"]] += 1
        # raising the share only moves users from stable to canary (200 users, before and after)
        users = [f"user-{i}" for i in range(200)]
        before = {u: ask(client, deployment.url, u)["arm"] for u in users}
        raised = api.set_canary_percent(deployment.id, 60)
        assert raised.canary_percent == 60
        after = {u: ask(client, deployment.url, u)["arm"] for u in users}
        for arms in (before, after):
            for arm in arms.values():
                sent[arm] += 1
        assert all(after[u] == CANARY for u in users if before[u] == CANARY)
        moved = sum(before[u] == STABLE and after[u] == CANARY for u in users)
        assert moved > 20 and sum(a == CANARY for a in after.values()) > sum(a == CANARY for a in before.values())

        # /v1/model and /v1/rollout describe both arms
        model = client.get(f"{deployment.url}/v1/model").json()
        assert (model["variant_id"], model["arm"], model["canary"]["variant_id"], model["canary_percent"]) == (
            a.id, STABLE, b.id, 60)
        rollout = client.get(f"{deployment.url}/v1/rollout").json()
        assert [(arm["arm"], arm["variant_id"], arm["share_percent"]) for arm in rollout["arms"]] == [
            (STABLE, a.id, 40), (CANARY, b.id, 60)]

        # per-arm metrics count exactly what was sent; the old ones still work
        scrape = api.deployment_metrics(deployment.id)
        assert scrape.arm_requests == {(STABLE, str(a.id)): sent[STABLE], (CANARY, str(b.id)): sent[CANARY]}
        assert scrape.request_count() == sent[STABLE] + sent[CANARY] and scrape.canary_percent == 60
        assert scrape.arm_latency[(CANARY, str(b.id))].count == sent[CANARY]

        # feedback by request id: stored with the arm that answered, reported with a Wilson interval
        picked = [r for r in anonymous[:30]]
        verdicts = {r["request_id"]: (r["arm"], i % 3 != 0) for i, r in enumerate(picked)}
        for request_id, (_, correct) in verdicts.items():
            response = client.post(f"{deployment.url}/v1/feedback", json={"request_id": request_id, "correct": correct})
            assert response.status_code == 200 and response.json()["stored"], response.text
        again = client.post(f"{deployment.url}/v1/feedback", json={"request_id": picked[0]["request_id"],
                                                                    "correct": True})
        assert again.json()["replaced"] is True
        verdicts[picked[0]["request_id"]] = (picked[0]["arm"], True)
        unknown = client.post(f"{deployment.url}/v1/feedback", json={"request_id": "nope", "correct": True})
        assert unknown.status_code == 404 and "no answer with request_id 'nope'" in unknown.json()["detail"]
    report = {row.arm: row for row in api.canary_report(deployment.id, scrape)}
    for arm, variant in ((STABLE, a), (CANARY, b)):
        right = sum(c for r_arm, c in verdicts.values() if r_arm == arm)
        total = sum(1 for r_arm, _ in verdicts.values() if r_arm == arm)
        row = report[arm]
        assert (row.variant_id, row.with_feedback, row.correct, row.requests) == (variant.id, total, right, sent[arm])
        low, high = proportion_confint(right, total, alpha=0.05, method="wilson")
        assert row.accuracy == pytest.approx(right / total) and (row.ci_low, row.ci_high) == pytest.approx((low, high))
    assert rollouts.feedback_counts(deployment.id)[b.id]["with_feedback"] == report[CANARY].with_feedback
    # the Deploy tab's canary section shows the same rows (read-only: viewers see it too)
    from workbench.tabs.deploy_canary import canary_view

    arms_html, events_md = canary_view(str(deployment.id))
    low, high = report[CANARY].ci_low, report[CANARY].ci_high
    assert f"<td>#{b.id}</td><td>60 %</td><td>{sent[CANARY]:g}</td>" in arms_html
    assert f"[{low:.1%}, {high:.1%}]" in arms_html and "canary share changed from 30 % to 60 %" in events_md

    # the rollout is changed only with the deployment's admin token: from the environment, in no command line
    import psutil

    token_file = lab["home"] / "deployments" / f"{deployment.id}.admin-token"
    assert token_file.stat().st_mode & 0o077 == 0
    assert token_file.read_text() not in " ".join(psutil.Process(deployment.pid).cmdline())
    refused = httpx.post(f"{deployment.url}/v1/admin/promote", headers={"X-Admin-Token": "guess"}, timeout=30)
    assert refused.status_code == 403 and api.get_deployment(deployment.id).canary_variant_id == b.id

    # promote: the canary serves everyone as stable without a restart, and the alias moves to its new version
    pid = deployment.pid
    promoted = api.promote_canary(deployment.id)
    assert (promoted.variant_id, promoted.canary_variant_id, promoted.pid) == (b.id, None, pid)
    version, variant_id, _ = alias_target("sentiment", "production")
    assert (version, variant_id) == ("2", b.id)
    with httpx.Client(timeout=30) as client:
        answers = [ask(client, deployment.url, u) for u in users[:40]]
        assert {(r["arm"], r["variant_id"]) for r in answers} == {(STABLE, b.id)}
        assert client.get(f"{deployment.url}/v1/model").json()["canary"] is None
    event = api.deployment_events(deployment.id)[0]
    assert event.kind == "promote" and "sentiment@production now points at version 2" in event.message
    from storage.errors import Conflict

    with pytest.raises(Conflict, match="has no canary now") as refused_rollback:
        api.rollback_canary(deployment.id)
    # the refusal says how a promote is undone, and that way works: the alias goes back to version 1 (variant a)
    assert "workbench registry rollback sentiment --alias production" in str(refused_rollback.value)
    assert "back to version 1" in str(refused_rollback.value)
    api.stop_deployment(deployment.id)
    run_cli("registry", "rollback", "sentiment", "--alias", "production")
    assert alias_target("sentiment", "production")[:2] == ("1", a.id)


# ---- rollback by hand (the CLI) and by the server itself --------------------------------------------------


def test_rollback_from_the_cli_keeps_stable_at_100_percent(lab):
    api, a, b = lab["api"], lab["a"], lab["b"]
    deployment = deploy_ready(api, a.id, canary=str(b.id), canary_percent=50)
    deployment_id = deployment.id
    proc = run_cli("deployments", "canary", str(deployment_id), "--percent", "100")
    assert f"canary variant {b.id} now takes 100 % of users" in proc.stdout
    with httpx.Client(timeout=30) as client:
        assert {ask(client, deployment.url, f"x{i}")["arm"] for i in range(10)} == {"canary"}
        proc = run_cli("deployments", "rollback", str(deployment_id))
        assert f"canary variant {b.id} rolled back by hand" in proc.stdout
        assert {(r["arm"], r["variant_id"]) for r in (ask(client, deployment.url, f"x{i}") for i in range(10))} == {
            ("stable", a.id)}
        assert client.get(f"{deployment.url}/v1/rollout").json()["arms"][0]["share_percent"] == 100
    record = api.get_deployment(deployment_id)
    assert (record.canary_variant_id, record.canary_percent, record.variant_id) == (None, 0, a.id)
    api.stop_deployment(deployment_id)


def test_a_failing_canary_is_rolled_back_automatically(lab):
    api, a, broken = lab["api"], lab["a"], lab["broken"]
    deployment = deploy_ready(api, a.id, canary=str(broken.id), canary_percent=50,
                              rollback_error_rate_increase=0.05, rollback_min_requests=10)
    arms = []
    with httpx.Client(timeout=30) as client:
        for i in range(200):
            response = client.post(f"{deployment.url}/v1/predict", json={"text": TEXT},
                                   headers={"X-User-Id": f"user-{i}"})
            body = response.json()
            if response.status_code == 500:
                assert "this canary fails on purpose" in body["detail"]
                arms.append("canary")
            else:
                arms.append(body["arm"])
            if arms.count("canary") >= 10 and arms.count("stable") >= 10 and i % 10 == 0:
                rolled = client.get(f"{deployment.url}/v1/rollout").json()
                if rolled["canary_percent"] == 0:
                    break
        assert "canary" in arms
        after = [ask(client, deployment.url, f"user-{i}") for i in range(30)]
        assert {(r["arm"], r["variant_id"]) for r in after} == {("stable", a.id)}

    def recorded():
        return next((e for e in api.deployment_events(deployment.id) if e.kind == "auto_rollback"), None)

    event = wait_for(recorded, timeout=10, what="the automatic rollback's event")
    assert event.message.startswith("canary rolled back automatically: canary error rate 100.0% vs stable 0.0%")
    assert event.details["canary_variant_id"] == broken.id and event.details["figures"]["canary"]["requests"] >= 10
    assert api.get_deployment(deployment.id).canary_variant_id is None
    scrape = api.deployment_metrics(deployment.id)
    assert scrape.arm_errors.get(("canary", str(broken.id)), 0) >= 10
    proc = run_cli("deployments", "list")
    assert "canary rolled back automatically: canary error rate 100.0% vs stable 0.0%" in proc.stdout
    api.stop_deployment(deployment.id)
