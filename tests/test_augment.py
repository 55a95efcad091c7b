"""Batched augmentation against torchvision's per-image transforms."""
import pytest
import torch
import torchvision.transforms.functional as TF
from omegaconf import OmegaConf
from torchvision.transforms import InterpolationMode

from ablate.augment import Augment, crop, erase, flip, rotate


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
    aug = Augment(cfg, mean=[0.5], std=[0.25])
    out = aug(torch.full((8, 1, 28, 28), 2.0))
    # Corners rotate out of the image and get the background: (0 - 0.5) / 0.25 = -2.
    assert set(out.unique().tolist()) <= {2.0, -2.0}


def test_batched_crop_is_torchvisions_pad_then_crop_on_colour_images():
    """RandomCrop(32, padding=4) on raw pixels, then Normalize, equals our crop of the
    normalised batch with the fill mapped per channel: exactly, window by window."""
    torch.manual_seed(0)
    raw = torch.rand(6, 3, 32, 32)
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    norm = (raw - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    tops, lefts = torch.tensor([0, 8, 4, 1, 7, 3]), torch.tensor([8, 0, 4, 6, 2, 5])
    fill = ((0.0 - mean) / std).view(1, 3, 1, 1)
    ours = crop(norm, tops, lefts, 4, fill)
    for i in range(6):
        theirs = TF.crop(TF.pad(raw[i], [4], fill=0.0), int(tops[i]), int(lefts[i]), 32, 32)
        theirs = TF.normalize(theirs, mean.tolist(), std.tolist())
        assert torch.allclose(ours[i], theirs, atol=1e-6), i


def test_batched_flip_is_torchvisions_hflip_where_drawn():
    x = torch.rand(4, 3, 8, 8)
    out = flip(x, torch.tensor([True, False, True, False]))
    assert torch.equal(out[0], TF.hflip(x[0])) and torch.equal(out[2], TF.hflip(x[2]))
    assert torch.equal(out[1], x[1]) and torch.equal(out[3], x[3])


def test_crop_and_flip_draw_per_sample_parameters_uniformly():
    """Through the config: every offset in [0, 2 * padding] about equally often, half the
    images flipped, each image its own draw."""
    cfg = OmegaConf.create({"crop": {"padding": 2, "fill": 0.0}, "flip": None})
    aug = Augment(cfg, mean=[0.0], std=[1.0])
    torch.manual_seed(0)
    x = torch.zeros(5000, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # a dot in the middle: where it lands gives the offset
    out = aug(x)
    where = out.flatten(1).argmax(1)
    rows, cols = where // 9, where % 9
    counts = torch.bincount((rows - 4 + 2) * 5 + (cols - 4 + 2), minlength=25).float()
    assert counts.min() > 0.75 * 200 and counts.max() < 1.25 * 200  # 25 offsets, 200 each expected
    flips = Augment(OmegaConf.create({"crop": None, "flip": {"p": 0.5}}), mean=[0.0], std=[1.0])
    x = torch.zeros(4000, 1, 4, 4)
    x[:, :, :, 0] = 1.0
    flipped = flips(x)[:, 0, 0, 3] == 1.0
    assert 0.46 < flipped.float().mean() < 0.54


def test_fill_is_mapped_per_channel():
    cfg = OmegaConf.create({"crop": {"padding": 3, "fill": 0.0}, "flip": {"p": 1.0}})
    aug = Augment(cfg, mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 1.0])
    torch.manual_seed(3)
    out = aug(torch.full((64, 3, 6, 6), 9.0))
    for ch, background in enumerate((-1.0, -1.0, 0.0)):  # (0 - mean) / std
        assert set(out[:, ch].unique().tolist()) <= {9.0, background}
    assert (out[:, 0] == -1.0).any()
