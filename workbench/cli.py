"""`workbench` command line: the same actions as the UI, each with --help and --json.

Bad input exits with status 2 and one line on stderr, and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from storage.errors import InvalidInput, WorkbenchError
from workbench.formatting import percent

EXIT_BAD_INPUT = 2


def _emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(human())


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "" for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _mb(n: int | None) -> str:
    return f"{n / 1e6:.1f} MB" if n else ""


def _params(pairs: list[str], raw_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if raw_json:
        try:
            parsed = json.loads(raw_json)
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"--params is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise WorkbenchError("--params must be a JSON object, like '{\"epochs\": 2}'")
        params.update(parsed)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise WorkbenchError(f"--param {pair!r} must look like name=value")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


# ---- models -------------------------------------------------------------------------------------------------


def cmd_models_add(args):
    from jobs import api
    from storage.entities import to_dict

    result = api.add_model(api.ModelRequest(args.source, name=args.name, allow_pickle=args.allow_pickle))
    data = {"model": to_dict(result.model), "variant": to_dict(result.variant), "notes": result.notes}

    def human():
        lines = [
            f"added model {result.model.id} {result.model.name!r} ({result.model.source_kind}: {result.model.source})",
            f"  root variant {result.variant.id}: {result.variant.runtime}, {_mb(result.variant.size_bytes)}, sha256 {result.variant.sha256}",
        ]
        lines += [f"  note: {n}" for n in result.notes]
        lines.append("  an `inspect` job was queued; see `workbench jobs list`")
        return "\n".join(lines)

    _emit(args, data, human)


def cmd_models_list(args):
    from jobs import api
    from storage.entities import to_dict

    models = api.list_models()
    rows = [
        {
            "id": m.id,
            "name": m.name,
            "source": f"{m.source_kind}:{m.source}" if m.source_kind != "builtin" else m.source,
            "architecture": m.info.get("architecture", "(inspecting)"),
            "params": f"{m.info['num_parameters'] / 1e6:.1f}M" if m.info.get("num_parameters") else "",
            "task": m.task,
        }
        for m in models
    ]
    _emit(args, [to_dict(m) for m in models], lambda: _table(rows, ["id", "name", "architecture", "params", "task", "source"]))


def cmd_models_show(args):
    from jobs import api
    from storage.entities import to_dict

    model = api.get_model(args.ref)
    variants = api.list_variants(model.id)
    data = {**to_dict(model), "variants": [to_dict(v) for v in variants]}

    def human():
        lines = [f"model {model.id} {model.name!r}", f"  source: {model.source_kind}: {model.source}",
                 f"  task: {model.task}"]
        # the inspected `task` is what the checkpoint does as it is (a bare encoder: feature-extraction)
        lines += [f"  {'checkpoint task' if k == 'task' else k}: {v}" for k, v in model.info.items()
                  if k not in ("inputs", "outputs")]
        lines.append("  variants:")
        for v in variants:
            lines.append(f"    {v.id} {v.name!r} {v.runtime}/{v.precision} {_mb(v.size_bytes)} sha256 {v.sha256}")
            lines += [f"      {f['sha256']}  {f['path']} ({f['size']} bytes)" for f in v.files]
        return "\n".join(lines)

    _emit(args, data, human)


# ---- datasets -----------------------------------------------------------------------------------------------


def cmd_datasets_add(args):
    from jobs import api
    from storage.entities import to_dict

    ds = api.add_dataset(
        api.DatasetRequest(args.source, name=args.name, text_column=args.text_column, label_column=args.label_column, seed=args.seed)
    )
    _emit(
        args,
        to_dict(ds),
        lambda: f"added dataset {ds.id} {ds.name!r}: {ds.num_rows} rows, {len(ds.labels)} labels "
        f"({', '.join(ds.labels)}); split {ds.split_sizes} with seed {ds.split_seed}",
    )


def cmd_datasets_list(args):
    from jobs import api
    from storage.entities import to_dict

    datasets = api.list_datasets()
    rows = [
        {"id": d.id, "name": d.name, "rows": d.num_rows, "labels": ", ".join(d.labels), "source": d.source} for d in datasets
    ]
    _emit(args, [to_dict(d) for d in datasets], lambda: _table(rows, ["id", "name", "rows", "labels", "source"]))


def cmd_datasets_show(args):
    from jobs import api
    from storage.entities import to_dict

    ds = api.get_dataset(args.ref)
    preview = api.preview_dataset(ds.id, rows=args.preview)
    data = {**to_dict(ds), "preview": preview}

    def human():
        lines = [
            f"dataset {ds.id} {ds.name!r} ({ds.source_kind}: {ds.source}), text column {ds.text_column!r}, label column {ds.label_column!r}",
            f"  {ds.num_rows} rows; split {ds.split_sizes} (seed {ds.split_seed}); sha256 {ds.sha256}",
            "  classes: " + ", ".join(f"{k} {v}" for k, v in ds.class_counts.items()),
        ]
        lines += [f"  [{r['label']}] {r['text'][:100]}" for r in preview]
        return "\n".join(lines)

    _emit(args, data, human)


# ---- jobs ---------------------------------------------------------------------------------------------------


def _job_row(j) -> dict[str, Any]:
    return {
        "id": j.id,
        "kind": j.kind,
        "status": j.status.value,
        "progress": f"{j.progress:.0%}",
        "variant": j.variant_id or "",
        "dataset": j.dataset_id or "",
        "message": j.message[:60],
        "seconds": f"{j.duration_s:.1f}" if j.duration_s is not None else "",
    }


def _evaluation(args) -> dict[str, Any] | None:
    options = {"max_examples": args.eval_examples, "tolerance_points": args.tolerance}
    options = {k: v for k, v in options.items() if v is not None}
    return options or None


def _wait(job_ids: list[int]) -> list[Any]:
    from jobs import api

    while True:
        jobs = [api.get_job(i) for i in job_ids]
        if all(j.status.finished for j in jobs):
            return jobs
        time.sleep(0.5)


def cmd_jobs_submit(args):
    from jobs import api
    from storage.entities import to_dict

    job = api.submit(
        args.kind,
        _params(args.param, args.params),
        model=args.model,
        variant=args.variant,
        dataset=args.dataset,
        depends_on=args.depends_on,
        evaluation=_evaluation(args),
    )
    auto = api.explain_defaults(job.kind, job.params, job.dataset_id) if job.dataset_id else {}
    advice = api.hardware_advice(job.kind, job.params)
    if args.wait:
        job = _wait([job.id])[0]
    _emit(args, {**to_dict(job), "auto": auto, "advice": advice}, lambda: "\n".join(
        [f"job {job.id} ({job.kind}) {job.status.value}" + (f": {job.message}" if args.wait else "")]
        + [f"  {name}: auto -> {why}" for name, why in auto.items()] + [f"  advice: {note}" for note in advice]))
    if args.wait and job.status.value != "succeeded":
        return 1


def _pipeline_output(args, jobs) -> int | None:
    from storage.entities import to_dict

    if args.wait:
        jobs = _wait([j.id for j in jobs])
    from jobs import api

    lines = [f"pipeline {jobs[0].pipeline}: {len(jobs)} step(s)"]
    for j in jobs:
        lines.append(f"  job {j.id} {j.kind} {j.params}: {j.status.value}" + (f" ({j.message})" if args.wait else ""))
        auto = api.explain_defaults(j.kind, j.params, j.dataset_id) if j.dataset_id else {}
        lines += [f"    {name}: auto -> {why}" for name, why in auto.items()]
    _emit(args, [to_dict(j) for j in jobs], lambda: "\n".join(lines))
    if args.wait and any(j.status.value != "succeeded" for j in jobs):
        return 1
    return None


def cmd_pipelines_submit(args):
    from jobs import api

    steps = api.parse_steps(args.steps)
    jobs = api.submit_pipeline(steps, model=args.model, variant=args.variant, dataset=args.dataset, evaluation=_evaluation(args))
    return _pipeline_output(args, jobs)


def cmd_pipelines_rerun(args):
    from jobs import api

    jobs = api.rerun_recipe(args.variant, dataset=args.dataset, evaluation=_evaluation(args))
    return _pipeline_output(args, jobs)


def _search_text(status) -> str:
    """A search's status as lines: goal and budget, why it stopped, one line per trial, the best."""
    goal = ", ".join(f"{k}={v}" for k, v in status.goal.items())
    lines = [f"search job {status.job_id}: {status.state}; {status.elapsed_s / 60:.1f} of {status.budget_s / 60:g} min "
             f"used; {goal}" + (f"; stopped: {status.stop_reason}" if status.stop_reason else "")]
    front = set(status.front)
    for t in ([status.baseline] if status.baseline else []) + status.trials:
        marks = ("*" if status.best and t.number == status.best.number else "") + ("F" if t.number in front else "")
        what = " -> ".join(s["kind"] + (":" + ",".join(f"{k}={v}" for k, v in s["params"].items()) if s["params"] else "")
                           for s in t.steps) or "baseline (fp32, as given)"
        figures = [f"variant #{t.variant_id}" if t.variant_id else "",
                   f"accuracy {t.accuracy:.4f}" if t.accuracy is not None else "",
                   f"drop {t.drop_points:.2f} pt" if t.drop_points is not None else "",
                   f"p50 {t.p50_ms:.2f} ms" if t.p50_ms is not None else "",
                   f"{t.speedup:.2f}x" if t.speedup is not None else ""]
        lines.append(f"{marks:>2} {t.number:>3} {t.state:<8} {what}")
        lines.append("       " + ", ".join(f for f in figures if f) + "".join(
            f"\n       out: {p}" for p in ([t.reason] if t.reason else []) + t.problems))
    lines.append(f"best: trial {status.best.number}, {status.best.speedup:.2f}x" if status.best and status.best.speedup
                 else "best: none yet (no sound trial within the drop)")
    if status.confirmation is not None:
        from workbench.search_words import confirmation_sentence

        lines.append(confirmation_sentence(status))
    return "\n".join(lines)


def _search_data(status) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(status)


def cmd_search(args):
    from jobs import api

    if (args.traffic == "real") and args.seq_len is not None:
        raise InvalidInput("--seq-len does not apply to --traffic real (the test split's own lengths)")
    job = api.submit_search(args.model, args.dataset, max_drop_points=args.max_drop, batch_size=args.batch_size,
                            seq_len=args.seq_len or 128, traffic=args.traffic, device=args.device,
                            budget_s=args.budget_min * 60, n_trials=args.trials, quick=args.quick,
                            speedup=args.speedup)
    if not args.wait:
        _emit(args, {"id": job.id, "kind": job.kind, "params": job.params},
              lambda: f"queued search job {job.id}; follow it with `workbench search-status {job.id}`")
        return None
    _wait([job.id])
    status = api.search_status(job.id)
    _emit(args, _search_data(status), lambda: _search_text(status))
    return 0 if status.state == "succeeded" else 1


def cmd_search_status(args):
    from jobs import api

    status = api.search_status(args.job_id)
    _emit(args, _search_data(status), lambda: _search_text(status))


def cmd_jobs_list(args):
    from jobs import api
    from storage.entities import to_dict

    jobs = api.list_jobs(args.status, limit=args.limit)
    _emit(args, [to_dict(j) for j in jobs], lambda: _table([_job_row(j) for j in jobs], list(_job_row(jobs[0]) if jobs else ["id"])))


def cmd_jobs_show(args):
    from jobs import api
    from storage.entities import to_dict

    job = api.get_job(args.id)

    def human():
        lines = [f"job {job.id} ({job.kind}): {job.status.value} {job.progress:.0%} - {job.message}"]
        for key in ("params", "variant_id", "dataset_id", "produced_variant_id", "worker_id", "attempts", "created_at", "started_at", "finished_at"):
            lines.append(f"  {key}: {getattr(job, key)}")
        if job.error:
            lines.append("  error: " + job.error.strip().replace("\n", "\n    "))
        if job.result:
            lines.append("  result: " + json.dumps(job.result, default=str))
        return "\n".join(lines)

    _emit(args, to_dict(job), human)


def cmd_jobs_cancel(args):
    from jobs import api
    from storage.entities import to_dict

    job = api.cancel_job(args.id)
    _emit(args, to_dict(job), lambda: f"job {job.id}: {job.status.value} ({job.message})")


LOG_POLL_S = 1.0


def cmd_jobs_logs(args):
    from jobs import api

    job = api.get_job(args.id)
    if args.json:
        print(json.dumps({"id": job.id, "log": api.job_log(job.id)}))
        return
    last_id = 0
    settling = False
    while True:
        # The status is read before the chunks, so once it says finished, what the job printed until then follows.
        finished = args.follow and api.get_job(job.id).status.finished
        while chunks := api.job_log_chunks(job.id, after_id=last_id):
            sys.stdout.write("".join(text for _, text in chunks))
            sys.stdout.flush()
            last_id = chunks[-1][0]
        if not args.follow or settling:
            break
        # The worker appends a finished job's last output after the job process has exited: one more read gets it.
        settling = finished
        time.sleep(LOG_POLL_S)


def cmd_jobs_kinds(args):
    from jobs import api

    kinds = api.job_kinds()
    unavailable = api.kind_availability()
    for k in kinds:
        k["unavailable"] = unavailable.get(k["name"])

    def human():
        lines = []
        for k in kinds:
            needs = ", ".join(n for n, flag in (("variant", k["needs_variant"]), ("dataset", k["needs_dataset"])) if flag)
            lines.append(f"{k['name']}: {k['summary']} (needs {needs or 'nothing'}; device {k['device']})")
            if k["unavailable"]:
                lines.append(f"    {k['unavailable']}")
            lines += [f"    {p['name']} = {p['default']!r}: {p['help']}" for p in k["params"]]
        return "\n".join(lines)

    _emit(args, kinds, human)


# ---- variants -----------------------------------------------------------------------------------------------


def cmd_variants_download(args):
    from jobs import api

    result = api.zip_variant(args.ref, args.out)
    data = {"zip": str(result.path), "variant": result.variant_id, "files": result.files, "bytes": result.bytes}
    _emit(args, data, lambda: f"wrote {result.path}: variant {result.variant_id}, {len(result.files)} files "
                              f"({_mb(result.bytes)} before compression), each matching its recorded sha256")


def cmd_variants_list(args):
    from jobs import api

    tree = api.variant_tree(args.model)
    rows = [
        {"id": v.id, "variant": "  " * v.depth + ("└ " if v.depth else "") + v.label,
         "runtime": v.runtime, "precision": v.precision, "size": _mb(v.size_bytes),
         "accuracy": percent(v.accuracy) if v.accuracy is not None else v.evaluation,
         "vs parent": "" if v.drop_points is None else f"{0.0 - v.drop_points:+.2f} pts",
         "flag": "; ".join(f for f in (f"FLAGGED: {v.drop_points:.2f} pts below parent" if v.flagged else "",
                                         f"DEGENERATE: {v.degenerate_reason}" if v.degenerate else "") if f)}
        for v in tree
    ]
    _emit(args, [v.to_dict() for v in tree],
          lambda: _table(rows, ["id", "variant", "runtime", "precision", "size", "accuracy", "vs parent", "flag"]))


def cmd_variants_show(args):
    from jobs import api
    from storage.entities import to_dict

    detail = api.variant_detail(args.ref)
    v = detail["variant"]

    def human():
        lines = [f"variant {v.id} {v.name!r}: {v.runtime}/{v.precision}, {_mb(v.size_bytes)}",
                 "  lineage: " + " -> ".join(f"{a.id} ({(a.recipe.get('steps') or [{}])[-1].get('kind', '?')})" for a in detail["lineage"]),
                 f"  artifact: {v.artifact_dir}", f"  sha256: {v.sha256}", "  recipe:"]
        lines += [f"    {i}. {s['kind']} {json.dumps(s.get('params', {k: s[k] for k in s if k != 'kind'}))}"
                  for i, s in enumerate(v.recipe.get("steps", []), start=1)]
        for ev in detail["evaluations"]:
            line = f"  evaluation {ev.id}: accuracy {percent(ev.accuracy)}"
            if ev.accuracy_low is not None:
                line += f" (95% interval {percent(ev.accuracy_low)}-{percent(ev.accuracy_high)})"
            line += f", macro-F1 {ev.macro_f1:.4f} on {ev.num_examples} {ev.split} examples"
            if ev.majority_accuracy is not None:
                line += f"; always {ev.majority_label!r} would score {percent(ev.majority_accuracy)}"
            if ev.per_class_recall:
                line += "; recall " + ", ".join(f"{k} {percent(r) if r is not None else '-'}" for k, r in ev.per_class_recall.items())
            if ev.parent_accuracy is not None:
                line += f"; parent {percent(ev.parent_accuracy)} ({0.0 - ev.drop_points:+.2f} pts), agreement {percent(ev.agreement_with_parent)}"
            if ev.flagged:
                line += f"  FLAGGED (tolerance {ev.tolerance_points} pts)"
            if ev.degenerate:
                line += f"  DEGENERATE: {ev.degenerate_reason}"
            lines.append(line)
        summary = detail["summary"]
        if not detail["evaluations"] and summary is not None:
            lines.append(f"  evaluation: {summary.evaluation}")
        for h in detail["history"]:
            lines.append(f"  epoch {h['epoch']}: loss {h['train_loss']}, validation accuracy {percent(h['val_accuracy'])}, macro-F1 {h['val_macro_f1']}")
        lines += [f"  {k}: {json.dumps(val)}" for k, val in v.info.items() if k != "training"]
        lines.append("  files:")
        lines += [f"    {f['sha256']}  {f['path']}" for f in v.files]
        return "\n".join(lines)

    data = {**to_dict(v), "lineage": [a.id for a in detail["lineage"]], "evaluations": [to_dict(e) for e in detail["evaluations"]]}
    _emit(args, data, human)


# ---- report -------------------------------------------------------------------------------------------------


def cmd_report(args):
    from pathlib import Path

    from jobs import api
    from workbench.report import ReportSettings, build_report

    comparison = api.comparison(args.dataset, args.fingerprint)
    if not comparison.rows:
        raise InvalidInput("no measurements to report: run a benchmark job first")
    cells = sorted({(r["batch_size"], r["seq_len"]) for r in comparison.rows})
    batch, seq = (args.batch, args.seq) if args.batch and args.seq is not None else cells[0]
    decision = api.decide(comparison.rows, batch, seq, args.baseline, args.slo_ms, args.max_drop, args.price_per_hour or 0.0)
    settings = ReportSettings(slo_ms=args.slo_ms, max_drop_points=args.max_drop, price_per_hour=args.price_per_hour or 0.0)
    paths = build_report(comparison, decision, settings).write(Path(args.out))
    data = {"files": [str(p) for p in paths], "fingerprint": comparison.fingerprint.hash, "rows": len(comparison.rows),
            "sweet_spot": decision.sweet.label if decision.sweet else None}
    _emit(args, data, lambda: "\n".join(
        [f"wrote {p}" for p in paths] + [f"fingerprint {comparison.fingerprint.description}", comparison.note,
                                         f"sweet spot at {api.cell_label(batch, seq)}: {data['sweet_spot'] or 'none meets the SLO and tolerance'}"]
    ).strip())


# ---- playground ---------------------------------------------------------------------------------------------


def cmd_predict(args):
    from dataclasses import asdict

    from jobs import api

    if args.out:  # checked before any work, so a bad --out costs nothing and writes nothing
        out = Path(args.out)
        if not out.is_dir():
            raise InvalidInput(f"--out {args.out}: {'not a directory' if out.exists() else 'no such directory'}; "
                               "create it first or pick an existing one")
        if not os.access(out, os.W_OK | os.X_OK):
            raise InvalidInput(f"--out {args.out}: this directory is not writable")
    if args.file:
        texts = api.texts_from_file(args.file, args.column)
    elif args.texts:
        texts = args.texts
    else:
        texts = api.texts_from_lines(sys.stdin.read())
    batch = api.predict_batch(args.variant, texts)
    if args.out:
        try:
            written = batch.write_csv(Path(args.out))
        except OSError as exc:  # removed or filled up meanwhile
            raise InvalidInput(f"--out {args.out}: cannot write the CSV ({exc.strerror or exc})") from None
        print(f"wrote {written}", file=sys.stderr)
    data = [{**asdict(p), "truncated": p.truncated} for p in batch.predictions]

    def text() -> str:
        lines = []
        for p in batch.predictions:
            note = f"  ({p.truncation_note})" if p.truncated else ""
            lines.append(f"{p.label:>12} {p.confidence:6.1%}  {p.text[:80]}{note}")
        lines.append(f"{len(texts)} texts in {batch.total_ms:.1f} ms")
        return "\n".join(lines)

    _emit(args, data, text)


def cmd_export_space(args):
    from jobs import api

    result = api.export_space(args.variant, args.directory, force=args.force, title=args.title, license_=args.license,
                              check=not args.no_check)
    data = {"directory": str(result.directory), "variant": result.variant_id, "runtime": result.runtime,
            "files": result.files, "model_bytes": result.model_bytes, "requirements": result.requirements,
            "notes": result.notes, "check": result.check}

    def human() -> str:
        lines = [f"wrote {result.directory}: app.py, requirements.txt, README.md and model/ "
                 f"({sum(f.startswith('model/') for f in result.files)} files, {_mb(result.model_bytes)})"]
        lines += [f"  note: {n}" for n in result.notes]
        if result.check:
            top = max(result.check, key=result.check.get)
            lines.append(f"  checked: the app loads and predicts ({top} {result.check[top]:.1%} on a test sentence)")
        lines.append(f"  try it: cd {result.directory} && pip install -r requirements.txt && python app.py")
        return "\n".join(lines)

    _emit(args, data, human)


def cmd_export_deployment(args):
    from jobs import api

    result = api.export_deployment(args.variant, args.directory, force=args.force, name=args.name,
                                   replicas=args.replicas, max_replicas=args.max_replicas)
    data = {"directory": str(result.directory), "variant": result.variant_id, "runtime": result.runtime,
            "name": result.name, "files": result.files, "model_bytes": result.model_bytes,
            "requirements": result.requirements}
    _emit(args, data, lambda: "\n".join([
        f"wrote {result.directory}: model/ ({_mb(result.model_bytes)}), bundle_server/, requirements.txt, Dockerfile "
        f"(not built here), k8s/, README.md, SHA256SUMS",
        f"  run it: cd {result.directory} && pip install -r requirements.txt && python -m bundle_server --port 8080",
        f"  or: docker build -t {result.name} {result.directory}; kubectl apply -f {result.directory}/k8s/"]))


# ---- MLflow model registry ----------------------------------------------------------------------------------


def cmd_registry_register(args):
    from jobs import api

    mv = api.register_variant(args.variant, args.name)
    _emit(args, mv, lambda: "\n".join([
        f"registered variant {mv['variant_id']} ({mv['runtime']}/{mv['precision']}) as version {mv['version']} "
        f"of {mv['model']!r}",
        f"  source {mv['source']}" + (f"; run {mv['run_id']}" if mv["run_id"] else ""),
        f"  promote it: workbench registry promote '{mv['model']}' {mv['version']} --alias production",
    ]))


def _moved(move: dict[str, Any], verb: str) -> str:
    if not move["changed"]:
        return f"{move['name']!r} {move['alias']} already points at version {move['version']}"
    was = f" (was version {move['previous']})" if move["previous"] else ""
    return f"{move['name']!r} {move['alias']} {verb} version {move['version']}{was}"


def cmd_registry_promote(args):
    from jobs import api

    try:
        move = api.promote(args.name, args.version, args.alias, force=args.force)
    except InvalidInput as exc:
        if "degenerate" in str(exc) and not args.force:
            raise InvalidInput(f"{str(exc).replace('force the promotion', 'pass --force')}") from None
        raise
    forced = f"\nwarning: promoted although degenerate: {move['degenerate']}" if move.get("degenerate") else ""
    _emit(args, move, lambda: _moved(move, "->") + forced)


def cmd_registry_rollback(args):
    from jobs import api

    move = api.rollback(args.name, args.alias)
    _emit(args, move, lambda: _moved(move, "rolled back to"))


def cmd_registry_list(args):
    from jobs import api

    state = api.registry_state()

    def human():
        lines = [f"tracking: {state['tracking_uri']}", f"open it:  {state['ui_command']}"]
        if not state["models"]:
            lines.append("no registered models yet: `workbench registry register VARIANT`")
        for m in state["models"]:
            aliases = ", ".join(f"{a} -> v{v}" for a, v in m["aliases"].items()) or "no aliases"
            undo = ", ".join(f"{a} -> v{v}" for a, v in m["rollback_to"].items())
            lines += ["", f"{m['name']}: {aliases}" + (f" (rollback: {undo})" if undo else "")]
            rows = [{"version": v["version"], "variant": v["variant_id"] or "", "aliases": ", ".join(v["aliases"]),
                     "runtime": v["runtime"], "precision": v["precision"], "accuracy": percent(v["accuracy"]),
                     "run": v["run_id"] or ""} for v in m["versions"]]
            lines.append(_table(rows, ["version", "variant", "aliases", "runtime", "precision", "accuracy", "run"]))
        return "\n".join(lines)

    _emit(args, state, human)


def _registry_commands(sub, leaf) -> None:
    registry = sub.add_parser("registry", help="MLflow model registry: register variants, promote and roll back aliases"
                              ).add_subparsers(dest="action", required=True)
    p = leaf(registry, "register", cmd_registry_register, "Register a variant as a new version of a registered model")
    p.add_argument("variant", help="variant id")
    p.add_argument("--name", help="registered model name (default: the variant's model name)")
    p = leaf(registry, "promote", cmd_registry_promote, "Point an alias (default production) at a model version")
    p.add_argument("name", help="registered model name")
    p.add_argument("version", help="model version, like 2 or v2")
    p.add_argument("--alias", default="production", help="alias to move, like staging or production (default production)")
    p.add_argument("--force", action="store_true",
                   help="promote even if the version's variant is degenerate (the reason is printed)")
    p = leaf(registry, "rollback", cmd_registry_rollback, "Move an alias back to where it was before the last promote")
    p.add_argument("name", help="registered model name")
    p.add_argument("--alias", default="production", help="alias to roll back (default production)")
    leaf(registry, "list", cmd_registry_list, "Registered models, versions, variants and aliases, and the MLflow UI command")


# ---- deployments --------------------------------------------------------------------------------------------


def _deployment_data(d) -> dict[str, Any]:
    from storage.entities import to_dict

    return {**to_dict(d), "url": d.url}


def _deployment_line(d) -> str:
    line = f"deployment {d.id} {d.name!r} (variant {d.variant_id}) at {d.url}: {d.status}"
    return line + (f" - {d.reason}" if d.reason and d.status in ("starting", "crashed") else "")


def cmd_deploy(args):
    from jobs import api

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env, "")
        if not api_key.strip():
            raise InvalidInput(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    if args.wait < 0:
        raise InvalidInput(f"--wait is a number of seconds of at least 0, not {args.wait:g}")
    try:
        deployment = api.deploy(args.variant, args.port, args.max_batch, args.max_wait_ms, args.replicas, api_key,
                                host=args.host, max_queue=args.max_queue, timeout_s=args.timeout_s,
                                cache_size=args.cache_size, device=args.device, threads=args.threads, name=args.name,
                                wait_s=args.wait, api_key_env=args.api_key_env, sample_rate=args.sample_rate,
                                reference_dataset=args.reference_dataset, **_canary_options(args))
    except WorkbenchError as exc:
        if exc.inputs == ("api_key",):  # the key came from the environment variable this flag names
            raise type(exc)(str(exc), inputs=["api_key_env"], what=exc.what) from None
        raise

    def human() -> str:
        lines = [_deployment_line(deployment)]
        if deployment.canary_variant_id is not None:
            lines.append(f"  canary: variant {deployment.canary_variant_id} for {deployment.canary_percent:g} % of "
                         f"users (by X-User-Id); promote or roll back: workbench deployments promote|rollback "
                         f"{deployment.id}")
        if deployment.status == "starting" and args.wait:
            lines.append(f"  not ready after {args.wait:g} s; see `workbench deployments list`")
        lines.append(f"  logs: workbench deployments logs {deployment.id}; stop: workbench deployments stop "
                     f"{deployment.id}")
        return "\n".join(lines)

    _emit(args, _deployment_data(deployment), human)
    if args.wait and deployment.status != "ready":
        return 1


def cmd_deployments_list(args):
    from jobs import api

    deployments = api.list_deployments()
    rollout = api.rollout_lines(deployments)  # its canary now, or what became of it (with the figures)
    rows = [{"id": d.id, "name": d.name, "variant": d.variant_id, "status": d.status, "url": d.url, "pid": d.pid,
             "started": d.started_at.isoformat(timespec="seconds") if d.started_at else "",
             "reason": (d.reason or "")[:80] if d.status != "ready" else "", "rollout": rollout.get(d.id, "")}
            for d in deployments]
    _emit(args, [{**_deployment_data(d), "rollout": rollout.get(d.id, "")} for d in deployments],
          lambda: _table(rows, ["id", "name", "variant", "status", "url", "pid", "started", "reason", "rollout"]))


def cmd_deployments_stop(args):
    from jobs import api

    deployment = api.stop_deployment(args.id)
    _emit(args, _deployment_data(deployment), lambda: _deployment_line(deployment))


def _canary_options(args) -> dict[str, Any]:
    """deploy's canary keywords from the flags given (none without --canary; the core refuses thresholds alone)."""
    names = ("canary_percent", "rollback_error_rate_increase", "rollback_p95_ratio", "rollback_min_requests",
             "rollback_window_s")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return {"canary": args.canary, **given} if args.canary is not None or given else {}


def cmd_deployments_canary(args):
    from jobs import api

    deployment = api.set_canary_percent(args.id, args.percent)
    _emit(args, _deployment_data(deployment), lambda: f"deployment {deployment.id}: canary variant "
          f"{deployment.canary_variant_id} now takes {deployment.canary_percent:g} % of users")


def cmd_deployments_promote(args):
    from jobs import api

    deployment = api.promote_canary(args.id, force=args.force)
    event = api.deployment_events(deployment.id, 1)[0]
    _emit(args, _deployment_data(deployment), lambda: f"deployment {deployment.id}: {event.message}")


def cmd_deployments_rollback(args):
    from jobs import api

    deployment = api.rollback_canary(args.id)
    event = api.deployment_events(deployment.id, 1)[0]
    _emit(args, _deployment_data(deployment), lambda: f"deployment {deployment.id}: {event.message}")


def cmd_deployments_drift(args):
    """Exit 0 without drift, 1 on an alarm (so a cron job can page), 0 with the reason when there is no verdict."""
    from jobs import api
    from workbench.drift_format import report_data, report_lines

    since = None
    if args.since:
        from datetime import datetime, timezone

        try:
            since = datetime.fromisoformat(args.since.strip().removesuffix("Z"))
        except ValueError:
            raise InvalidInput(f"--since is a UTC time like 2026-05-01T12:00, not {args.since!r}") from None
        if since.tzinfo is not None:
            since = since.astimezone(timezone.utc).replace(tzinfo=None)
    report = api.deployment_drift(args.id, args.dataset, args.window, args.min_samples, args.arm, since,
                                  psi_watch=args.psi_watch, psi_alarm=args.psi_alarm, chi2_p_alarm=args.chi2_p_alarm)
    _emit(args, report_data(report), lambda: "\n".join(report_lines(report)))
    return 1 if report.alarm else 0


def cmd_deployments_logs(args):
    from jobs import api

    tail = api.deployment_logs(args.id, args.tail)
    if args.json:
        print(json.dumps({"id": int(args.id), "log": tail.text, "omitted": tail.omitted}))
        return
    if tail.omitted:
        print(f"(earlier output left out: the last {args.tail} characters follow)", file=sys.stderr)
    sys.stdout.write(tail.text)
    sys.stdout.flush()


def cmd_deployments_loadtest(args):
    from jobs import api
    from storage.entities import to_dict

    job = api.submit_load_test(args.id, {"concurrency": args.concurrency, "requests": args.requests,
                                         "max_seconds": args.seconds, "slo_p95_ms": args.slo_ms}, dataset=args.dataset)
    if args.wait:
        job = _wait([job.id])[0]
    _emit(args, to_dict(job), lambda: f"job {job.id} (loadtest) {job.status.value}"
          + (f": {job.message}" if args.wait else f"; follow it with `workbench jobs show {job.id}`"))
    if args.wait and job.status.value != "succeeded":
        return 1


def _deployment_commands(sub, leaf) -> None:
    p = leaf(sub, "deploy", cmd_deploy, "Start a model server for a variant in its own process (a deployment)")
    p.add_argument("variant", help="variant id or name, or a registry alias NAME@ALIAS (e.g. minilm-l6@production)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: a free one)")
    p.add_argument("--max-batch", type=int, default=16, help="most requests run together in one batch (default 16)")
    p.add_argument("--max-wait-ms", type=float, default=5,
                   help="how long a batch waits for more requests, in milliseconds (default 5)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond this get 429 (default 256)")
    p.add_argument("--timeout-s", type=float, default=10,
                   help="a request not answered within this many seconds gets 503 (default 10)")
    p.add_argument("--cache-size", type=int, default=0, help="predictions kept in memory by text (default 0: none)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu; a GPU-only runtime uses its own)")
    p.add_argument("--threads", type=int, help="CPU threads the model may use (default: the runtime's)")
    p.add_argument("--replicas", type=int, default=1, help="server processes: 1 here; for more, export-deployment --replicas N runs them in Kubernetes")
    p.add_argument("--api-key-env", metavar="NAME",
                   help="name of an environment variable holding the API key (several: comma-separated) that "
                        "requests must bear; the key itself never goes on the command line")
    p.add_argument("--name", help="a name for the deployment (default: the alias or the variant's name)")
    p.add_argument("--canary", metavar="VARIANT_OR_NAME@ALIAS",
                   help="a second variant served beside the first to a share of users (by X-User-Id)")
    p.add_argument("--canary-percent", type=float, metavar="P", help="the canary's share of users (default 10)")
    p.add_argument("--rollback-error-rate-increase", type=float, metavar="X",
                   help="roll the canary back by itself when its error rate exceeds the stable's by more than X "
                        "(0.05: five points)")
    p.add_argument("--rollback-p95-ratio", type=float, metavar="R",
                   help="roll the canary back by itself when its p95 latency exceeds the stable's times R (1.5)")
    p.add_argument("--rollback-min-requests", type=int, metavar="N",
                   help="requests each arm needs in the window before a rollback check (default 50)")
    p.add_argument("--rollback-window-s", type=float, metavar="S",
                   help="the recent window the arms are compared over, in seconds (default 300)")
    p.add_argument("--sample-rate", type=float, default=0.1, metavar="F",
                   help="fraction of texts sampled for drift monitoring (default 0.1; 0: none)")
    p.add_argument("--reference-dataset", metavar="DATASET",
                   help="dataset whose test split drift is measured against (default: the one the variant was "
                        "fine-tuned or evaluated on)")
    p.add_argument("--wait", type=float, default=120, metavar="S",
                   help="wait up to S seconds until it is ready; exit 1 unless it is (default 120; 0: do not wait)")
    deployments = sub.add_parser("deployments", help="List, stop and read the logs of deployments").add_subparsers(
        dest="action", required=True)
    leaf(deployments, "list", cmd_deployments_list, "Deployments, newest first, with their status checked now")
    p = leaf(deployments, "stop", cmd_deployments_stop, "Stop a deployment's server (SIGTERM, then SIGKILL)")
    p.add_argument("id", help="deployment id")
    p = leaf(deployments, "logs", cmd_deployments_logs, "Print the end of a deployment's server log")
    p.add_argument("id", help="deployment id")
    p.add_argument("--tail", type=int, default=20_000, metavar="N", help="the last N characters (default 20000)")
    p = leaf(deployments, "loadtest", cmd_deployments_loadtest,
             "Queue a load test: throughput and p50/p95/p99 at a sweep of concurrencies (a `loadtest` job)")
    p.add_argument("id", help="deployment id")
    p.add_argument("--concurrency", default="1,4,16,32", metavar="C1,C2,...", help="senders per level (default 1,4,16,32)")
    p.add_argument("--requests", type=int, default=200, metavar="N", help="requests per level at most (default 200)")
    p.add_argument("--seconds", type=float, default=20, metavar="S", help="time cap per level (default 20)")
    p.add_argument("--slo-ms", type=float, default=0, metavar="MS", help="a p95 objective the result is checked against")
    p.add_argument("--dataset", help="texts from this dataset's test split (default: the deployment's reference)")
    p.add_argument("--wait", action="store_true", help="wait until the job finishes; exit 1 unless it succeeded")
    p = leaf(deployments, "canary", cmd_deployments_canary, "Change a running deployment's canary share live")
    p.add_argument("id", help="deployment id")
    p.add_argument("--percent", type=float, required=True, metavar="P", help="the canary's new share of users")
    p = leaf(deployments, "promote", cmd_deployments_promote,
             "Make the canary the stable variant (no restart); a NAME@ALIAS deployment moves the alias to it")
    p.add_argument("id", help="deployment id")
    p.add_argument("--force", action="store_true", help="promote even if the canary's variant is degenerate")
    p = leaf(deployments, "rollback", cmd_deployments_rollback,
             "Remove the canary: the stable variant serves every user again")
    p.add_argument("id", help="deployment id")
    p = leaf(deployments, "drift", cmd_deployments_drift,
             "Compare a deployment's sampled traffic with a dataset's test split (PSI, chi-square, alarm)")
    p.add_argument("id", help="deployment id")
    p.add_argument("--dataset", help="reference dataset (default: chosen at deploy, else the variant's own)")
    p.add_argument("--window", type=int, default=1000, metavar="N", help="the newest N samples (default 1000)")
    p.add_argument("--min-samples", type=int, metavar="N", help="fewer samples give no figures (default 50)")
    p.add_argument("--arm", choices=("stable", "canary"), help="only one arm's samples (a canary deployment)")
    p.add_argument("--since", metavar="TIME", help="only samples from this UTC time on (ISO, e.g. 2026-05-01T12:00)")
    p.add_argument("--psi-watch", type=float, metavar="X", help="PSI from which a figure is watched (default 0.1)")
    p.add_argument("--psi-alarm", type=float, metavar="X", help="PSI from which a figure alarms (default 0.2)")
    p.add_argument("--chi2-p-alarm", type=float, metavar="P",
                   help="label-mix chi-square p-value below which it alarms (default 0.01)")


# ---- processes ----------------------------------------------------------------------------------------------


def cmd_worker(args):
    from jobs.runner.worker import run_worker
    from storage import db

    db.upgrade()  # an entry point: a worker started on a new release brings the schema up to it
    if args.executor:
        os.environ["WORKBENCH_EXECUTOR"] = args.executor  # the setting, for this worker only
    run_worker(concurrency=args.concurrency, burst=args.burst)


def cmd_cluster_status(args):
    from jobs import api
    from workbench.cluster_view import cluster_data, cluster_text

    status = api.cluster_status(args.address)
    _emit(args, cluster_data(status), lambda: cluster_text(status))


def cmd_serve(args):
    from workbench.serve import serve

    serve(host=args.host, port=args.port, with_worker=not args.no_worker, concurrency=args.concurrency, share=args.share)


def cmd_db_upgrade(args):
    from storage import db, settings

    before, after = db.upgrade()
    where = db.display_url(settings.db_url())
    data = {"database": where, "from": before, "to": after}

    def human():
        if before == after:
            return f"the database at {where} is already at revision {after}"
        return f"upgraded the database at {where} from {before or 'nothing (new database)'} to revision {after}"

    _emit(args, data, human)


# ---- parser -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Transformer Deployment Workbench")
    sub = parser.add_subparsers(dest="command", required=True)

    def leaf(parent, name: str, fn: Callable, help_: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON instead of text")
        return p

    p = leaf(sub, "serve", cmd_serve, "Start the web UI (and a worker beside it)", json_flag=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--no-worker", action="store_true", help="do not start a worker process beside the UI")
    p.add_argument("--concurrency", type=int, default=1, help="jobs the worker runs at once")
    p.add_argument("--share", action="store_true",
                   help="also open a public Gradio share link (needs internet, and accounts: WORKBENCH_AUTH / WORKBENCH_VIEWERS)")

    p = leaf(sub, "worker", cmd_worker, "Run queued jobs, each in its own child process", json_flag=False)
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--concurrency", type=int, default=1, help="jobs run at once")
    p.add_argument("--executor", help="where jobs run: local (child processes) or ray (Ray tasks on the cluster "
                                       "at RAY_ADDRESS); default: WORKBENCH_EXECUTOR")

    cluster = sub.add_parser("cluster", help="The Ray cluster jobs run on").add_subparsers(dest="action", required=True)
    p = leaf(cluster, "status", cmd_cluster_status,
             "The Ray cluster's nodes, their resources (CPU, GPU, hardware classes) and the jobs running on each")
    p.add_argument("--address", help="host:port of the cluster's head (default: RAY_ADDRESS)")

    database = sub.add_parser("db", help="Manage the database schema").add_subparsers(dest="action", required=True)
    leaf(database, "upgrade", cmd_db_upgrade,
         "Migrate the database to the schema this workbench needs (serve and worker also do at start-up)")

    models = sub.add_parser("models", help="Add, list and show models").add_subparsers(dest="action", required=True)
    p = leaf(models, "add", cmd_models_add, "Add a model: builtin:minilm-l6, a HF directory, a .zip/.tar.gz, a .onnx, or a hub ID")
    p.add_argument("source")
    p.add_argument("--name")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickle checkpoints (loaded with weights_only)")
    leaf(models, "list", cmd_models_list, "List models")
    p = leaf(models, "show", cmd_models_show, "Show a model, its variants and file hashes")
    p.add_argument("ref", help="model id or name")

    datasets = sub.add_parser("datasets", help="Add, list and show datasets").add_subparsers(dest="action", required=True)
    p = leaf(datasets, "add", cmd_datasets_add, "Add a dataset: builtin:tweet-sentiment, builtin:bbc-topics, or a CSV/JSONL/Parquet file")
    p.add_argument("source")
    p.add_argument("--name")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--seed", type=int, default=42, help="seed of the stratified train/validation/test split")
    leaf(datasets, "list", cmd_datasets_list, "List datasets")
    p = leaf(datasets, "show", cmd_datasets_show, "Show a dataset with a preview")
    p.add_argument("ref", help="dataset id or name")
    p.add_argument("--preview", type=int, default=5, help="rows to preview")

    jobs = sub.add_parser("jobs", help="Submit, list, show, cancel jobs and read their logs").add_subparsers(dest="action", required=True)
    p = leaf(jobs, "submit", cmd_jobs_submit, "Queue a job")
    p.add_argument("kind", help="job kind; see `workbench jobs kinds`")
    p.add_argument("--model", help="model id or name (its original variant)")
    p.add_argument("--variant", help="variant id")
    p.add_argument("--dataset", help="dataset id or name")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a parameter (repeatable)")
    p.add_argument("--params", help="parameters as a JSON object")
    p.add_argument("--depends-on", type=int, help="start only after this job succeeded")
    p.add_argument("--wait", action="store_true", help="wait until the job finishes; exit 1 unless it succeeded")
    _evaluation_flags(p)
    p = leaf(jobs, "list", cmd_jobs_list, "List jobs, newest first")
    p.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=50)
    p = leaf(jobs, "show", cmd_jobs_show, "Show one job")
    p.add_argument("id")
    p = leaf(jobs, "cancel", cmd_jobs_cancel, "Cancel a queued or running job")
    p.add_argument("id")
    p = leaf(jobs, "logs", cmd_jobs_logs, "Print a job's log")
    p.add_argument("id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job finishes")
    leaf(jobs, "kinds", cmd_jobs_kinds, "List job kinds and their parameters")

    variants = sub.add_parser("variants", help="List and show variants").add_subparsers(dest="action", required=True)
    p = leaf(variants, "list", cmd_variants_list, "List variants")
    p.add_argument("--model", help="only this model's variants")
    p = leaf(variants, "show", cmd_variants_show, "Show one variant: lineage, recipe, evaluations, training curve, files")
    p.add_argument("ref", help="variant id")
    p = leaf(variants, "download", cmd_variants_download,
             "Zip a variant's files (weights, ONNX graphs, tokenizer), each checked against its recorded sha256")
    p.add_argument("ref", help="variant id")
    p.add_argument("out", help="the zip to write (a new file ending in .zip)")

    p = leaf(sub, "report", cmd_report, "Write report.html (self-contained, offline), rows.csv and rows.json")
    p.add_argument("--out", default="report", help="directory to write into")
    p.add_argument("--dataset", help="only measurements made with this dataset's texts")
    p.add_argument("--fingerprint", help="hardware/library fingerprint to report (default: the newest)")
    p.add_argument("--batch", type=int, help="batch size of the decision charts (default: the smallest measured)")
    p.add_argument("--seq", type=int, help="sequence length of the decision charts (0: the real-traffic cells)")
    p.add_argument("--baseline", type=int, help="variant id the speedups are relative to (default: the slowest)")
    p.add_argument("--slo-ms", type=float, help="p95 latency SLO for the sweet spot")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy points the sweet spot may lose vs the baseline")
    p.add_argument("--price-per-hour", type=float, help="machine price per hour in USD, for cost per million predictions")

    p = leaf(sub, "predict", cmd_predict, "Predict labels with a variant: texts as arguments, --file, or one per line on stdin")
    p.add_argument("variant", help="variant id, or a registry alias NAME@ALIAS (e.g. minilm-l6@production)")
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--file", help="a CSV / TSV / JSONL / Parquet file of texts")
    p.add_argument("--column", help="the file's text column (default: text, sentence, ... or the only column)")
    p.add_argument("--out", help="also write predictions-variant-N.csv into this directory")

    p = leaf(sub, "export-space", cmd_export_space,
             "Write a runnable Gradio demo of one variant (Hugging Face Space layout: app.py, requirements.txt, README.md, model/)")
    p.add_argument("variant", help="variant id")
    p.add_argument("directory", help="where to write it (new or empty, unless --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty directory")
    p.add_argument("--title", help="the Space's title (default: model name, variant id, runtime)")
    p.add_argument("--license", default="other", help="license id for the Space metadata (default: other)")
    p.add_argument("--no-check", action="store_true", help="skip loading the exported app once to check it predicts")

    p = leaf(sub, "export-deployment", cmd_export_deployment,
             "Write a deployment bundle of one variant that runs without the workbench: model files with SHA256SUMS, "
             "the model server (python -m bundle_server), pinned requirements, Dockerfile, Kubernetes manifests, README")
    p.add_argument("variant", help="variant id, name, or a registry alias NAME@ALIAS (e.g. minilm-l6@production)")
    p.add_argument("directory", help="where to write it (new or empty, unless --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty directory")
    p.add_argument("--name", help="name of the Kubernetes objects and the image (default: model name and variant id)")
    p.add_argument("--replicas", type=int, default=1, help="replicas the Kubernetes Deployment starts with (default 1)")
    p.add_argument("--max-replicas", type=int, default=4,
                   help="most replicas the HorizontalPodAutoscaler adds under CPU load (default 4)")

    pipelines = sub.add_parser("pipelines", help="Queue a recipe of steps, or re-run a variant's recipe").add_subparsers(
        dest="action", required=True)
    p = leaf(pipelines, "submit", cmd_pipelines_submit, "Queue steps that each take the variant the step before made")
    p.add_argument("steps", help="e.g. 'finetune:mode=full,epochs=1 -> export-onnx:fusion=true -> quantize:method=ort-dynamic-int8'")
    p.add_argument("--model", help="model id or name (its original variant)")
    p.add_argument("--variant", help="start from this variant instead")
    p.add_argument("--dataset", help="dataset id or name")
    p.add_argument("--wait", action="store_true", help="wait until every step finishes; exit 1 unless all succeeded")
    _evaluation_flags(p)
    p = leaf(pipelines, "rerun", cmd_pipelines_rerun, "Re-run the recipe that made a variant, from its model's original")
    p.add_argument("variant", help="variant id whose recipe to re-run")
    p.add_argument("--dataset", help="run it on this dataset instead of the original one")
    p.add_argument("--wait", action="store_true", help="wait until every step finishes")
    _evaluation_flags(p)
    p = leaf(sub, "search", cmd_search, "Search distillation, pruning, runtime and precision for the fastest variant "
                                        "within an accuracy drop, in a time budget (a search job)")
    p.add_argument("model", help="model id or name")
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("--max-drop", type=float, required=True, help="accuracy points the variant may lose")
    p.add_argument("--batch-size", type=int, default=1, help="batch size latency is measured at (default 1)")
    p.add_argument("--seq-len", type=int, help="sequence length latency is measured at (default 128)")
    p.add_argument("--traffic", choices=["grid", "real"], default="grid",
                   help="real: batches drawn from the test split with dynamic padding instead of --seq-len")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--budget-min", type=float, required=True, help="wall-clock minutes, restarts included")
    p.add_argument("--trials", type=int, help="at most this many trials")
    p.add_argument("--speedup", type=float, help="stop once a trial within the drop is this many times faster")
    p.add_argument("--quick", action="store_true", help="a small space and short jobs (a first look)")
    p.add_argument("--wait", action="store_true", help="wait until the search ends; exit 1 unless it succeeded")
    p = leaf(sub, "search-status", cmd_search_status, "A search's trials, Pareto front (F) and best (*)")
    p.add_argument("job_id", help="the search job's id")
    _registry_commands(sub, leaf)
    _deployment_commands(sub, leaf)
    return parser


def _evaluation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-examples", type=int, help="evaluate new variants on a fixed sample of this many test examples")
    p.add_argument("--tolerance", type=float, help="flag a new variant this many accuracy points below its parent (default 1)")


# Where to look when something is not found, by the kind of thing (the core's errors name it, not a command).
LISTINGS = {"model": "workbench models list", "dataset": "workbench datasets list", "variant": "workbench variants list",
            "job": "workbench jobs list", "registered model": "workbench registry list",
            "deployment": "workbench deployments list"}


def error_line(exc: WorkbenchError) -> str:
    """The core's surface-neutral message, with this surface's hints: the flags it is about, where to list things."""
    line = str(exc)
    if exc.inputs:
        line += f" ({' or '.join('--' + name.replace('_', '-') for name in exc.inputs)})"
    if exc.what in LISTINGS:
        line += f"; list them with `{LISTINGS[exc.what]}`"
    return line


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except WorkbenchError as exc:
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `workbench jobs list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
