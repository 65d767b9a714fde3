"""ONNX Runtime and OpenVINO running this backbone's own ONNX export, for side-by-side benchmarks.

Both load the file :func:`cvx2_backbone.deploy.backbone_export.export_onnx` (``cvx2 export``'s code) writes from
the benchmarked model (same weights) and return the stage outputs as tensors, so the benchmark treats them like the
torch models. Needs the ``deploy`` extra (onnx, onnxruntime, openvino). The export imports this module (to verify
its files), never the other way round.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class Runtime(nn.Module):
    """An inference-only backbone on another runtime: ``forward`` takes and returns CPU tensors (fp32 I/O)."""

    name = ""

    def precision_used(self, precision: str) -> str:
        """The precision the runtime computes in when asked for ``precision`` ('fp32' or 'bf16')."""
        return precision

    def run(self, x: Tensor, precision: str = "fp32") -> tuple[Tensor, ...]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.run(x, "fp32")


class OrtBackbone(Runtime):
    """ONNX Runtime's CPU provider, ``threads`` intra-op threads, no spin-waiting between calls."""

    name = "ort"
    precisions = ("fp32",)

    def __init__(self, path: str | Path, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.version = ort.__version__

    def run(self, x: Tensor, precision: str = "fp32") -> tuple[Tensor, ...]:
        outputs = self.session.run(None, {self.session.get_inputs()[0].name: x.detach().cpu().numpy()})
        return tuple(torch.from_numpy(o) for o in outputs)


_OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16"}


def compile_openvino(core: Any, model: Any, precision: str, threads: int,
                     shape: tuple[int, ...] | None = None) -> tuple[Any, str]:
    """``model`` compiled for OpenVINO's CPU plugin as every OpenVINO path of this project runs it (``precision``'s
    hint, ``threads`` threads, latency mode), for exactly ``shape`` where one is given, else with the model's own
    (dynamic) shapes; also the precision the plugin reports computing in (on CPUs without bf16 a bf16 hint runs f32)."""
    if shape is not None:
        model = model.clone()
        model.reshape(list(shape))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": _OPENVINO_HINTS[precision],
                                                 "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # an openvino Type
    return compiled, {"f32": "fp32", "f16": "fp16"}.get(used, used)


class OpenVinoBackbone(Runtime):
    """OpenVINO's CPU plugin, compiled per input shape and precision hint (f32 or bf16), latency mode."""

    name = "openvino"
    precisions = ("fp32", "bf16")

    def __init__(self, path: str | Path, threads: int) -> None:
        super().__init__()
        import openvino as ov

        self.core = ov.Core()
        self.model = self.core.read_model(str(path))
        self.threads = threads
        self.version = ov.__version__
        self._requests: dict[tuple, Any] = {}
        self._used: dict[str, str] = {}

    def _request(self, shape: tuple[int, ...], precision: str) -> Any:
        key = (shape, precision)
        if key not in self._requests:
            compiled, self._used[precision] = compile_openvino(self.core, self.model, precision, self.threads, shape)
            self._requests[key] = compiled.create_infer_request()
        return self._requests[key]

    def precision_used(self, precision: str) -> str:
        """What the plugin reports it computes in (on CPUs without bf16, a bf16 hint runs f32)."""
        return self._used.get(precision, precision)

    def run(self, x: Tensor, precision: str = "fp32") -> tuple[Tensor, ...]:
        results = self._request(tuple(x.shape), precision).infer({0: x.detach().cpu().numpy()})
        return tuple(torch.from_numpy(value.copy()) for value in results.values())


RUNTIMES = {OrtBackbone.name: OrtBackbone, OpenVinoBackbone.name: OpenVinoBackbone}
