"""Hardware and library fingerprint: results from different machines or stacks are never mixed silently."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from typing import Any

LIBRARIES = ("torch", "onnxruntime", "onnxruntime-gpu", "transformers", "tensorrt", "openvino")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def fingerprint(device: str) -> dict[str, Any]:
    from jobs.runtimes.devices import cpu_info

    info = cpu_info()
    fp: dict[str, Any] = {"device": device, **info, "libraries": {p: v for p in LIBRARIES if (v := _version(p))}}
    if device.startswith("cuda"):
        import torch

        fp["gpu"] = torch.cuda.get_device_name(0)
    return fp


def fingerprint_hash(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def describe(fp: dict[str, Any]) -> str:
    """One line for charts and filters: 'cpu: Xeon ... (2 cores, amx_bf16 ...) torch 2.13 / ort 1.31'."""
    libs = fp.get("libraries", {})
    where = fp.get("gpu") or f"{fp.get('cpu', '?')} ({fp.get('cpu_count', '?')} cores)"
    flags = " ".join(f for f in fp.get("cpu_flags", []) if f.startswith(("amx", "avx512")))
    openvino = f", openvino {libs['openvino']}" if libs.get("openvino") else ""
    return f"{fp.get('device', '?')}: {where}{' ' + flags if flags else ''}; torch {libs.get('torch', '-')}, ort {libs.get('onnxruntime') or libs.get('onnxruntime-gpu', '-')}{openvino}"
