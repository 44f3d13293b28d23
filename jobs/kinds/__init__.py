"""Built-in job kinds, one module each. Importing this package registers them."""

from jobs.kinds import (  # noqa: F401
    benchmark,
    build_tensorrt,
    distill,
    evaluate,
    export_onnx,
    export_openvino,
    finetune,
    inspect,
    loadtest,
    prune,
    quantize,
    search,
    truncate,
)
