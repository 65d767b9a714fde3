"""What every writer shares: the result type, tensors shaped as the target stores them, and file writing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from torch import Tensor, nn

from cvx2_backbone.weights.errors import CheckpointError
from cvx2_backbone.utils.files import atomic_folder, atomic_path

if TYPE_CHECKING:
    from cvx2_backbone.weights.arch import ArchSpec
    from cvx2_backbone.weights.license import WeightsLicense

SAFETENSORS_SUFFIX = ".safetensors"


@dataclass
class Written:
    """What a writer wrote: where, how many tensors, what it left out or filled in, and how to load it."""
    path: Path
    format: str
    tensors: int
    left_out: list[str] = field(default_factory=list)  # checkpoint parts the target has no place for
    filled_in: list[str] = field(default_factory=list)  # target tensors the checkpoint lacks, written at their init
    usage: str = ""
    notes: list[str] = field(default_factory=list)


def activation_notes(arch: ArchSpec) -> list[str]:
    """A note when the target needs the activation and the checkpoint does not record it (GELU is then written)."""
    if arch.hidden_act is not None:
        return []
    return ["the checkpoint does not record its activation: written as GELU, as in every published ConvNeXt "
            "(export a model of another activation with save_checkpoint(Checkpoint.of_model(backbone), ...))"]


def modules_of(keys: list[str]) -> str:
    """``['norm0.weight', 'norm0.bias', 'norm1.weight']`` -> ``'norm0, norm1'``."""
    return ", ".join(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))


def fit_shapes(tensors: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each tensor reshaped to the target's shape for the same key (GRN (C,) <-> (1, 1, 1, C), Linear <-> 1x1 conv);
    other shapes are an error naming the key."""
    result = {}
    for key, value in tensors.items():
        shape = target[key].shape
        if value.shape != shape:
            if [d for d in value.shape if d != 1] != [d for d in shape if d != 1]:  # only singleton axes may differ
                raise CheckpointError(f"{key}: the checkpoint's {tuple(value.shape)} does not fit the target's "
                                      f"{tuple(shape)}")
            value = value.reshape(shape)
        result[key] = value.detach().contiguous().clone()
    return result


def fill_from(model: nn.Module, tensors: dict[str, Tensor]) -> list[str]:
    """Add the target model's own (freshly initialised) LayerNorm tensors the checkpoint lacks; return their keys.

    Only LayerNorms qualify (their init, weight 1 and bias 0, is no made-up value); anything else missing is an error.
    """
    target = model.state_dict()
    missing = [k for k in target if k not in tensors]
    not_norms = [k for k in missing if not isinstance(model.get_submodule(k.rsplit(".", 1)[0]), nn.LayerNorm)]
    if not_norms:
        raise CheckpointError(f"the checkpoint lacks {', '.join(not_norms[:6])}, which the target layout needs")
    for key in missing:
        tensors[key] = target[key].detach().clone()
    return missing


def tensor_bytes(tensors: Mapping[str, Tensor]) -> int:
    """What the tensors take on disk (the file adds a little)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def save_tensors(tensors: Mapping[str, Tensor], path: Path, metadata: Mapping[str, str] | None = None,
                 container: str | None = None) -> None:
    """``.safetensors`` as such, any other suffix as ``torch.save`` (``{container: tensors, 'meta': metadata}`` if a
    container is given; a flat state dict has no place for metadata)."""
    with atomic_path(path, needed=tensor_bytes(tensors)) as tmp:  # an interrupt never leaves half a file
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import save_file
            save_file(dict(tensors), str(tmp), metadata=dict(metadata or {}))
        elif container:
            torch.save({container: dict(tensors), **({"meta": dict(metadata)} if metadata else {})}, tmp)
        else:
            torch.save(dict(tensors), tmp)


def license_metadata(weights_license: WeightsLicense) -> dict[str, str]:
    """The weights' license as string metadata (read back by ``license.from_metadata``)."""
    return {"license": weights_license.identifier, "license_evidence": weights_license.evidence}


def model_card(weights_license: WeightsLicense, source: str, usage: str) -> str:
    """A README.md model card whose front matter states the weights' license (Hugging Face's ``license:`` field)."""
    fields = weights_license.card_fields() or {"license": "unknown"}
    front = "".join(f"{key}: {value}\n" for key, value in fields.items())
    body = (f"Converted by cvx2_backbone from `{source}`.\n\n{weights_license.line()}\n\n"
            f"The license of the code that runs these weights does not change the weights' license.\n\n"
            f"Load with `{usage}`.\n")
    return f"---\n{front}---\n\n{body}"



def save_pretrained(model: nn.Module, path: Path, card: str | None = None) -> None:
    """transformers' ``save_pretrained`` (and the model ``card`` as README.md) into a folder that appears whole at
    ``path``, without progress bars. Into an existing folder (``cvx2 convert --force``), only the files written here
    are replaced: the folder's other files stay, and the old folder stays whole until the new one is
    (:func:`atomic_folder`)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with atomic_folder(path, keep_others=True, needed=tensor_bytes(model.state_dict())) as tmp:
            model.save_pretrained(tmp)
            if card is not None:
                (tmp / "README.md").write_text(card, encoding="utf-8")
    finally:
        if shown:
            hf_logging.enable_progress_bar()
