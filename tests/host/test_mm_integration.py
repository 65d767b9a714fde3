"""The backbone inside OpenMMLab: registration, config resolution, one real training step."""
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from cvx2_backbone.engine.config import read_config

ATTO_CHANNELS = [40, 80, 160, 320]


def _config(tmp_path, text: str) -> Config:
    path = tmp_path / "cfg.py"
    path.write_text(textwrap.dedent(text))
    return read_config(path)  # mmseg:: bases resolve on the forks too


def test_import_does_not_load_mmdet_or_mmseg():
    code = ("import sys, cvx2_backbone; loaded = [m for m in ('mmdet', 'mmseg', 'mmcv.ops') if m in sys.modules]; "
            "print(loaded); sys.exit(1 if loaded else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_needs_only_torch_mmengine_and_timm():
    # Make the optional packages unimportable, as on a machine without them.
    code = ("import sys\n"
            "for name in ('mmdet', 'mmseg', 'mmcv', 'mmdeploy', 'transformers', 'pycocotools', 'matplotlib'):\n"
            "    sys.modules[name] = None\n"
            "import cvx2_backbone, torch\n"
            "print(cvx2_backbone.ConvNeXtV2('atto')(torch.zeros(1, 3, 32, 32))[-1].shape)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "torch.Size([1, 320, 1, 1])" in result.stdout


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
@pytest.mark.parametrize("name", ["ConvNeXtV2", "ConvNeXt"])
def test_config_builds_backbone_under_scope(tmp_path, scope, name):
    cfg = _config(tmp_path, f"""
        default_scope = '{scope}'
        custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
        backbone = dict(type='cvx2_backbone.{name}', arch='atto', out_indices=(1, 3))
    """)
    registry = __import__(f"{scope}.registry", fromlist=["MODELS"]).MODELS
    init_default_scope(cfg.default_scope)
    model = registry.build(cfg.backbone)
    assert type(model).__name__ == name
    assert model.out_channels == [80, 320]


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
def test_wrappers_and_constructor_resolve_from_the_child_scope(scope):
    """Everything the package registers lives in child registries of scope cvx2_backbone; the contract's
    plain constructor name resolves too."""
    import mmengine.registry as root

    import cvx2_backbone.registry as own
    from cvx2_backbone.engine import CPUAutocastOptimWrapper, DeviceAwareDDP
    from cvx2_backbone.engine.optimizers import ConvNeXtLayerDecayOptimizerConstructor
    init_default_scope(scope)
    scoped = __import__(f"{scope}.registry", fromlist=["OPTIM_WRAPPERS"])
    assert scoped.OPTIM_WRAPPERS.get("cvx2_backbone.CPUAutocastOptimWrapper") is CPUAutocastOptimWrapper
    assert scoped.MODEL_WRAPPERS.get("cvx2_backbone.DeviceAwareDDP") is DeviceAwareDDP
    for name in ("ConvNeXtLayerDecayOptimizerConstructor", "cvx2_backbone.ConvNeXtLayerDecayOptimizerConstructor"):
        assert scoped.OPTIM_WRAPPER_CONSTRUCTORS.get(name) is ConvNeXtLayerDecayOptimizerConstructor
    # Only the constructor sits in mmengine's roots; the wrappers are not there under their plain names.
    assert "CPUAutocastOptimWrapper" not in root.OPTIM_WRAPPERS.module_dict
    assert "DeviceAwareDDP" not in root.MODEL_WRAPPERS.module_dict
    assert own.OPTIM_WRAPPERS.scope == own.MODEL_WRAPPERS.scope == own.MODELS.scope == "cvx2_backbone"


def test_model_module_imports_neither_weights_nor_the_optimizers():
    """The import circle is cut: no import statement of the model module, at any depth, names the
    packages that import it; its Pretrained loader is found through the registry instead."""
    import ast

    import cvx2_backbone.models.convnext as model_module
    from cvx2_backbone.registry import WEIGHT_INITIALIZERS
    from cvx2_backbone.weights.initializer import PretrainedInit
    tree = ast.parse(open(model_module.__file__, encoding="utf-8").read())
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert imported and not any(name.startswith(("cvx2_backbone.weights", "cvx2_backbone.engine"))
                                for name in imported), imported
    assert WEIGHT_INITIALIZERS.get("Pretrained") is PretrainedInit


def _grads_reach_the_stem(model) -> bool:
    grad = model.backbone.downsample_layers[0][0].weight.grad
    return grad is not None and bool(grad.abs().sum() > 0)


@pytest.mark.slow
def test_mask_rcnn_training_step(tmp_path):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs

    cfg = _config(tmp_path, f"""
        _base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
        custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
        model = dict(
            backbone=dict(_delete_=True, type='cvx2_backbone.ConvNeXtV2', arch='atto', drop_path_rate=0.1),
            neck=dict(in_channels={ATTO_CHANNELS}))
    """)
    init_default_scope("mmdet")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    packed = demo_mm_inputs(2, [[3, 160, 160], [3, 128, 192]], num_items=[3, 2], num_classes=80, with_mask=True)
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode="loss")
    loss, log_vars = model.parse_losses(losses)
    assert {"loss_rpn_cls", "loss_cls", "loss_bbox", "loss_mask"} <= set(log_vars)
    assert torch.isfinite(loss)
    loss.backward()
    assert _grads_reach_the_stem(model)


@pytest.mark.slow
def test_upernet_training_step(tmp_path):
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData

    cfg = _config(tmp_path, f"""
        _base_ = 'mmseg::_base_/models/upernet_convnext.py'
        custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
        norm_cfg = dict(type='BN', requires_grad=True)
        model = dict(
            data_preprocessor=dict(size=(128, 128)),
            backbone=dict(_delete_=True, type='cvx2_backbone.ConvNeXtV2', arch='atto', drop_path_rate=0.1),
            decode_head=dict(in_channels={ATTO_CHANNELS}, channels=64, num_classes=5, norm_cfg=norm_cfg),
            auxiliary_head=dict(in_channels={ATTO_CHANNELS[2]}, channels=32, num_classes=5, norm_cfg=norm_cfg))
    """)
    init_default_scope("mmseg")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(128, 128), pad_shape=(128, 128), ori_shape=(128, 128)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 128, 128)))
        samples.append(sample)
    inputs = [torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8) for _ in range(2)]
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
    losses = model(**data, mode="loss")
    loss, log_vars = model.parse_losses(losses)
    assert {"decode.loss_ce", "aux.loss_ce"} <= set(log_vars)
    assert torch.isfinite(loss)
    loss.backward()
    assert _grads_reach_the_stem(model)


# --- a drop-in for mmdet's and mmseg's own base models -------------------------------------------------

# base model config: the channel fields that follow the backbone (everything else as mmdet/mmseg ship it)
BASE_MODELS = {
    "mmdet::_base_/models/mask-rcnn_r50_fpn.py": dict(neck=dict(in_channels=ATTO_CHANNELS)),
    "mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py": dict(neck=dict(in_channels=ATTO_CHANNELS)),
    "mmdet::_base_/models/faster-rcnn_r50_fpn.py": dict(neck=dict(in_channels=ATTO_CHANNELS)),
    "mmdet::_base_/models/retinanet_r50_fpn.py": dict(neck=dict(in_channels=ATTO_CHANNELS)),
    "mmseg::_base_/models/upernet_r50.py": dict(decode_head=dict(in_channels=ATTO_CHANNELS),
                                                auxiliary_head=dict(in_channels=ATTO_CHANNELS[2])),
    "mmseg::_base_/models/fpn_r50.py": dict(neck=dict(in_channels=ATTO_CHANNELS)),
    "mmseg::_base_/models/deeplabv3plus_r50-d8.py": dict(
        decode_head=dict(in_channels=ATTO_CHANNELS[3], c1_in_channels=ATTO_CHANNELS[0]),
        auxiliary_head=dict(in_channels=ATTO_CHANNELS[2])),
}


@pytest.mark.parametrize("base", list(BASE_MODELS), ids=lambda b: b.split("/")[-1][:-3])
def test_backbone_drops_into_mmdet_and_mmseg_base_models(tmp_path, base):
    """Only the backbone and the channel fields change; mmseg's model-level ``pretrained`` reaches the backbone."""
    from cvx2_backbone import ConvNeXtV2
    from cvx2_backbone.engine.device import _replace_sync_bn

    scope = base.split("::")[0]
    cfg = _config(tmp_path, f"""
        _base_ = '{base}'
        custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
        model = dict(backbone=dict(_delete_=True, type='cvx2_backbone.ConvNeXtV2', arch='atto'),
                     **{BASE_MODELS[base]!r})
    """)
    _replace_sync_bn(cfg.model)  # torch's SyncBatchNorm needs a GPU; the tools do the same on a CPU
    init_default_scope(scope)
    registry = __import__(f"{scope}.registry", fromlist=["MODELS"]).MODELS
    inherited = cfg.model.get("pretrained")
    if inherited:  # mmseg's bases name ResNet weights at the model level, which EncoderDecoder passes on
        with pytest.warns(FutureWarning, match="pretrained=.* is deprecated"):
            model = registry.build(cfg.model)
        assert model.backbone.init_cfg == dict(type="Pretrained", checkpoint=inherited)
    else:
        model = registry.build(cfg.model)
    assert isinstance(model.backbone, ConvNeXtV2)

    torch.manual_seed(0)
    model.eval()
    if scope == "mmdet":
        from mmdet.testing import demo_mm_inputs
        packed = demo_mm_inputs(1, [[3, 96, 128]], num_items=[2], num_classes=80, with_mask=True)
        with torch.no_grad():
            results = model(**model.data_preprocessor(packed, False), mode="predict")
        predictions = results[0].pred_instances
        assert predictions.bboxes.shape[-1] == 4 and len(predictions.bboxes) == len(predictions.scores)
        assert ("masks" in predictions) == ("mask" in base)
    else:
        from mmseg.structures import SegDataSample
        meta = dict(img_shape=(96, 128), pad_shape=(96, 128), ori_shape=(96, 128))
        data = dict(inputs=[torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)],
                    data_samples=[SegDataSample(metainfo=meta)])
        with torch.no_grad():
            results = model(**model.data_preprocessor(data, False), mode="predict")
        assert results[0].pred_sem_seg.data.shape == (1, 96, 128)
        assert results[0].seg_logits.data.shape == (cfg.model.decode_head.num_classes, 96, 128)


def test_pretrained_argument_follows_mmdet_rules():
    from cvx2_backbone import ConvNeXt

    with pytest.warns(FutureWarning, match="init_cfg=dict"):
        model = ConvNeXt(arch="atto", pretrained="weights.pth")
    assert model.init_cfg == dict(type="Pretrained", checkpoint="weights.pth")
    with pytest.raises(ValueError, match="both given"):
        ConvNeXt(arch="atto", pretrained="weights.pth", init_cfg=dict(type="Pretrained", checkpoint="other.pth"))
    with pytest.raises(TypeError, match="pretrained must be"):
        ConvNeXt(arch="atto", pretrained=3)
    assert ConvNeXt(arch="atto", pretrained=None).init_cfg is None


def test_package_bases_resolve_whatever_distribution_provides_the_package(tmp_path, monkeypatch):
    """The forks' situation on any stack: mmengine's table names a distribution that is not installed
    (onedl-mmsegmentation is installed, the table says mmsegmentation). mmengine alone then fails; our config
    loading resolves the base through the distribution that provides the module, and leaves the table as it was."""
    import mmengine.config.utils as config_utils
    from mmengine.config import Config

    from cvx2_backbone.engine.config import ConfigError, host_packages_by_import_name

    monkeypatch.setitem(config_utils.MODULE2PACKAGE, "mmseg", "renamed-mmsegmentation")
    path = tmp_path / "seg.py"
    path.write_text("_base_ = 'mmseg::_base_/models/upernet_r50.py'\n")
    with pytest.raises(ModuleNotFoundError, match="renamed-mmsegmentation is not installed"):
        Config.fromfile(str(path))
    assert read_config(path).model.type == "EncoderDecoder"
    assert config_utils.MODULE2PACKAGE["mmseg"] == "renamed-mmsegmentation"
    with host_packages_by_import_name() as changed:
        assert changed["mmseg"] in {"mmsegmentation", "onedl-mmsegmentation"}
        assert "mmdet" not in changed  # its distribution is found as named

    path.write_text("_base_ = 'mmseg::_base_/models/no_such_model.py'\n")
    with pytest.raises(ConfigError, match="no_such_model"):
        read_config(path)
