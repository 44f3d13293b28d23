"""Consistent hashing of user ids into arms: shared by the playground's traffic-split experiments (the A/B tab)
and a deployment's canary routing (`jobs.serving.canary`).

A user is put in an arm by hashing a salt (the experiment's name, the deployment's id) with the user id: the same
user always gets the same arm, no assignment table is needed, and raising B's share only moves users from A to B
(a user is in B when their bucket is below the share, so a larger share keeps everyone who was in B).
"""

from __future__ import annotations

import hashlib


def bucket(user_id: str, salt: str) -> float:
    """A stable number in [0, 1) for this user under this salt."""
    digest = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_arm(user_id: str, split_b_percent: float, salt: str) -> str:
    """"B" for the `split_b_percent` % of users whose bucket is lowest, "A" for the others."""
    return "B" if bucket(user_id, salt) < split_b_percent / 100 else "A"
