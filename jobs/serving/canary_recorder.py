"""What a model server with a canary writes to the workbench's database: its users' feedback and the rollbacks it
made by itself. `server.py` makes one for the deployment it runs; the app calls it in a writer thread of its own
(never in the event loop), so a slow or locked database delays no prediction."""

from __future__ import annotations

from typing import Any

from storage import rollouts


class DeploymentRecorder:
    def __init__(self, deployment_id: int):
        self.deployment_id = deployment_id

    def feedback(self, request_id: str, arm: str, variant_id: int, label: str | None, correct: bool) -> bool:
        return rollouts.record_feedback(self.deployment_id, request_id, arm, variant_id, label, correct)

    def auto_rollback(self, message: str, details: dict[str, Any]) -> None:
        # the event and the record's cleared canary in one transaction: the Deploy tab never sees one without the other
        rollouts.add_event(self.deployment_id, "auto_rollback", message, details, canary_variant_id=None,
                           canary_variant_sha256=None, canary_percent=0.0)
