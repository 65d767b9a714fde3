"""Engines of FeatureExtractor and `cvx2 extract`: each equals PyTorch; `auto` chooses, caches and records."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cvx2_backbone import ConvNeXtV2
from cvx2_backbone.extraction import engine_choice as engines
from cvx2_backbone.runtimes import choice_cache as engine_cache
from cvx2_backbone.runtimes.compare import worst_relative_error
from cvx2_backbone.cli.main import main
from cvx2_backbone.extraction.feature_files import load_features
from cvx2_backbone.extraction.extractor import FeatureExtractor

TINY = dict(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64])
EXPORTED = [e for e in ("onnxruntime", "openvino") if engines.installed(e)]
NATIVE_BF16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (GRN and biases included, so each one matters)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * (0.3 if param.dim() > 1 else 0.5))
    return model


def detector_checkpoint(tmp_path, seed: int = 1):
    """A detector checkpoint (mmdet's FPN keys) with a random backbone and a trained-looking 16-channel FPN."""
    mmdet_fpn = pytest.importorskip("mmdet.models.necks").FPN
    torch.manual_seed(seed)
    backbone = randomized(ConvNeXtV2(arch=TINY), seed)
    neck = randomized(mmdet_fpn(in_channels=TINY["dims"], out_channels=16, num_outs=5), seed)
    state = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
             **{f"neck.{k}": v for k, v in neck.state_dict().items()}}
    path = tmp_path / "detector.pth"
    torch.save({"state_dict": state, "meta": {}}, path)
    return path


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return detector_checkpoint(tmp_path_factory.mktemp("detector"))


def pixels(shape=(2, 3, 64, 96), seed=3) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def plain_fp32(extractor: FeatureExtractor, x: torch.Tensor) -> list[torch.Tensor]:
    from cvx2_backbone import ops

    with torch.no_grad(), ops.plain_ops():
        return list(extractor.forward_features(x).values())


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(
    not NATIVE_BF16, reason="this CPU only emulates bf16"))])
@pytest.mark.parametrize("runtime", ["torch", *EXPORTED])
def test_each_engine_equals_the_pytorch_path_with_the_fpn_of_a_detector(detector, runtime, precision):
    if runtime == "onnxruntime" and precision == "bf16":
        with pytest.raises(engines.EngineUnavailableError, match="no bf16 mode"):
            FeatureExtractor(None, detector, fpn=True, runtime=runtime, precision=precision)
        return
    extractor = FeatureExtractor(None, detector, fpn=True, runtime=runtime, precision=precision)
    x = pixels()
    features, engine = extractor.infer(x)
    assert engine.name == runtime and engine.precision_used == precision
    assert list(features) == ["p2", "p3", "p4", "p5", "p6"]
    expected = plain_fp32(extractor, x)
    error = worst_relative_error(list(features.values()), expected)
    assert all(f.dtype == torch.float32 for f in features.values())
    if precision == "fp32":
        assert error <= engines.FP32_TOLERANCE
    else:  # the stated bf16 bound, against PyTorch's own bf16 path
        torch_bf16 = worst_relative_error(engines.TorchEngine(extractor, "bf16")(x), expected)
        assert error <= max(engines.BF16_FACTOR * torch_bf16, engines.BF16_FLOOR)
        assert error > 1e-5  # it really computed in bf16


@pytest.mark.skipif(not EXPORTED, reason="needs onnxruntime or openvino (the deploy extra)")
def test_auto_measures_once_picks_an_exact_engine_and_caches_the_choice(tmp_path, monkeypatch):
    monkeypatch.setenv(engine_cache.CACHE_ENV, str(tmp_path))
    model = randomized(ConvNeXtV2(arch=TINY))
    extractor = FeatureExtractor(model, runtime="auto")
    features, engine = extractor.infer(pixels((1, 3, 64, 64)))
    bucket = engines.shape_bucket((1, 3, 64, 64), "fp32")
    assert bucket == engines.shape_bucket((1, 3, 64, 72), "fp32") != engines.shape_bucket((2, 3, 64, 64), "fp32")
    choice = extractor.engines.choices[bucket]
    assert choice.engine == engine.name and set(choice.seconds) == {"torch", *EXPORTED}
    assert choice.seconds[choice.engine] == min(choice.seconds.values())
    assert all(error <= engines.FP32_TOLERANCE for error in choice.errors.values())
    stored = json.loads(extractor.engines.cache.path.read_text())
    assert stored["choices"][bucket]["engine"] == choice.engine
    assert stored["identity"]["threads"] == torch.get_num_threads()

    # Another extractor with the same weights reads the choice: nothing is measured again.
    monkeypatch.setattr(engines, "time_engines", lambda *a, **k: pytest.fail("measured again"))
    again = FeatureExtractor(randomized(ConvNeXtV2(arch=TINY)), runtime="auto")
    assert again.infer(pixels((1, 3, 64, 72)))[1].name == choice.engine  # another shape, the same bucket
    torch.testing.assert_close(again.infer(pixels((1, 3, 64, 64)))[0], features, atol=1e-5, rtol=1e-4)


def test_the_cache_key_changes_with_the_machine_and_the_model(tmp_path, monkeypatch):
    model = randomized(ConvNeXtV2(arch=TINY))
    here = engine_cache.machine_identity(2)
    cache = engine_cache.ChoiceCache(here, engine_cache.model_digest(model), tmp_path)
    cache.store("fp32/1/s", {"engine": "openvino"})
    assert engine_cache.ChoiceCache(here, engine_cache.model_digest(model), tmp_path).load() == {
        "fp32/1/s": {"engine": "openvino"}}

    monkeypatch.setattr(engine_cache, "cpu_model_name", lambda: "Some Other CPU")
    monkeypatch.setattr(engine_cache, "cpu_flags_digest", lambda: "0123456789abcdef")
    elsewhere = engine_cache.machine_identity(2)
    assert elsewhere != here
    for other in (engine_cache.ChoiceCache(elsewhere, cache.digest, tmp_path),  # another machine
                  engine_cache.ChoiceCache(dict(here, threads=4), cache.digest, tmp_path),  # other threads
                  engine_cache.ChoiceCache(here, engine_cache.model_digest(randomized(ConvNeXtV2(arch=TINY), 1)),
                                           tmp_path)):  # other weights
        assert other.path != cache.path and other.load() == {}
    other_arch = ConvNeXtV2(arch=dict(depths=[1, 1, 2, 1], dims=TINY["dims"]))
    assert engine_cache.model_digest(other_arch) != cache.digest
    cache.path.write_text(json.dumps({"identity": elsewhere, "model": cache.digest, "choices": {"x": {}}}))
    assert cache.load() == {}  # a file that is not this machine's is ignored


def test_an_engine_that_is_not_installed_is_left_out_with_a_note(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    assert not engines.installed("openvino")
    extractor = FeatureExtractor(randomized(ConvNeXtV2(arch=TINY)), runtime="auto")
    names, notes = extractor.engines.candidates()
    assert "openvino" not in names and "torch" in names and "not installed" in notes["openvino"]
    with pytest.raises(engines.EngineUnavailableError, match="openvino is not installed"):
        FeatureExtractor(randomized(ConvNeXtV2(arch=TINY)), runtime="openvino")

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["extract", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--runtime", "openvino"]) == 2
    err = capsys.readouterr().err
    assert "runtime openvino is not installed" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("runtime", ["auto", *EXPORTED])
def test_extract_command_files_are_the_same_whichever_engine_ran(tmp_path, runtime, monkeypatch):
    from cvx2_backbone.runtimes import allocator

    calls = []
    monkeypatch.setattr(allocator, "reuse_freed_memory", lambda: calls.append(1) or True)
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a", (64, 96)), ("b", (64, 96)), ("c", (80, 48))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    weights = tmp_path / "backbone.pth"
    torch.save(randomized(ConvNeXtV2("atto")).state_dict(), weights)
    common = [str(folder), "--weights", str(weights), "--batch-size", "2", "--threads", "1"]
    assert main(["extract", *common, "-o", str(tmp_path / "torch"), "--runtime", "torch"]) == 0
    assert main(["extract", *common, "-o", str(tmp_path / "other"), "--runtime", runtime]) == 0
    assert len(calls) == 2  # each run reuses freed blocks (cvx2_backbone/runtimes/allocator.py)
    for name in ("a", "b", "c"):
        ours, ours_meta = load_features(tmp_path / "torch" / f"{name}.safetensors")
        theirs, their_meta = load_features(tmp_path / "other" / f"{name}.safetensors")
        assert ours_meta.pop("engine").startswith("torch ") and ours_meta.pop("precision") == "fp32"
        engine = their_meta.pop("engine")
        assert their_meta.pop("precision") == "fp32" and ours_meta == their_meta
        assert engine.split()[0] in ((runtime,) if runtime != "auto" else engines.ENGINES)
        assert list(ours) == list(theirs)
        for key in ours:
            assert ours[key].shape == theirs[key].shape
            scale = np.abs(ours[key]).max()
            assert np.abs(ours[key] - theirs[key]).max() <= engines.FP32_TOLERANCE * scale


@pytest.mark.skipif("openvino" not in EXPORTED, reason="needs openvino")
def test_openvino_compiles_once_for_new_sizes_and_per_size_for_recurring_ones(monkeypatch):
    extractor = FeatureExtractor(randomized(ConvNeXtV2(arch=TINY)), runtime="openvino")
    engine = extractor.engines.engine("openvino")
    openvino = engine.runtime
    openvino.static_shapes = 2
    dynamic = openvino.dynamic["fp32"]
    shapes = ((1, 3, 64, 64), (1, 3, 64, 72), (1, 3, 72, 64))  # one bucket: checked once, on the first shape
    assert len({engines.shape_bucket(shape, "fp32") for shape in shapes}) == 1
    for call, shape in enumerate([*shapes, *shapes, shapes[0]]):
        x = pixels(shape)
        features, ran = extractor.infer(x)
        assert ran is engine and openvino.dynamic["fp32"] is dynamic  # one dynamic model serves every new shape
        # a recurring shape runs its own static model; the check ran the first shape twice
        assert ((shape, "fp32") in openvino.static) is (call == 0 or call >= len(shapes))
        assert worst_relative_error(list(features.values()), plain_fp32(extractor, x)) <= engines.FP32_TOLERANCE
    assert list(openvino.static) == [(shapes[2], "fp32"), (shapes[0], "fp32")]  # the two most recently used, oldest
    # first


def test_the_export_cache_keeps_the_most_recently_used_models(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "KEPT_EXPORTS", 2)
    extractors = [FeatureExtractor(randomized(ConvNeXtV2(arch=TINY), seed), runtime="torch") for seed in range(3)]
    digests = [engine_cache.model_digest(e) for e in extractors]
    paths = [engines.export_for_engines(e, d, tmp_path) for e, d in zip(extractors[:2], digests)]
    assert engines.export_for_engines(extractors[0], digests[0], tmp_path) == paths[0]  # reused, now the newest
    os.utime(paths[1], (0, 0))  # the other one is older
    engines.export_for_engines(extractors[2], digests[2], tmp_path)
    assert not paths[1].exists() and paths[0].exists() and len(list((tmp_path / "models").glob("*.onnx"))) == 2
