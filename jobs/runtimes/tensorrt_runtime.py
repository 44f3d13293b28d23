"""TensorRT 10: build an engine from an ONNX variant, and run it behind the common Predictor interface.

Only NVIDIA GPU machines with the `gpu` extra installed can use this runtime. Everything that needs `tensorrt`
or CUDA is imported inside functions, so this module imports (and `availability()` explains why TensorRT cannot
be used) on any machine.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from jobs.runtimes.base import Predictor, read_variant_meta
from jobs.runtimes.registry import register_runtime
from jobs.tasks import text_classification

UNAVAILABLE = "unavailable: needs an NVIDIA GPU with TensorRT"
ENGINE_FILE = "model.engine"
LOGITS = "logits"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INT8_NEEDS_QDQ = (
    "int8 TensorRT engines here use explicit quantization: quantize the ONNX variant with method ort-static-int8 first"
)


def availability() -> tuple[bool, str]:
    """(True, "TensorRT <version> on <GPU>") where engines can be built and run here, else (False, why not)."""
    try:
        import tensorrt as trt
    except ImportError:
        cause = "the tensorrt package is not installed; install the gpu extra: pip install '.[gpu]'"
        return False, f"{UNAVAILABLE} ({cause})"
    except Exception as exc:  # a broken install (missing CUDA libraries) fails with OSError and friends
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return False, f"{UNAVAILABLE} (the tensorrt package is installed but does not load: {first})"
    try:
        import torch
    except ImportError:
        return False, f"{UNAVAILABLE} (torch is not installed)"
    if not torch.cuda.is_available():
        return False, f"{UNAVAILABLE} (no CUDA device visible to torch)"
    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(0)}"


def _torch_dtype(trt_dtype: Any):
    """The torch dtype for a TensorRT DataType (matched by enum name, so it works across TensorRT 10.x)."""
    import torch

    table = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT64": torch.int64,
        "INT32": torch.int32,
        "INT8": torch.int8,
        "UINT8": torch.uint8,
        "BOOL": torch.bool,
    }
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in table:
        raise ValueError(f"the engine uses tensor type {name}, which this runtime cannot feed or read")
    return table[name]


def _check_explicit_quantization(onnx_path: Path) -> int:
    """Count the ONNX Q/DQ nodes; refuse graphs TensorRT cannot build as explicitly quantized int8."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type in QDQ_OPS]
    standard = [n for n in nodes if n.domain in ("", "ai.onnx")]
    if not standard:
        if nodes:  # com.microsoft Q/DQ contrib ops: ONNX Runtime only
            raise ValueError(
                f"{INT8_NEEDS_QDQ} (this graph's Q/DQ nodes are ONNX Runtime contrib ops, domain "
                f"{nodes[0].domain!r}, which TensorRT cannot parse: quantize without contrib Q/DQ ops)"
            )
        raise ValueError(INT8_NEEDS_QDQ)
    # TensorRT quantizes symmetrically to signed int8: a uint8 or non-zero zero point cannot be built.
    initializers = {t.name: t for t in model.graph.initializer}
    for node in standard:
        if len(node.input) < 3 or node.input[2] not in initializers:
            continue
        zero_point = initializers[node.input[2]]
        if zero_point.data_location == onnx.TensorProto.EXTERNAL:
            continue
        values = numpy_helper.to_array(zero_point)
        if values.dtype == np.uint8 or np.any(values != 0):
            raise ValueError(
                f"TensorRT needs symmetric signed int8 quantization, but {node.op_type} node {node.name!r} has a "
                f"{values.dtype} zero point{'' if values.dtype == np.uint8 else ' that is not 0'}: quantize the ONNX "
                "variant with method ort-static-int8 using int8 (QInt8) activations and weights and symmetric ranges"
            )
    return len(standard)


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    input_names: list[str],
    min_shape: tuple[int, int],
    opt_shape: tuple[int, int],
    max_shape: tuple[int, int],
    workspace_gb: float,
    log: Callable[[str], None],
    keep_going: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Build a serialized TensorRT engine for `onnx_path` with one (batch, seq) profile shared by every input.

    `keep_going`, when given, is polled (at most once a second) while the builder works; returning False stops
    the build, which then fails with RuntimeError("... stopped ...").
    """
    if precision not in ("fp16", "int8", "fp32"):
        raise ValueError(f"precision must be fp16, int8 or fp32, not {precision!r}")
    if not input_names:
        raise ValueError("the ONNX graph has no inputs to build a profile for")
    if not (min_shape[0] <= opt_shape[0] <= max_shape[0] and min_shape[1] <= opt_shape[1] <= max_shape[1]):
        raise ValueError(f"the profile needs min <= opt <= max, got {min_shape}, {opt_shape}, {max_shape}")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    qdq_nodes = _check_explicit_quantization(onnx_path) if precision == "int8" else 0

    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    log(f"parsing {onnx_path.name} with the TensorRT {trt.__version__} ONNX parser")
    # parse_from_file (not parse(bytes)) so weights stored next to the graph (model.onnx.data) are found.
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            where = ""
            node_name = getattr(err, "node_name", None)
            node_op = getattr(err, "node_operator", None)
            if callable(node_name) and node_name():
                where = f" at node {node_name()}" + (f" ({node_op()})" if callable(node_op) and node_op() else "")
            elif err.node() >= 0:
                where = f" at node #{err.node()}"
            errors.append(f"{err.code()}{where}: {err.desc()}")
        for line in errors:
            log(f"ONNX parser error: {line}")
        raise RuntimeError(
            f"TensorRT could not parse {onnx_path.name} ({len(errors)} error(s)): "
            + "; ".join(errors or ["no details"])
        )
    network_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    missing = sorted(set(input_names) - set(network_inputs))
    if missing:
        raise ValueError(
            f"the ONNX graph has no input(s) {', '.join(missing)}; its inputs are {', '.join(network_inputs)}"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision in ("fp16", "int8"):
        # Deprecated (not removed) in TensorRT 10.5+; where it is gone, assume fp16 works (every supported GPU has it).
        if not getattr(builder, "platform_has_fast_fp16", True):
            raise RuntimeError(
                f"{torch.cuda.get_device_name(0)} has no fast fp16: build with precision fp32 instead"
            )
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # with Q/DQ nodes in the graph: explicit quantization, no calibrator
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 is on by default; an "fp32" engine should compute in fp32

    profile = builder.create_optimization_profile()
    for name in network_inputs:
        # Every input of a text classifier is [batch, seq] (input_ids, attention_mask, token_type_ids).
        profile.set_shape(name, tuple(min_shape), tuple(opt_shape), tuple(max_shape))
    config.add_optimization_profile(profile)

    monitor = None
    if hasattr(trt, "IProgressMonitor"):
        monitor = _progress_monitor(trt, log, keep_going)
        config.progress_monitor = monitor

    log(
        f"building a {precision} engine: inputs {', '.join(network_inputs)}, profile min {tuple(min_shape)} "
        f"opt {tuple(opt_shape)} max {tuple(max_shape)}, workspace {workspace_gb:g} GB"
    )
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if monitor is not None and monitor.error is not None:
        raise monitor.error
    if serialized is None:
        if monitor is not None and monitor.stopped:
            raise RuntimeError("the TensorRT engine build was stopped before it finished")
        raise RuntimeError(
            f"TensorRT failed to build the {precision} engine after {seconds:.0f}s "
            "(see the TensorRT errors logged above); "
            "try a larger workspace_gb, smaller max_batch/max_seq, or another precision"
        )
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    with open(engine_path, "wb") as f:
        f.write(serialized)
    engine_bytes = engine_path.stat().st_size
    log(f"built {engine_path.name}: {engine_bytes / 1e6:.1f} MB in {seconds:.1f}s")
    return {
        "tensorrt_version": trt.__version__,
        "gpu": torch.cuda.get_device_name(torch.cuda.current_device()),
        "precision": precision,
        "build_seconds": round(seconds, 2),
        "engine_bytes": engine_bytes,
        "input_names": network_inputs,
        "profile": {"min": list(min_shape), "opt": list(opt_shape), "max": list(max_shape)},
        "qdq_nodes": qdq_nodes,
        "workspace_gb": workspace_gb,
    }


def _progress_monitor(trt: Any, log: Callable[[str], None], keep_going: Callable[[], bool] | None):
    """A trt.IProgressMonitor that logs the builder's top-level phases and can stop the build."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.stopped = False
            self.error: Exception | None = None  # what keep_going raised, to raise once the builder returns
            self._last_poll = 0.0

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                try:
                    log(f"TensorRT: {phase_name} ({num_steps} step(s))")
                except Exception:  # never let a log failure escape into the builder
                    pass

        def step_complete(self, phase_name, step):
            if keep_going is None or self.stopped:
                return not self.stopped
            now = time.monotonic()
            if now - self._last_poll >= 1.0:
                self._last_poll = now
                try:
                    self.stopped = not keep_going()
                except Exception as exc:  # a cancellation (JobCancelled) or a failed check: it must not unwind
                    # through TensorRT's C++ frames, so it stops the build and build_engine raises it afterwards
                    self.error, self.stopped = exc, True
            return not self.stopped

        def phase_finish(self, phase_name):
            pass

    return Monitor()


class TensorRTPredictor(Predictor):
    """A serialized TensorRT engine (`model.engine`) run on one CUDA device with torch-allocated buffers."""

    runtime = "tensorrt"

    def __init__(self, model_dir: Path, device: str = "cuda", max_length: int | None = None):
        ok, reason = availability()
        if not ok:
            raise RuntimeError(reason)
        import tensorrt as trt
        import torch
        from transformers import AutoConfig

        model_dir = Path(model_dir)
        self._torch = torch
        self._device = torch.device(device)
        if self._device.type != "cuda":
            raise ValueError(f"TensorRT engines run on a CUDA device, not {device!r}")
        if self._device.index is None:
            self._device = torch.device("cuda", torch.cuda.current_device())
        engine_path = model_dir / ENGINE_FILE
        if not engine_path.exists():
            raise FileNotFoundError(f"{engine_path} does not exist: build the engine with build-tensorrt")

        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        labels = text_classification.labels(config)

        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self._device):
            self._trt_runtime = trt.Runtime(self._logger)
            self.engine = self._trt_runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self.engine is None:
                raise RuntimeError(
                    f"TensorRT {trt.__version__} could not load {engine_path.name}: engines only load with the "
                    "TensorRT version and GPU model they were built with; rebuild it with build-tensorrt here"
                )
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if LOGITS in self._outputs:
            self._logits = LOGITS
        elif len(self._outputs) == 1:
            self._logits = self._outputs[0]
        else:
            raise ValueError(f"the engine has no {LOGITS!r} output; its outputs are {', '.join(self._outputs)}")
        self._dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}

        profile = read_variant_meta(model_dir).get("trt_profile")
        if profile:
            self.profile_min = tuple(int(v) for v in profile["min"])
            self.profile_max = tuple(int(v) for v in profile["max"])
        else:  # an engine without workbench.json facts: ask the engine for profile 0
            shapes = self.engine.get_tensor_profile_shape(inputs[0], 0)
            self.profile_min = tuple(int(v) for v in shapes[0])
            self.profile_max = tuple(int(v) for v in shapes[2])

        super().__init__(model_dir, device, labels, inputs, max_length, config=config)
        if self.max_length > self.profile_max[1]:
            raise ValueError(
                f"max_length {self.max_length} is longer than this engine's profile allows ({self.profile_max[1]}): "
                f"use max_length <= {self.profile_max[1]}, or rebuild the engine with max_seq >= {self.max_length}"
            )
        self._pad_id = int(self.tokenizer.pad_token_id or 0)

    def _fit_to_profile(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Check the batch against the profile; pad a batch below its minimum (padding is masked out)."""
        shapes = {name: a.shape for name, a in arrays.items()}
        if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
            raise ValueError(f"every input must be [batch, seq] with the same shape, got {shapes}")
        batch, seq = next(iter(shapes.values()))
        max_b, max_s = self.profile_max
        min_b, min_s = self.profile_min
        if batch < 1 or seq < 1:
            raise ValueError(f"cannot run an empty batch (shape {(batch, seq)})")
        if batch > max_b or seq > max_s:
            raise ValueError(
                f"batch shape {(batch, seq)} is outside this engine's profile (max batch {max_b}, max seq {max_s}): "
                f"use batch_size <= {max_b} and max_length <= {max_s}, or rebuild with build-tensorrt and larger "
                "max_batch / max_seq"
            )
        if seq < min_s:
            if "attention_mask" not in arrays:
                raise ValueError(f"sequence length {seq} is below this engine's min seq {min_s}; pad inputs to {min_s}")
            pad = {"input_ids": self._pad_id}
            arrays = {
                n: np.pad(a, ((0, 0), (0, min_s - seq)), constant_values=pad.get(n, 0)) for n, a in arrays.items()
            }
        if batch < min_b:  # repeat the last row; its outputs are dropped
            arrays = {n: np.concatenate([a, np.repeat(a[-1:], min_b - batch, axis=0)]) for n, a in arrays.items()}
        return arrays, batch

    def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        arrays = {}
        for name in self.input_names:
            if name in batch:
                arrays[name] = np.asarray(batch[name])
            elif name == "token_type_ids" and "input_ids" in batch:
                arrays[name] = np.zeros_like(np.asarray(batch["input_ids"]))
            else:
                raise ValueError(f"the engine needs input {name!r}; the batch has {', '.join(sorted(batch))}")
        arrays, rows = self._fit_to_profile(arrays)

        with torch.cuda.device(self._device):
            stream = torch.cuda.current_stream(self._device)
            buffers = {}
            for name, array in arrays.items():
                tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self._device, dtype=self._dtypes[name])
                buffers[name] = tensor.contiguous()
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise ValueError(f"TensorRT refused shape {tuple(tensor.shape)} for input {name!r}")
                self.context.set_tensor_address(name, buffers[name].data_ptr())
            for name in self._outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"TensorRT could not infer the shape of output {name!r} (got {shape})")
                buffers[name] = torch.empty(shape, dtype=self._dtypes[name], device=self._device)
                self.context.set_tensor_address(name, buffers[name].data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT failed to run the engine (see the TensorRT errors logged above)")
            stream.synchronize()
            logits = buffers[self._logits][:rows].float().cpu().numpy()
        return logits

    def close(self) -> None:
        self.context = None
        self.engine = None
        self._trt_runtime = None
        torch = getattr(self, "_torch", None)
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


@register_runtime(
    "tensorrt", display_name="TensorRT", files=(ENGINE_FILE,), devices=("cuda",),
    not_exportable="a TensorRT engine is built for one GPU model and TensorRT version; "
                   "export the ONNX variant it was built from instead",
)
def load_tensorrt_predictor(model_dir: Path, device: str, max_length: int | None,
                            threads: int | None) -> TensorRTPredictor:
    return TensorRTPredictor(model_dir, device, max_length)  # runs on the GPU: no CPU threads to cap
