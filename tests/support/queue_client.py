"""One event called over Gradio's queue protocol, as a browser does: join, then read the event stream."""

from __future__ import annotations

import json


def queue_call(http, session_hash: str, fn_index: int, data: list) -> dict:
    """The final queue message of one event: {"success": bool, "output": {...}}; `http` is an httpx.Client on the
    app's URL (with its login cookie, if any)."""
    join = http.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session_hash})
    join.raise_for_status()
    event_id = join.json()["event_id"]
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session_hash}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    return message
    raise AssertionError(f"no result for fn {fn_index}")
