"""A deployment's drift report (`jobs.serving.drift.DriftReport`) in words, for the CLI and the Deploy tab."""

from __future__ import annotations

from typing import Any

from storage.entities import to_dict


def report_data(report) -> dict[str, Any]:
    """JSON-friendly: every figure, the bins and counts, the verdict."""
    data = to_dict(report)
    data["alarm"] = report.alarm
    return data


def _rate(value: float | None) -> str:
    return "cannot tell (the tokenizer has no unknown token)" if value is None else f"{value:.2%}"


def _p(value: float) -> str:
    return f"{value:.3g}" if value >= 1e-4 else f"{value:.1e}"


def report_lines(report) -> list[str]:
    """The verdict first, then each figure with its level and threshold."""
    lines = [f"deployment {report.deployment_id} (variant {report.variant_id}): {report.message}"]
    if report.dataset_name:
        size = f", {report.reference_count} examples" if report.reference_count else ""
        lines.append(f"  reference: dataset {report.dataset_name!r} (test split{size})")
    if report.live_count and report.window_start:
        lines.append(f"  live window: {report.live_count} samples, {report.window_start:%Y-%m-%d %H:%M:%S} to "
                     f"{report.window_end:%Y-%m-%d %H:%M:%S} UTC")
    if report.length is None:
        return lines
    t = report.thresholds
    lines += [
        f"  length (tokens) PSI     {report.length.value:.3f}  {report.levels['length']}",
        f"  confidence PSI          {report.confidence.value:.3f}  {report.levels['confidence']}",
        f"  label mix chi-square    {report.labels.statistic:.2f} (dof {report.labels.dof}), "
        f"p = {_p(report.labels.p_value)}  {report.levels['labels']}",
        f"  unknown-token rate      live {_rate(report.unknown_rate_live)}, "
        f"reference {_rate(report.unknown_rate_reference)}",
        f"  thresholds: PSI watch {t.psi_watch:g}, alarm {t.psi_alarm:g}; chi-square p < {t.chi2_p_alarm:g} alarm",
    ]
    return lines
