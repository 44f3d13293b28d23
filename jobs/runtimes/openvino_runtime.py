"""OpenVINO: a variant in Optimum Intel's layout (config.json + openvino_model.xml/.bin + tokenizer files).

The IR holds fp32 weights (saved with compress_to_fp16=False) or NNCF's int8 FakeQuantize graph; what the CPU
computes the rest in is an inference hint given at load (INFERENCE_PRECISION_HINT), recorded per variant in
workbench.json as `inference_precision`. It is always set explicitly: on CPUs with AMX or AVX-512 BF16 OpenVINO's
own default is bf16, so an "fp32" variant left to the default would silently run in bf16.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from jobs.runtimes.base import Predictor, read_variant_meta
from jobs.runtimes.registry import register_runtime
from jobs.tasks import text_classification

IR_FILE = "openvino_model.xml"  # Optimum Intel's names, so OVModelForSequenceClassification loads the folder too
IR_WEIGHTS = "openvino_model.bin"
PRECISION_META = "inference_precision"  # workbench.json key: "f32" or "bf16"
HINTS = {"fp32": "f32", "bf16": "bf16"}  # variant precision -> OpenVINO's INFERENCE_PRECISION_HINT value
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def import_openvino() -> Any:
    """`openvino`, with usage telemetry off in this process.

    OpenVINO's model converter and NNCF send usage events to Google Analytics unless the user ran
    `opt_in_out --opt_out` (or CI is set). The workbench runs offline and sends nothing, so the telemetry package is
    made unimportable before openvino is first imported: both libraries then use the stub they ship for when it is
    not installed. Every import of openvino or nncf in the workbench goes through here."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


_core: Any = None
_core_lock = threading.Lock()


def core() -> Any:
    """One OpenVINO Core per process (it holds the plugins and their caches)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = import_openvino().Core()
        return _core


def bf16_support(cpu_flags: Iterable[str], capabilities: Iterable[str]) -> tuple[bool, str]:
    """Whether bf16 inference is native here, and why: the CPU's flags (AMX or AVX-512 BF16) and what OpenVINO's
    CPU plugin reports (OPTIMIZATION_CAPABILITIES) must both say so; without them bf16 is emulated or refused."""
    have = sorted(BF16_CPU_FLAGS & set(cpu_flags))
    if not have:
        return False, ("this CPU has no AMX or AVX-512 BF16 instructions, so OpenVINO cannot run bf16 natively "
                       "here; use the fp32 or int8 OpenVINO variant")
    if "BF16" not in set(capabilities):
        return False, f"this CPU has {', '.join(have)} but OpenVINO's CPU plugin does not report BF16 support"
    return True, f"this CPU has {', '.join(have)} and OpenVINO's CPU plugin reports BF16"


def bf16_here() -> tuple[bool, str]:
    """`bf16_support` for this machine."""
    from jobs.runtimes.devices import cpu_info

    capabilities = core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return bf16_support(cpu_info()["cpu_flags"], capabilities)


def ov_device(device: str) -> str:
    """The workbench's device name as OpenVINO's: cpu -> CPU, gpu / gpu:1 -> GPU / GPU.1 (an Intel GPU OpenVINO
    sees; refused with the devices it does see otherwise)."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return "CPU"
    name = "GPU" + (f".{index}" if index else "")
    available = core().available_devices
    if name not in available and not (name == "GPU" and any(d.startswith("GPU") for d in available)):
        raise ValueError(f"device {device} was asked for but OpenVINO sees only {', '.join(available)}")
    return name


def compile_config(precision_hint: str, threads: int | None) -> dict[str, Any]:
    """The properties a variant is compiled with: its inference precision (always explicit) and a thread cap."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision_hint, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def hint_name(value: Any) -> str:
    """OpenVINO reports the precision it compiled for as a Type (`<Type: 'bfloat16'>`); its short name ("bf16")."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


class OpenVinoPredictor(Predictor):
    runtime = "openvino"

    def __init__(self, model_dir: Path, device: str = "cpu", max_length: int | None = None, threads: int | None = None):
        from transformers import AutoConfig

        model_dir = Path(model_dir)
        wanted = read_variant_meta(model_dir).get(PRECISION_META, "f32")
        if wanted not in HINTS.values():
            raise ValueError(f"workbench.json asks for inference precision {wanted!r}; OpenVINO variants use f32 or bf16")
        target = ov_device(device)
        if wanted == "bf16":
            ok, why = bf16_here() if target == "CPU" else (False, "bf16 variants run on the CPU only")
            if not ok:
                raise ValueError(f"this variant runs in bf16, which cannot run here: {why}")
        self.compiled = core().compile_model(str(model_dir / IR_FILE), target, compile_config(wanted, threads))
        # what OpenVINO compiled for, read back: a variant never claims a precision it does not run in
        self.inference_precision = hint_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if target == "CPU" and self.inference_precision != wanted:
            raise ValueError(f"OpenVINO compiled this variant for {self.inference_precision}, not the {wanted} it asks for")
        self._requests = threading.local()  # an infer request is not thread-safe: one per calling thread
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        names = [port.get_any_name() for port in self.compiled.inputs]
        super().__init__(model_dir, device, text_classification.labels(config), names, max_length, config=config)

    def _request(self) -> Any:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        return request

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        request = self._request()
        request.infer({name: batch[name] for name in self.input_names})
        return request.get_output_tensor(0).data.copy()  # the request reuses its output buffer on the next call

    def close(self) -> None:
        self._requests = threading.local()
        del self.compiled


@register_runtime(
    # gpu: an Intel GPU OpenVINO sees (not CUDA); refused with what OpenVINO does see when there is none
    "openvino", display_name="OpenVINO", files=(IR_FILE,), devices=("cpu", "gpu"), export_requires=("openvino",),
)
def load_openvino_predictor(model_dir: Path, device: str, max_length: int | None, threads: int | None) -> OpenVinoPredictor:
    return OpenVinoPredictor(model_dir, device, max_length, threads=threads)
