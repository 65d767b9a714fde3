"""Image reading (cvx2_backbone.extraction.images): pictures of more than 8 bits per sample read as their 8-bit copy."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


def test_16_bit_images_read_as_their_8_bit_copy(tmp_path):
    """A 16-bit gradient (I;16 PNG) gives exactly the pixels of its 8-bit copy, not a white picture."""
    import numpy as np
    from PIL import Image

    from cvx2_backbone.extraction.images import read_image, to_rgb_tensor

    gradient = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (64, 1))
    Image.fromarray(gradient).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    Image.fromarray(np.rint(gradient / 257).astype(np.uint8)).save(tmp_path / "copy8.png")
    deep, copy = np.asarray(read_image(tmp_path / "deep.png")), np.asarray(read_image(tmp_path / "copy8.png"))
    assert deep.dtype == np.uint8 and deep.shape == (64, 256, 3)
    np.testing.assert_array_equal(deep, copy)
    assert (deep == 255).mean() < 0.01  # convert("RGB") made 99.6% of it white
    assert torch.equal(to_rgb_tensor(Image.open(tmp_path / "deep.png")), to_rgb_tensor(tmp_path / "copy8.png"))
    floats = Image.fromarray((gradient / 65535).astype(np.float32))
    assert np.abs(np.asarray(read_image_from(floats, tmp_path), dtype=int) - copy.astype(int)).max() <= 1
    with pytest.raises(ValueError, match=r"samples span .* outside 0..1"):
        to_rgb_tensor(Image.fromarray(np.full((4, 4), 7.0, np.float32)))


def read_image_from(image, folder: Path):
    from cvx2_backbone.extraction.images import read_image

    image.save(folder / "float.tiff")
    return read_image(folder / "float.tiff")
