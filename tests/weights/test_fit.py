"""check_fit: whether a checkpoint fits a backbone or a whole detector, decided before anything loads."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cvx2_backbone.weights import ArchMismatchError, ModelMismatchError, check_fit
from tests.helpers.weights import small_backbone


class Detector(nn.Module):
    """A detector in miniature: a ConvNeXt backbone, a neck and a head."""

    def __init__(self, classes: int = 3, **backbone) -> None:
        super().__init__()
        self.backbone = small_backbone(**backbone)
        self.neck = nn.Conv2d(64, 8, 1)
        self.head = nn.Linear(8, classes)


def test_a_training_checkpoint_of_the_same_model_fits(tmp_path):
    model = Detector()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from DDP
    grn = "module.backbone.stages.0.0.grn.gamma"
    state[grn] = state[grn].reshape(1, 1, 1, -1)  # the official (1, 1, 1, C) storage loads too
    path = tmp_path / "epoch_1.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": state, "optimizer": {}}, path)
    report = check_fit(model, path)
    assert report.complete and "a model with a ConvNeXt V2 with depths [1, 1, 2, 1]" in report.looks_like
    assert "and head, neck" in report.looks_like


def test_other_heads_are_an_error_unless_allow_partial():
    trained = Detector(classes=5).state_dict()
    with pytest.raises(ModelMismatchError) as info:
        check_fit(Detector(classes=3), {"state_dict": trained})
    message = str(info.value)
    assert "2 tensors differ in shape (head.weight: file (5, 8) vs model (3, 8), head.bias: file (5,) vs model (3,))" \
        in message and "the model is Detector with a ConvNeXt V2 with depths [1, 1, 2, 1]" in message
    assert "--allow-partial" in message
    report = check_fit(Detector(classes=3), {"state_dict": trained}, allow_partial=True)
    assert not report.complete and report.mismatched[0].startswith("head.weight")


def test_missing_and_unexpected_tensors_name_their_modules():
    state = {k: v for k, v in Detector().state_dict().items() if not k.startswith("neck.")}
    state["extra.weight"] = torch.zeros(2)
    with pytest.raises(ModelMismatchError, match=r"2 of the model's tensors are missing \(neck.weight, neck.bias\); "
                                                 r"1 tensors in the file are not in the model \(extra.weight\)"):
        check_fit(Detector(), state)


def test_a_backbone_is_checked_as_init_cfg_loads_it():
    source = small_backbone(v2=False)
    assert check_fit(small_backbone(v2=False, seed=1), source.state_dict()).complete
    with pytest.raises(ArchMismatchError, match="the checkpoint is ConvNeXt V1 .* but the backbone uses GRN"):
        check_fit(small_backbone(v2=True), source.state_dict())
