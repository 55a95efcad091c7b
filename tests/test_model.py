"""The generic builder: layer order per norm, heads, shape checks."""
import pytest
import torch
from torch import nn

import ablate
from ablate.config import ConfigError


def first_block_types(norm):
    model = ablate.build_model(ablate.compose(["model=narrow", f"norm={norm}", "model.dropout=0.1"]))
    return [type(layer) for layer in model[0]]


def test_norm_order_changes_the_layer_order():
    assert first_block_types("bn_before_relu") == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout]
    assert first_block_types("bn_after_relu") == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Dropout]
    assert first_block_types("none") == [nn.Conv2d, nn.ReLU, nn.Dropout]


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
