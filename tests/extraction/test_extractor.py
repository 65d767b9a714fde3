"""FeatureExtractor: every input kind, batching, preprocessing policy, FPN neck, weights and errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cvx2_backbone import ConvNeXt, ConvNeXtV2
from cvx2_backbone.extraction.extractor import FeatureExtractor
from cvx2_backbone.extraction.images import ImageReadError, shortest_edge_size
from cvx2_backbone.models.factory import parse_preset, preset_names
from cvx2_backbone.utils.pictures import LABEL_HEIGHT, TILE_GAP, pca_rgb, pyramid_image

TINY = dict(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64])


def tiny_extractor(**kwargs) -> FeatureExtractor:
    torch.manual_seed(0)
    outputs = {k: kwargs.pop(k) for k in ("out_features", "out_indices") if k in kwargs}
    return FeatureExtractor(ConvNeXtV2(arch=TINY, **outputs), **kwargs)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def assert_same(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].shape == b[name].shape, name
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=1e-4)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return tiny_extractor()


def test_every_input_kind_gives_the_same_features(extractor, tmp_path):
    array = random_image(70, 100)
    path = tmp_path / "image.png"  # lossless, so the file holds exactly the array
    Image.fromarray(array).save(path)
    tensor_u8 = torch.from_numpy(array).permute(2, 0, 1)
    kinds = {
        "path": path, "str": str(path), "pil": Image.fromarray(array), "array": array,
        "uint8 tensor": tensor_u8, "float tensor": tensor_u8.float() / 255,
    }
    with torch.no_grad():
        results = {kind: extractor(image) for kind, image in kinds.items()}
    reference = results["array"]
    assert list(reference) == ["stage1", "stage2", "stage3", "stage4"]
    for name, stride, channels in zip(extractor.out_features, extractor.out_strides, extractor.out_channels):
        assert reference[name].shape == (1, channels, math.ceil(70 / stride), math.ceil(100 / stride))
    assert extractor.out_strides == [4, 8, 16, 32] and extractor.out_channels == [8, 16, 32, 64]
    for kind, result in results.items():
        assert_same(result, reference)


def test_batches_match_single_images(extractor):
    images = [random_image(64, 96, seed) for seed in range(3)]
    with torch.no_grad():
        singles = [extractor(image) for image in images]
        as_list = extractor([Image.fromarray(images[0]), images[1], torch.from_numpy(images[2]).permute(2, 0, 1)])
        as_array = extractor(np.stack(images))
        as_tensor = extractor(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))
    for batch in (as_list, as_array, as_tensor):
        assert batch["stage1"].shape == (3, 8, 16, 24)
        for i, single in enumerate(singles):
            assert_same({k: v[i:i + 1] for k, v in batch.items()}, single)
    each = extractor.extract_each(images)
    assert len(each) == 3 and not each[0]["stage4"].requires_grad
    assert_same({k: v[None] for k, v in each[1].items()}, singles[1])


def test_mixed_sizes_are_cropped_per_image(extractor):
    batch = extractor.preprocess([random_image(40, 100), random_image(90, 50)])
    assert batch.image_sizes == [(40, 100), (90, 50)] and batch.original_sizes == batch.image_sizes
    assert batch.pixel_values.shape == (2, 3, 96, 128)  # padded to the largest, then to a multiple of 32
    assert torch.all(batch.pixel_values[0, :, 40:] == 0) and torch.all(batch.pixel_values[1, :, :, 50:] == 0)
    each = extractor.extract_each(batch)
    assert each[0]["stage1"].shape == (8, 10, 25) and each[1]["stage1"].shape == (8, 23, 13)
    assert each[0]["stage4"].shape == (64, 2, 4) and each[1]["stage4"].shape == (64, 3, 2)
    assert extractor(batch)["stage2"].shape == (2, 16, 12, 13)  # cropped to the largest image


def test_preprocessing_is_imagenet_normalisation_with_zero_padding(extractor):
    array = random_image(33, 47)
    batch = extractor.preprocess(array)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (torch.from_numpy(array).permute(2, 0, 1).float() / 255 - mean[:, None, None]) / std[:, None, None]
    torch.testing.assert_close(batch.pixel_values[0, :, :33, :47], expected)
    assert batch.pixel_values.shape == (1, 3, 64, 64)
    assert batch.pixel_values[0, :, 33:].abs().sum() == 0 and batch.pixel_values[0, :, :, 47:].abs().sum() == 0


def hf_processor(**kwargs):
    """Hugging Face's ConvNeXt processor as the published ConvNeXt (V2) checkpoints configure it."""
    transformers = pytest.importorskip("transformers")
    return transformers.ConvNextImageProcessor(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                                               resample=3, **kwargs)


def test_pixels_match_hugging_face_convnext_processor(extractor):
    array = random_image(48, 80)
    theirs = hf_processor(do_resize=False)(images=array, return_tensors="np")["pixel_values"]
    theirs = torch.as_tensor(np.asarray(theirs))
    ours = extractor.preprocess(array).pixel_values[:, :, :48, :80]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [224, 384])
def test_classifier_input_matches_hugging_face_resize_and_crop(size):
    from cvx2_backbone.extraction.classifier import classifier_input

    array = np.array(Image.fromarray(random_image(60, 80)).resize((400, 300), Image.BILINEAR))
    theirs = hf_processor(size={"shortest_edge": size})(images=array, return_tensors="np")["pixel_values"]
    theirs = torch.as_tensor(np.asarray(theirs))
    ours = classifier_input(array, size, 224 / 256)[None]
    assert ours.shape == theirs.shape == (1, 3, size, size)
    # Hugging Face resizes uint8 images, this package floats: equal up to rounding to 1/255 steps.
    assert (ours - theirs).abs().mean() < 0.01 and (ours - theirs).abs().max() < 0.15


def test_shortest_edge_resize_keeps_aspect_ratio():
    assert shortest_edge_size(300, 400, 224) == (224, 298)  # long side rounds down, as Hugging Face does
    assert shortest_edge_size(400, 300, 224) == (298, 224)
    assert shortest_edge_size(300, 400, None) == (300, 400)
    resizing = tiny_extractor(shortest_edge=64)
    batch = resizing.preprocess(random_image(100, 150))
    assert batch.image_sizes == [(64, 96)] and batch.original_sizes == [(100, 150)]
    assert resizing(random_image(100, 150))["stage1"].shape == (1, 8, 16, 24)


def test_presets_and_output_selection():
    assert parse_preset("convnextv2_atto") == (ConvNeXtV2, "atto")
    assert parse_preset("ConvNeXt-Small") == (ConvNeXt, "small")
    assert "convnextv2_huge" in preset_names() and "convnext_xlarge" in preset_names()
    extractor = FeatureExtractor("convnextv2_atto", out_features=["stem", "stage3"])
    assert extractor.name == "convnextv2_atto"
    assert extractor.out_channels == [40, 160] and extractor.out_strides == [4, 16]
    with torch.no_grad():
        features = extractor(random_image(64, 64))
    assert {k: tuple(v.shape) for k, v in features.items()} == {"stem": (1, 40, 16, 16), "stage3": (1, 160, 4, 4)}
    v1 = FeatureExtractor("convnext_atto", out_indices=[-1])
    assert isinstance(v1.backbone, ConvNeXt) and not isinstance(v1.backbone, ConvNeXtV2)
    assert v1.out_features == ["stage4"]


def test_fpn_outputs_and_names():
    fpn = tiny_extractor(fpn=dict(out_channels=24))
    assert fpn.out_features == ["p2", "p3", "p4", "p5", "p6"]
    assert fpn.out_strides == [4, 8, 16, 32, 64] and fpn.out_channels == [24] * 5
    assert fpn.size_divisor == 64
    with torch.no_grad():
        features = fpn(random_image(70, 130))
    for (name, fmap), stride in zip(features.items(), fpn.out_strides):
        assert fmap.shape == (1, 24, math.ceil(70 / stride), math.ceil(130 / stride)), name
    no_extra = tiny_extractor(fpn=dict(out_channels=16, extra_levels=0), out_features=["stage2", "stage3", "stage4"])
    assert no_extra.out_features == ["p3", "p4", "p5"] and no_extra.out_strides == [8, 16, 32]


def test_fpn_matches_mmdet_fpn_and_loads_detector_checkpoints(tmp_path):
    mmdet_fpn = pytest.importorskip("mmdet.models.necks").FPN
    torch.manual_seed(1)
    backbone = ConvNeXtV2(arch=TINY)
    neck = mmdet_fpn(in_channels=TINY["dims"], out_channels=16, num_outs=5)
    for param in neck.parameters():  # mmdet zero-inits biases: make them matter
        torch.nn.init.normal_(param, std=0.1)
    detector = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
                **{f"neck.{k}": v for k, v in neck.state_dict().items()},
                "rpn_head.rpn_conv.weight": torch.zeros(16, 16, 3, 3)}
    path = tmp_path / "detector.pth"
    torch.save({"state_dict": detector, "meta": {"iter": 1}}, path)

    extractor = FeatureExtractor(None, path, fpn=True)  # architecture and FPN width from the weights
    assert extractor.out_channels == [16] * 5 and extractor.name.startswith("ConvNeXtV2(")
    batch = extractor.preprocess(random_image(64, 96))
    with torch.no_grad():
        ours = list(extractor.forward_features(batch.pixel_values).values())
        theirs = neck(backbone.eval()(batch.pixel_values))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_classification_weights_build_the_backbone(tmp_path):
    torch.manual_seed(2)
    source = ConvNeXt(arch=TINY, out_norm=False)
    state = {**source.state_dict(), "norm.weight": torch.ones(64), "norm.bias": torch.zeros(64),
             "head.weight": torch.randn(10, 64), "head.bias": torch.zeros(10)}
    path = tmp_path / "classifier.pth"
    torch.save({"model": state}, path)
    extractor = FeatureExtractor(None, path, out_features=["stage4"])
    assert type(extractor.backbone) is ConvNeXt and extractor.backbone.dims == TINY["dims"]
    torch.testing.assert_close(extractor.backbone.stages[3][0].pwconv2.weight, source.stages[3][0].pwconv2.weight)
    with pytest.warns(UserWarning, match="no FPN weights"):
        FeatureExtractor(None, path, fpn=True)


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((32, 32, 3), dtype=np.float32), TypeError, "uint8"),
    (np.zeros((3, 32, 32), dtype=np.uint8), ValueError, "transpose it to HWC"),
    (np.zeros((32, 32, 4), dtype=np.uint8), ValueError, "1 or 3 channels"),
    (torch.full((3, 32, 32), 2.0), ValueError, r"\[0, 1\]"),
    (torch.zeros(3, 32, 32, dtype=torch.int64), TypeError, "uint8 or floating"),
    (torch.zeros(32, 32, 3), ValueError, "CHW"),
    ("no/such/image.png", ImageReadError, "not found"),
    (42, TypeError, "unsupported image type"),
    ([], ValueError, "empty"),
])
def test_bad_inputs_raise_clear_errors(extractor, bad, error, match):
    with pytest.raises(error, match=match):
        extractor(bad)


def test_bad_settings_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model preset"):
        FeatureExtractor("convnextv2_gigantic")
    with pytest.raises(ValueError, match="drop 'stem'"):
        FeatureExtractor("convnextv2_atto", out_features=["stem", "stage1"], fpn=True)
    with pytest.raises(ValueError, match="unknown fpn option"):
        FeatureExtractor("convnextv2_atto", fpn=dict(channels=64))
    with pytest.raises(ValueError, match="preset name"):
        FeatureExtractor(None)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="cannot read image"):
        tiny_extractor()(broken)


def test_pca_picture_layout_and_colours(extractor):
    rgb = pca_rgb(torch.randn(8, 5, 7))
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8 and rgb.max() == 255 and rgb.min() == 0
    # A map that varies along one direction only: the first component follows it and is brightest
    # where the response is strongest (the right end of this convex ramp), whatever the channel signs.
    ramp = torch.linspace(0, 1, 6).square().repeat(4, 3, 1) * torch.tensor([1.0, -2.0, 0.5, 3.0])[:, None, None]
    red = pca_rgb(ramp)[..., 0].astype(int)
    assert (np.diff(red, axis=1) >= 0).all() and red[:, -1].min() == 255 and red[:, 0].max() == 0
    image = random_image(96, 64)
    features = extractor.extract_each(image)[0]
    picture = pyramid_image(image, features, extractor.out_strides, tile=120)
    tile_w = round(64 * 120 / 96)  # long side 120, aspect kept
    assert picture.size == (5 * tile_w + 4 * TILE_GAP, 120 + LABEL_HEIGHT)
