"""The license of a checkpoint's weights, as its source states it: never inferred from the code's license.

Weights often come under other terms than the code that runs them: the official ConvNeXt V2 code is MIT while its
released weights are CC-BY-NC 4.0; DINOv3's weights come under the DINOv3 License and EUPE's under
the FAIR Noncommercial Research License. :func:`license_of` reads, first found wins:

1. what this project's ``cvx2 convert`` recorded in a file it wrote (``license`` metadata);
2. a Hugging Face model card's ``license:`` (``license_name:`` when it says ``other``): the README.md next to the
   weights (a ``save_pretrained`` folder, a hub snapshot) or, for ``hf://`` references, the repo's;
3. timm's ``pretrained_cfg['license']`` of a ``timm/<model>.<tag>`` reference, or of a timm hub folder's config.json;
4. the layout, where every published checkpoint of it comes under one license (DINOv3, EUPE);
5. the official ConvNeXt / ConvNeXt V2 release file names (V2 weights: CC-BY-NC 4.0; V1: MIT);

and says ``unknown`` otherwise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from cvx2_backbone.weights.errors import HubUnavailableError
from cvx2_backbone.weights.hub import current_downloader

# identifier (timm / Hugging Face spelling) -> display name, terms URL, noncommercial
KNOWN: dict[str, tuple[str, str, bool]] = {
    "dinov3-license": ("DINOv3 License", "https://ai.meta.com/resources/models-and-libraries/dinov3-license/", False),
    "fair-noncommercial-research-license": (
        "FAIR Noncommercial Research License", "https://github.com/facebookresearch/EUPE/blob/main/LICENSE.md", True),
    "cc-by-nc-4.0": ("CC-BY-NC-4.0", "https://creativecommons.org/licenses/by-nc/4.0/", True),
}
METADATA_KEY = "license"
_OFFICIAL_V2_FILE = re.compile(r"^convnextv2_\w+?_(1k|22k)_\d+_(ema|fcmae)\.pt$")
_OFFICIAL_V1_FILE = re.compile(r"^convnext_\w+?_(1k|22k)_\d+(_ema)?\.pth$")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)
_CARD_FIELD = re.compile(r"^(license|license_name):\s*['\"]?([^'\"\n#]+?)['\"]?\s*$", re.MULTILINE)


@dataclass(frozen=True)
class WeightsLicense:
    """A license of a checkpoint's weights and where that was read."""
    identifier: str  # timm / Hugging Face spelling: 'dinov3-license', 'cc-by-nc-4.0', 'apache-2.0', ... or 'unknown'
    evidence: str  # where it was read, e.g. "timm's pretrained_cfg of convnext_tiny.dinov3_lvd1689m"

    @property
    def name(self) -> str:
        """Display name ('DINOv3 License'); the identifier itself for licenses not in ``KNOWN``."""
        return KNOWN[self.identifier][0] if self.identifier in KNOWN else self.identifier

    @property
    def url(self) -> str:
        """Where the terms are, for the licenses in ``KNOWN``."""
        return KNOWN[self.identifier][1] if self.identifier in KNOWN else ""

    @property
    def noncommercial(self) -> bool:
        """True for the noncommercial licenses in ``KNOWN``."""
        return self.identifier in KNOWN and KNOWN[self.identifier][2]

    @property
    def known(self) -> bool:
        """False when no source stated a license."""
        return self.identifier != "unknown"

    def text(self) -> str:
        """The license, where it was read and, for a noncommercial one, a warning."""
        if not self.known:
            return ("unknown (the source states no license for these weights; the code's license does not cover "
                    "them: check where they come from)")
        terms = f", {self.url}" if self.url else ""
        warning = "; NONCOMMERCIAL: no commercial use" if self.noncommercial else ""
        return f"{self.name} ({self.evidence}{terms}){warning}"

    def line(self) -> str:
        """One line as the load report, ``cvx2 info`` and ``cvx2 convert`` print it."""
        return f"license: {self.text()}"

    def card_fields(self) -> dict[str, str]:
        """The model card front matter that states this license (Hugging Face spelling)."""
        if not self.known:
            return {}
        standard = {"cc-by-nc-4.0", "apache-2.0", "mit", "bsd-3-clause", "cc-by-4.0"}
        if self.identifier in standard:
            return {"license": self.identifier}
        fields = {"license": "other", "license_name": self.identifier}
        if self.url:
            fields["license_link"] = self.url
        return fields


UNKNOWN = WeightsLicense("unknown", "the source states none")


def from_metadata(metadata: Mapping[str, Any] | None) -> WeightsLicense | None:
    """What a file written by ``cvx2 convert`` records (safetensors metadata or the torch file's ``meta``)."""
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get(METADATA_KEY), str):
        return None
    evidence = str(metadata.get("license_evidence") or "no evidence recorded")
    suffix = " (recorded by cvx2 convert)"
    return WeightsLicense(metadata[METADATA_KEY], evidence if evidence.endswith(suffix) else evidence + suffix)


def from_model_card(path: Path) -> WeightsLicense | None:
    """The ``license:`` of a Hugging Face model card (README.md front matter), if it states one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    front = _FRONT_MATTER.match(text)
    if front is None:
        return None
    fields = {m.group(1): m.group(2).strip() for m in _CARD_FIELD.finditer(front.group(1))}
    identifier = fields.get("license")
    if identifier == "other" and fields.get("license_name"):
        identifier = fields["license_name"]
    return WeightsLicense(identifier.lower(), f"model card {path.name}") if identifier else None


def timm_name(reference: str, config: Mapping[str, Any] | None) -> str | None:
    """timm's ``<model>.<tag>`` of a ``timm/...`` or ``hf://timm/...`` reference, or of a timm hub config.json."""
    for prefix in ("timm/", "hf://timm/"):
        if reference.startswith(prefix):
            return reference[len(prefix):].strip("/").split("@")[0]
    if config and isinstance(config.get("pretrained_cfg"), Mapping) and config.get("architecture"):
        tag = config["pretrained_cfg"].get("tag")
        return f"{config['architecture']}.{tag}" if tag else str(config["architecture"])
    return None


def from_timm(name: str | None, config: Mapping[str, Any] | None) -> WeightsLicense | None:
    """timm's ``pretrained_cfg['license']``: the hub config.json's, else timm's own registry entry for ``name``."""
    cfg = config.get("pretrained_cfg") if config else None
    if isinstance(cfg, Mapping) and cfg.get("license"):
        return WeightsLicense(str(cfg["license"]).lower(), f"timm's pretrained_cfg in config.json of {name}")
    if not name:
        return None
    try:
        from timm.models import get_pretrained_cfg
        registered = get_pretrained_cfg(name, allow_unregistered=False)
    except (RuntimeError, ValueError, KeyError):
        return None
    license_id = getattr(registered, "license", None) if registered is not None else None
    return WeightsLicense(str(license_id).lower(), f"timm's pretrained_cfg of {name}") if license_id else None


def from_layout(layout: Any) -> WeightsLicense | None:
    """The license every published checkpoint of the layout comes under (DINOv3, EUPE), if it has one."""
    identifier = getattr(layout, "LICENSE_NAME", None)
    if identifier is None:
        return None
    return WeightsLicense(identifier, f"{layout.DESCRIPTION}: the weights published in this layout come under it")


def from_official_release(reference: str, files: tuple[Path, ...]) -> WeightsLicense | None:
    """The official release files, by name: ConvNeXt V2's weights are CC-BY-NC 4.0 while its code is MIT (its README:
    "MIT license except ImageNet pre-trained and fine-tuned models which are licensed under a CC-BY-NC"); the V1
    repository releases code and weights under MIT."""
    names = [p.name for p in files] + [Path(reference).name]
    if any(_OFFICIAL_V2_FILE.match(n) for n in names):
        return WeightsLicense("cc-by-nc-4.0", "the official ConvNeXt V2 release weights (facebookresearch/ConvNeXt-V2: "
                                              "the code is MIT, the weights are not)")
    if any(_OFFICIAL_V1_FILE.match(n) for n in names):
        return WeightsLicense("mit", "the official ConvNeXt V1 release weights (facebookresearch/ConvNeXt releases "
                                     "code and weights under MIT)")
    return None


def _hub_card(reference: str) -> Path | None:
    """The README.md of an ``hf://`` reference's repo, through the current downloader (None when unavailable)."""
    if not reference.startswith("hf://"):
        return None

    repo_id, _, revision = reference[len("hf://"):].strip("/").partition("@")
    try:
        return Path(current_downloader().hf_file(repo_id, "README.md", revision or None))
    except (FileNotFoundError, HubUnavailableError, ValueError, OSError):
        return None


def license_of(reference: str, files: tuple[Path, ...] = (), config: Mapping[str, Any] | None = None,
               metadata: Mapping[str, Any] | None = None, layout: Any = None) -> WeightsLicense:
    """The license of the weights at ``reference`` (see the module docstring for the order); ``UNKNOWN`` if none."""
    found = from_metadata(metadata)
    if found is None:
        cards = [f.parent / "README.md" for f in files[:1]]
        hub = _hub_card(reference)
        cards += [hub] if hub is not None else []
        found = next((card for card in map(from_model_card, cards) if card is not None), None)
    if found is None:
        found = from_timm(timm_name(reference, config), config)
    if found is None and layout is not None:
        found = from_layout(layout)
    if found is None:
        found = from_official_release(reference, files)
    return found or UNKNOWN
