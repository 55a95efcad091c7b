"""Batched augmentation against torchvision's per-image transforms."""
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from ablate.augment import Augment, erase, rotate
from omegaconf import OmegaConf


@pytest.mark.parametrize("angle", [-7.0, -3.5, 0.0, 2.0, 7.0, 30.0, 90.0])
@pytest.mark.parametrize("fill", [0.0, -0.42])
def test_batched_rotation_matches_torchvision(angle, fill):
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    ours = rotate(x, torch.full((4,), angle), fill=fill, mode="nearest")
    theirs = TF.rotate(x, angle, interpolation=InterpolationMode.NEAREST, fill=[fill])
    # Nearest sampling: a grid point that lands within float error of a pixel
    # border may pick the neighbour. Allow a handful of such pixels per image.
    mismatched = ((ours - theirs).abs() > 1e-5).float().mean().item()  # (x - fill) + fill rounds
    assert mismatched < 0.005, f"{mismatched:.2%} of pixels differ"


def test_each_sample_gets_its_own_angle():
    x = torch.zeros(2, 1, 28, 28)
    x[:, :, 13:15, 2:26] = 1.0  # a horizontal bar
    out = rotate(x, torch.tensor([0.0, 90.0]))
    assert torch.equal(out[0], x[0])
    assert out[1, 0, 2:26, 13:15].sum() > 40 and out[1, 0, 13:15, 2:10].sum() == 0


def test_bilinear_rotation_is_close_to_torchvision():
    x = torch.rand(3, 1, 28, 28)
    ours = rotate(x, torch.full((3,), 5.0), mode="bilinear")
    theirs = TF.rotate(x, 5.0, interpolation=InterpolationMode.BILINEAR)
    assert torch.allclose(ours[..., 2:-2, 2:-2], theirs[..., 2:-2, 2:-2], atol=1e-5)


def test_erasing_respects_probability_scale_and_value():
    torch.manual_seed(0)
    x = torch.ones(2000, 1, 28, 28)
    out = erase(x, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=-1.0)
    erased = (out == -1.0).flatten(1).float().mean(1)
    hit = erased > 0
    assert 0.45 < hit.float().mean() < 0.55
    assert erased[hit].min() >= 0.01 and erased[hit].max() <= 0.34
    assert torch.all((out == 1.0) | (out == -1.0))


def test_augment_config_maps_pixel_fill_to_normalised_units():
    cfg = OmegaConf.create({"rotate": {"degrees": 90.0, "fill": 0.0, "interpolation": "nearest"},
                            "erase": None})
    aug = Augment(cfg, mean=0.5, std=0.25)
    out = aug(torch.full((8, 1, 28, 28), 2.0))
    # Corners rotate out of the image and get the background: (0 - 0.5) / 0.25 = -2.
    assert set(out.unique().tolist()) <= {2.0, -2.0}
