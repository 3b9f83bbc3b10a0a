"""plain_cnn and mobilenetv2: hand counts of parameters and MACs, stage layout, odd inputs, bad specs.

The contract every family meets (any input shape, gradients everywhere, JSON round trip) is in test_models.py.
"""

from __future__ import annotations

import pytest
import torch

from kdnas.core import ConfigError
from kdnas.costs import count
from kdnas.models import build, make_spec

PLAIN = {"family": "plain_cnn", "channels": [4, 6], "pool_every": 1, "hidden": 5, "kernel_size": 5}
# width 0.25 scales stem/stage channels 32/16/24 to 8/4/6 (below 8: rounded to integers, not to multiples
# of 8) and the final 1x1 conv's 4 * 24 to 24.
MOBILE = {"family": "mobilenetv2", "width": 0.25, "expansion": 2, "blocks": [1, 2], "kernel_size": 3}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bn(c: int) -> int:
    return 2 * c  # weight and bias; running statistics are buffers


def test_plain_cnn_hand_param_count() -> None:
    expected = (
        (2 * 4 * 25 + bn(4))  # conv 5x5, 2 -> 4 channels, no bias (BN follows)
        + (4 * 6 * 25 + bn(6))  # conv 5x5, 4 -> 6
        + (6 * 5 + 5)  # hidden FC on the pooled 6 channels
        + (5 * 3 + 3)  # classifier
    )
    assert n_params(build(make_spec(PLAIN), (2, 9, 9), 3)) == expected == 873


def test_mobilenetv2_hand_param_count() -> None:
    def block(c_in: int, c_out: int, t: int, k: int = 3) -> int:
        hidden = c_in * t
        expand = c_in * hidden + bn(hidden) if t != 1 else 0
        return expand + (hidden * k * k + bn(hidden)) + (hidden * c_out + bn(c_out))

    expected = (
        (3 * 8 * 9 + bn(8))  # stem: 3x3 conv to 32 * 0.25 = 8 channels
        + block(8, 4, t=1)  # stage 1: t=1 as in Table 2, so no expansion conv
        + block(4, 6, t=2) + block(6, 6, t=2)  # stage 2; the second block's residual has no parameters
        + (6 * 24 + bn(24))  # final 1x1 conv
        + (24 * 10 + 10)  # classifier
    )
    assert n_params(build(make_spec(MOBILE), (3, 32, 32), 10)) == expected == 1_310


def test_mobilenetv2_all_stages_match_the_reference_param_count() -> None:
    # Table 2 in full at width 1 (3.4M in the paper's Table 4) is torchvision's mobilenet_v2: 3,504,872
    # parameters with 1000 classes. Strides do not change parameters, so the CIFAR strides match too.
    spec = make_spec({"family": "mobilenetv2", "blocks": [1, 2, 3, 4, 3, 3, 1]})
    assert n_params(build(spec, (3, 224, 224), 1000)) == 3_504_872


def test_plain_cnn_hand_mac_count_pooling_stops_at_one_pixel() -> None:
    # 3x5 input: conv at 3x5; pool 2x2 -> 1x2; conv at 1x2; pool 1x2 (height already 1) -> 1x1; conv at 1x1,
    # and no pool after it. Each conv costs (output pixels) * c_in * c_out * k * k; the classifier c * classes.
    spec = make_spec({"family": "plain_cnn", "channels": [4, 6, 8], "pool_every": 1})
    expected = 15 * 1 * 4 * 9 + 2 * 4 * 6 * 9 + 1 * 6 * 8 * 9 + 8 * 7
    assert count(spec, (1, 3, 5), 7).macs == expected


def test_mobilenetv2_hand_mac_count() -> None:
    # 3x3 input; stages 1 and 2 keep stride 1, stage 3 strides to ceil(3 / 2) = 2. Widths at 0.25: stem 8,
    # stages 4, 6, 8, final 1x1 conv 4 * 32 * 0.25 = 32. A depthwise conv costs (output pixels) * channels * k * k.
    spec = make_spec({"family": "mobilenetv2", "width": 0.25, "expansion": 2, "blocks": [1, 1, 1]})
    expected = (
        9 * 3 * 8 * 9  # stem
        + 9 * 8 * 9 + 9 * 8 * 4  # stage 1: depthwise, projection
        + 9 * 4 * 8 + 9 * 8 * 9 + 9 * 8 * 6  # stage 2: expansion 4 -> 8, depthwise, projection
        + 9 * 6 * 12 + 4 * 12 * 9 + 4 * 12 * 8  # stage 3: expansion at 3x3, strided depthwise to 2x2, projection
        + 4 * 8 * 32  # final 1x1 conv
        + 32 * 5  # classifier
    )
    assert count(spec, (3, 3, 3), 5).macs == expected


def feature_sizes(spec, shape) -> dict[str, tuple[int, ...]]:
    model = build(spec, shape, 10)
    sizes: dict[str, tuple[int, ...]] = {}
    for name, m in model.feature_modules().items():
        m.register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, tuple(o.shape[1:])))
    model(torch.randn(2, *shape))
    return sizes


def test_plain_cnn_stages_end_at_each_pool() -> None:
    spec = make_spec({"family": "plain_cnn", "channels": [8, 8, 16, 16, 32, 32], "pool_every": 2})
    assert feature_sizes(spec, (3, 32, 32)) == {
        "stem": (8, 32, 32), "stage1": (8, 16, 16), "stage2": (16, 8, 8), "stage3": (32, 4, 4), "pool": (32,),
    }


def test_mobilenetv2_default_stages_end_at_8x8_on_cifar() -> None:
    sizes = feature_sizes(make_spec({"family": "mobilenetv2", "width": 0.25}), (3, 32, 32))
    assert {k: v[1:] for k, v in sizes.items()} == {
        "stem": (32, 32), "stage1": (32, 32), "stage2": (32, 32), "stage3": (16, 16), "stage4": (8, 8), "pool": (),
    }


def test_mobilenetv2_residual_is_the_identity_when_the_branch_is_zeroed() -> None:
    model = build(make_spec(MOBILE), (3, 8, 8), 10).eval()
    first, second = model.stages[1]  # stage 2: 4 -> 6 channels, then 6 -> 6
    for block in (first, second):
        torch.nn.init.zeros_(block.body[-1].weight)  # the last BN scales the branch to zero
    x4, x6 = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 8, 8)
    torch.testing.assert_close(second(x6), x6)
    assert first(x4).abs().max() == 0  # channels change, so no residual


@pytest.mark.parametrize("family", [PLAIN, MOBILE], ids=["plain_cnn", "mobilenetv2"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 9), (2, 5, 2)], ids=lambda s: "x".join(map(str, s)))
def test_degenerate_inputs_build_and_train(family, shape) -> None:
    model = build(make_spec(family), shape, 4)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 4)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "raw,key,message",
    [
        ({"family": "plain_cnn", "channels": []}, "channels", "`2 <= len(channels) <= 64` must hold"),
        ({"family": "plain_cnn", "channels": [8, 0]}, "channels[1]", "but got channels[1]=0"),
        ({"family": "plain_cnn", "pool_every": 0}, "pool_every", "but got pool_every=0"),
        ({"family": "plain_cnn", "hidden": -1}, "hidden", "but got hidden=-1"),
        ({"family": "plain_cnn", "kernel_size": 4}, "kernel_size", "`kernel_size in (3, 5)` must hold"),
        ({"family": "mobilenetv2", "width": 0}, "width", "`0 < width <= 64` must hold, but got width=0"),
        ({"family": "mobilenetv2", "blocks": [1] * 8}, "blocks", "but got len(blocks)=8"),
        ({"family": "mobilenetv2", "blocks": [2, 0]}, "blocks[1]", "`blocks[1] >= 1` must hold, but got blocks[1]=0"),
        ({"family": "mobilenetv2", "expansion": 0}, "expansion", "but got expansion=0"),
        ({"family": "mobilenetv2", "kernel_size": 7}, "kernel_size", "but got kernel_size=7"),
    ],
)
def test_bad_params_name_the_key(raw, key, message) -> None:
    with pytest.raises(ConfigError) as err:
        make_spec(raw)
    assert [p.key for p in err.value.problems] == [key]
    assert message in err.value.problems[0].message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        make_spec({"family": "plain_cnn", "channels": [8, 0], "pool_every": 0, "kernel_size": 4})
    assert sorted(p.key for p in err.value.problems) == ["channels[1]", "kernel_size", "pool_every"]
