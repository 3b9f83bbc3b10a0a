"""The three MAC counters against each other, on every family: where they agree and exactly how they differ.

What each counts beyond convolutions and linear layers (kdnas/costs/_counts.py, docs/costs.md):

- flop_counter: nothing. MACs = conv + linear.
- fvcore: 2 per BatchNorm element (affine, eval mode), 1 per input element of average pooling.
- thop: 4 per BatchNorm element (2 to normalise, doubled for the affine part), (kernel + 1) per output
  element of average pooling (kernel additions and one division).

None counts ReLU/ReLU6, max pooling, residual adds, padding or biases. The expected values below come from
forward hooks on a real model, not from any counter.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdnas.costs import COUNTERS, count
from kdnas.models import FAMILIES, ArchSpec, build, make_spec

SPECS = [
    {"family": "resnet_cifar", "depth": 8, "width": 0.25},  # residual adds and zero padding in the shortcuts
    {"family": "resnet_cifar", "depth": 14, "width": 0.5},
    {"family": "plain_cnn", "channels": [4, 8, 8], "pool_every": 1, "hidden": 16},  # max pooling, hidden FC
    {"family": "mobilenetv2", "width": 0.25, "blocks": [1, 2]},  # depthwise convs, ReLU6
    {"family": "mobilenetv2", "width": 0.5, "expansion": 4, "kernel_size": 5, "blocks": [1, 1, 2]},
]
SHAPE = (3, 12, 12)


def by_hand(spec: ArchSpec, shape: tuple[int, int, int], classes: int) -> dict[str, int]:
    """Conv and linear MACs, BatchNorm output elements and average-pool elements, from forward hooks."""
    model = build(spec, shape, classes).eval()
    tally = {"conv_linear": 0, "bn": 0, "avgpool_in": 0, "avgpool_out_x_kernel1": 0}

    def hook(m: nn.Module, inputs, out) -> None:
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            tally["conv_linear"] += out.numel() * k
        elif isinstance(m, nn.Linear):
            tally["conv_linear"] += out.numel() * m.in_features
        elif isinstance(m, nn.BatchNorm2d):
            tally["bn"] += out.numel()
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            kernel = inputs[0].shape[-1] * inputs[0].shape[-2] // (out.shape[-1] * out.shape[-2])
            tally["avgpool_in"] += inputs[0].numel()
            tally["avgpool_out_x_kernel1"] += out.numel() * (kernel + 1)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return tally


def test_every_family_is_cross_checked() -> None:
    assert {s["family"] for s in SPECS} == set(FAMILIES.names())
    assert COUNTERS.names() == ["flop_counter", "fvcore", "thop"]


@pytest.mark.parametrize("raw", SPECS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_counters_agree_on_convs_and_linears_and_differ_as_documented(raw: dict) -> None:
    spec = make_spec(raw)
    hand = by_hand(spec, SHAPE, 10)
    counts = {name: count(spec, SHAPE, 10, name) for name in COUNTERS.names()}
    n_params = sum(p.numel() for p in build(spec, SHAPE, 10).parameters())
    assert {c.params for c in counts.values()} == {n_params}, "params do not depend on the counter"
    assert counts["flop_counter"].macs == hand["conv_linear"]
    assert counts["fvcore"].macs == hand["conv_linear"] + 2 * hand["bn"] + hand["avgpool_in"]
    assert counts["thop"].macs == hand["conv_linear"] + 4 * hand["bn"] + hand["avgpool_out_x_kernel1"]
    assert all(c.flops == 2 * c.macs for c in counts.values())


@pytest.mark.parametrize("raw", SPECS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
@pytest.mark.parametrize("counter", ["flop_counter", "thop"])
def test_meta_and_cpu_counting_give_the_same_figures(raw: dict, counter: str) -> None:
    # count() picks uninitialised CPU tensors for small networks on small inputs and the meta device
    # otherwise (kdnas/costs/_counts.py): the figures must not depend on the choice.
    spec = make_spec(raw)
    for shape in (SHAPE, (3, 80, 80)):  # count() picks the CPU for the first, meta for the second
        assert count(spec, shape, 10, counter, device="meta") == count(spec, shape, 10, counter, device="cpu") \
            == count(spec, shape, 10, counter)


def test_counting_leaves_the_random_state_alone() -> None:
    # fvcore builds real weights; a trial that counts before it trains must train the same network.
    spec = make_spec(SPECS[0])
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for name in COUNTERS.names():
        count(spec, SHAPE, 10, name)
    torch.testing.assert_close(torch.rand(3), expected)


def test_unknown_counter_lists_the_valid_ones() -> None:
    from kdnas.core import KdnasError

    with pytest.raises(KdnasError, match="unknown MAC counter 'ptflops'; valid names: flop_counter, fvcore, thop"):
        count(make_spec(SPECS[0]), SHAPE, 10, "ptflops")
