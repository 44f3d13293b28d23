"""Reading a module's lab (jobs run by a burst worker, see tests/test_optimize.py): what a job made, and its
evaluation, with the job's log in the failure message when it did not succeed."""

from __future__ import annotations


def produced(lab, name: str):
    job = lab["jobs"][name]
    assert job.status.value == "succeeded", f"{name}: {job.message}\n{lab['api'].job_log(job.id)[-3000:]}"
    return lab["api"].get_variant(job.produced_variant_id)


def evaluation_of(lab, variant):
    evaluations = lab["api"].variant_detail(variant.id)["evaluations"]
    assert evaluations, f"variant {variant.id} ({variant.name}) has no evaluation"
    return evaluations[-1]
