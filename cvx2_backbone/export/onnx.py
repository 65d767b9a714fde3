"""A backbone (optionally with its FPN) to ONNX with dynamic batch, height and width, and to OpenVINO IR.

Either torch exporter works (``dynamo``: torch.export + onnxscript; ``torchscript``: the tracing
exporter); both graphs run the backbone's plain ops (:mod:`cvx2_backbone.ops`), and by default GRN's
norms in their fp16-safe form (:func:`cvx2_backbone.ops.fp16_safe_statistics`; same values in fp32).
Outputs are named after the model's ``out_features``; the ONNX file's ``metadata_props`` record what a
deployment needs (strides, channels, mean/std, preset, exporter, opset) under ``cvx2.*`` keys as JSON.
Files are written under temporary names and renamed when complete: a failure or an interrupt leaves
nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from cvx2_backbone import ops
from cvx2_backbone.models.convnext import ConvNeXt
from cvx2_backbone.models.factory import model_name
from cvx2_backbone.runtimes.backbones import OnnxRuntimeBackbone, OpenVinoBackbone
from cvx2_backbone.runtimes.compare import relative_error
from cvx2_backbone.utils.files import follow_umask, replace_together, temporary_name
from cvx2_backbone.version import __version__

EXPORTERS = ("dynamo", "torchscript")
ONNX_OPSET = 18  # the dynamo exporter's own opset (its down-conversion to 17 fails on Reduce* axes)
INPUT_NAME = "x"
METADATA_PREFIX = "cvx2."
EXPORT_SAMPLE = (2, 3, 64, 96)  # traced input; batch 2 and H != W so that no dimension specialises
VERIFY_SHAPE = (3, 3, 96, 160)  # another batch, height and width than the traced input
VERIFY_TOLERANCE = 1e-4  # max relative error in fp32
_EXTRACTOR_ATTRIBUTES = ("forward_features", "name", "out_features", "out_strides", "out_channels", "mean", "std",
                         "size_divisor")


class VerificationError(RuntimeError):
    """A runtime's outputs differ from PyTorch's by more than the tolerance: nothing was written."""


class ExportableBackbone(nn.Module):
    """``FeatureExtractor.forward_features`` as a tuple-returning module (normalised NCHW pixels in)."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.extractor.forward_features(x).values())


@dataclass
class ExportResult:
    """What :func:`export_backbone` wrote and recorded."""

    onnx: Path
    metadata: dict[str, Any]
    openvino: Path | None = None
    checks: list[Verification] = field(default_factory=list)


class BackboneOutputs(nn.Module):
    """A bare ConvNeXt backbone seen as an extractor without neck: named outputs, ImageNet mean/std, stride padding."""

    def __init__(self, backbone: ConvNeXt) -> None:
        super().__init__()
        self.backbone = backbone
        self.name = model_name(backbone)
        self.out_features, self.out_strides = list(backbone.out_features), list(backbone.out_strides)
        self.out_channels = list(backbone.out_channels)
        self.size_divisor = max(self.out_strides)
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.out_features, self.backbone(x)))


def as_extractor(model: nn.Module) -> nn.Module:
    """A ``FeatureExtractor`` (anything with ``forward_features`` and the output attributes) as is; a bare ``ConvNeXt``
    backbone as :class:`BackboneOutputs`. Export never imports the extractor: extraction uses export, not the
    reverse."""
    if isinstance(model, ConvNeXt):
        return BackboneOutputs(model)
    if all(hasattr(model, name) for name in _EXTRACTOR_ATTRIBUTES):
        return model
    raise TypeError(f"export_backbone takes a ConvNeXt/ConvNeXtV2 backbone or a FeatureExtractor, "
                    f"got {type(model).__name__}")


def export_metadata(extractor, exporter: str, opset: int, fp16_safe: bool, weights: str | None) -> dict[str, Any]:
    """The ``cvx2.*`` metadata of an export (values JSON-able)."""
    return {"model": extractor.name, "weights": weights, "outputs": list(extractor.out_features),
            "strides": list(extractor.out_strides), "channels": list(extractor.out_channels),
            "mean": extractor.mean.flatten().tolist(), "std": extractor.std.flatten().tolist(),
            "input": INPUT_NAME, "input_layout": "NCHW, RGB, normalised (x / 255 - mean) / std, H and W multiples "
            f"of {extractor.size_divisor} recommended", "exporter": exporter, "opset": opset,
            "fp16_safe": fp16_safe, "cvx2_backbone_version": __version__}


def read_metadata(model: Any) -> dict[str, Any]:
    """The ``cvx2.*`` metadata of an ONNX file path or ``onnx.ModelProto``, decoded."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return {p.key[len(METADATA_PREFIX):]: json.loads(p.value) for p in model.metadata_props
            if p.key.startswith(METADATA_PREFIX)}


def check_exporter(exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose {' or '.join(EXPORTERS)}")


def _torch_export(module: nn.Module, path: Path, exporter: str, opset: int, output_names: Sequence[str]) -> None:
    sample = (torch.randn(*EXPORT_SAMPLE),)
    with warnings.catch_warnings():
        if exporter == "dynamo":
            torch.onnx.export(module, sample, str(path), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                              output_names=list(output_names), verbose=False,
                              dynamic_shapes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}})
            return
        # The backbone's input checks read the traced shape (a TracerWarning each); the graph has none of them.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(module, sample, str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=list(output_names),
                          dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                                        **{name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
                                           for name in output_names}})


def _finish_onnx(path: Path, metadata: dict[str, Any]) -> None:
    """Constant folding and no-op casts removed (onnxscript's optimizer, as the dynamo exporter runs it), metadata."""
    import onnx
    import onnxscript.optimizer

    model = onnxscript.optimizer.optimize(onnx.load(str(path)))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=METADATA_PREFIX + key, value=json.dumps(value))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _save_openvino(onnx_path: Path, xml_path: Path, metadata: dict[str, Any]) -> None:
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    for key, value in metadata.items():
        model.set_rt_info(json.dumps(value), ["cvx2", key])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def export_backbone(model: nn.Module, output: str | os.PathLike, *, exporter: str = "dynamo",
                    fp16_safe: bool = True, openvino: bool = False, opset: int = ONNX_OPSET,
                    verify: Sequence[int] | None = None, tolerance: float = VERIFY_TOLERANCE,
                    weights: str | None = None) -> ExportResult:
    """Export ``model`` (a ConvNeXt backbone or a ``FeatureExtractor`` with its FPN) to the ONNX file ``output``.

    ``fp16_safe`` traces GRN's norms on inputs scaled by their maxima (no fp16 overflow, fp32 values unchanged);
    ``openvino`` also writes ``output`` with the suffix ``.xml`` (and ``.bin``), an OpenVINO IR in fp32.
    ``verify`` (an input shape, e.g. :data:`VERIFY_SHAPE`) runs every written file on a random input of that shape
    before the files are put in place, and raises :class:`VerificationError` (writing nothing) if an output's max
    relative error exceeds ``tolerance``. ``weights`` is recorded in the metadata only.
    """
    check_exporter(exporter)
    extractor = as_extractor(model)
    output = Path(output)
    if output.suffix != ".onnx":
        raise ValueError(f"the output file must end in .onnx, got {output}")
    targets = {"onnx": output}
    if openvino:
        targets.update(xml=output.with_suffix(".xml"), bin=output.with_suffix(".bin"))
    metadata = export_metadata(extractor, exporter, opset, fp16_safe, weights)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_name(output)  # a folder; its files are renamed out at the end
    was_training = extractor.training
    extractor.eval()
    try:
        staging.mkdir()
        staged = {kind: staging / path.name for kind, path in targets.items()}
        with torch.no_grad(), ops.plain_ops(), ops.fp16_safe_statistics(fp16_safe):
            _torch_export(ExportableBackbone(extractor).eval(), staged["onnx"], exporter, opset, extractor.out_features)
        _finish_onnx(staged["onnx"], metadata)
        if openvino:
            _save_openvino(staged["onnx"], staged["xml"], metadata)
        checks = []
        if verify is not None:
            checks = verify_files(extractor, staged["onnx"], staged.get("xml"), verify)
            worst = max(checks, key=lambda c: c.max_error)
            if worst.max_error > tolerance:
                raise VerificationError(f"{worst.runtime} differs from PyTorch by {worst.max_error:.2e} (max relative "
                                        f"error, limit {tolerance:.0e}) on input {worst.input_shape}: {worst.errors}; "
                                        "nothing was written")
        kinds = [kind for kind in ("onnx", "bin", "xml") if kind in staged]
        for kind in kinds:
            follow_umask(staged[kind])
        replace_together([(staged[kind], targets[kind]) for kind in kinds])  # never a new .xml with an old .bin
    finally:
        extractor.train(was_training)
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(output, metadata, targets.get("xml"), checks)


# --- verification ------------------------------------------------------------------------------------

@dataclass
class Verification:
    """Max relative error (max |runtime - torch| / max |torch|) per output on one input."""

    runtime: str
    input_shape: tuple[int, ...]
    errors: dict[str, float]

    @property
    def max_error(self) -> float:
        return max(self.errors.values())


def export_onnx(model: nn.Module, path: str | Path) -> Path:
    """The benchmark's export: :func:`export_backbone` with the (faster) TorchScript exporter."""
    return export_backbone(model, path, exporter="torchscript").onnx


def verify_files(model: nn.Module, onnx_path: Path, openvino_xml: Path | None = None,
                 shape: Sequence[int] = VERIFY_SHAPE, seed: int = 0) -> list[Verification]:
    """Run an exported ONNX file with ONNX Runtime (and an IR with OpenVINO in f32) on a random input of ``shape``.

    Every output is compared with PyTorch's plain ops on ``model``.
    """
    extractor = as_extractor(model)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    was_training = extractor.training
    extractor.eval()
    try:
        with torch.no_grad(), ops.plain_ops():
            expected = ExportableBackbone(extractor)(x)
    finally:
        extractor.train(was_training)
    runtimes = [OnnxRuntimeBackbone(onnx_path, threads=torch.get_num_threads())]
    if openvino_xml is not None:
        runtimes.append(OpenVinoBackbone(openvino_xml, threads=torch.get_num_threads()))
    checks = []
    for runtime in runtimes:
        actual = runtime.run(x, "fp32")
        errors = {name: relative_error(a, e) for name, a, e in zip(extractor.out_features, actual, expected)}
        checks.append(Verification(runtime.name, tuple(shape), errors))
    return checks
