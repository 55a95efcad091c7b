"""The generic builder: layer order per norm, heads, shape checks."""
import pytest
import torch
from torch import nn

import ablate
from ablate.errors import ConfigError
from ablate.kernels import Dropout


def first_block_types(norm):
    model = ablate.build_model(ablate.compose(["model=narrow", f"norm={norm}", "model.dropout=0.1"]))
    return [type(layer) for layer in model[0]]


def test_norm_order_changes_the_layer_order():
    assert first_block_types("bn_before_relu") == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, Dropout]
    assert first_block_types("bn_after_relu") == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, Dropout]
    assert first_block_types("none") == [nn.Conv2d, nn.ReLU, Dropout]


def test_the_head_has_no_norm_and_outputs_logits():
    for step in range(1, 8):
        model = ablate.build_model(ablate.compose([f"step={step}"]))
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model[-3:])
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_convs_have_no_bias():
    model = ablate.build_model(ablate.compose(["step=7"]))
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_linear_head():
    cfg = ablate.compose(["model=deep", "model.head.type=linear"])
    assert ablate.build_model(cfg)(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_a_model_that_shrinks_below_one_pixel_is_refused():
    cfg = ablate.compose(["model=deep", "model.blocks=[pool,pool,pool,pool,pool]"])
    with pytest.raises(ConfigError, match="below 1x1"):
        ablate.build_model(cfg)


def test_a_head_that_does_not_fit_the_feature_map_is_refused():
    with pytest.raises(ConfigError, match=r"model\.head\.kernel=3"):
        ablate.build_model(ablate.compose(["model=base", "model.head.kernel=5"]))


def test_block_models_take_their_shape_from_the_data():
    """Nothing assumes 1x28x28 or 10 classes: the same block list builds for 3x32x32
    images with 100 classes."""
    cfg = ablate.compose(["model=deep", "data.channels=3", "data.height=32", "data.width=32",
                          "data.num_classes=100"])
    net = ablate.build_model(cfg)
    assert net[0][0].in_channels == 3 and net(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_a_block_model_needs_the_data_shape():
    cfg = ablate.compose(["data.channels=null"])
    with pytest.raises(ConfigError, match="not known yet"):
        ablate.build_model(cfg)
