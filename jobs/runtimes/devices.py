"""What hardware this process can use: CPU model and flags, and CUDA if torch sees one."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

INTERESTING_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                         "amx_int8")


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "cpu_flags": [f for f in INTERESTING_CPU_FLAGS if f in flags],
    }


@lru_cache(maxsize=1)
def detect() -> dict[str, Any]:
    info = cpu_info()
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    info["devices"] = devices
    return info


def fast_bf16(device: str = "cpu") -> bool:
    """Whether bfloat16 matmuls are fast here: AMX or AVX-512 BF16 on CPU, Ampere or newer on CUDA."""
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    flags = set(cpu_info()["cpu_flags"])
    return bool(flags & {"amx_bf16", "avx512_bf16"})
