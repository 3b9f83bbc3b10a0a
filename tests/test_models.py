"""Model families: a contract suite over every registered family, plus ResNet-specific hand counts."""

from __future__ import annotations

import json

import pytest
import torch

from kdnas.core import ConfigError
from kdnas.data import TensorSource
from kdnas.models import FAMILIES, ArchSpec, build, make_spec
from kdnas.train import predict

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 7, 7)]


def small_spec(family: str) -> ArchSpec:
    """The family's defaults, shrunk where a width knob exists so the suite stays fast."""
    params = vars(FAMILIES.get(family).Params())
    if "width" in params:
        params["width"] = 0.25
    return make_spec({"family": family, **params})


@pytest.fixture(params=FAMILIES.names())
def family(request) -> str:
    return request.param


class TestFamilyContract:
    """Every family: any input shape and class count, named stages, gradients everywhere."""

    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
    def test_forward_backward_every_param_gets_gradient(self, family: str, shape) -> None:
        torch.manual_seed(0)
        model = build(small_spec(family), shape, 7)
        x = torch.randn(3, *shape)
        out = model(x)
        assert out.shape == (3, 7)
        out.logsumexp(1).sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"

    def test_feature_modules_are_named_stages_in_order(self, family: str) -> None:
        model = build(small_spec(family), (3, 32, 32), 10)
        names = list(model.feature_modules())
        assert names[0] == "stem" and names[-1] == "pool"
        assert any(n.startswith("stage") for n in names)
        seen = []
        hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.append(n)) for n, m in model.feature_modules().items()]
        model(torch.randn(2, 3, 32, 32))
        for h in hooks:
            h.remove()
        assert seen == names, "feature modules must run in network order"

    def test_predictions_do_not_depend_on_the_thread_count(self, family: str) -> None:
        """A study evaluates a student on fewer threads while the child process measures its latency
        (kdnas/study/_trial.py): its accuracy must not depend on that. (On this project's CPU the logits are bitwise
        equal; the test allows rounding.)"""
        torch.manual_seed(0)
        model = build(small_spec(family), (1, 28, 28), 10)
        data = TensorSource(torch.randn(100, 1, 28, 28), torch.randint(0, 10, (100,)))
        threads = torch.get_num_threads()
        try:
            logits = []
            for n in (1, 2):
                torch.set_num_threads(n)
                logits.append(predict(model, data))
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(logits[0].argmax(1), logits[1].argmax(1))
        torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)

    def test_spec_json_round_trip_and_hash(self, family: str) -> None:
        spec = small_spec(family)
        again = make_spec(json.loads(json.dumps(spec.to_dict())))
        assert again == spec and hash(again) == hash(spec) and again.digest() == spec.digest()

    def test_meta_device_build_matches_real_param_count(self, family: str) -> None:
        spec = small_spec(family)
        with torch.device("meta"):
            meta = build(spec, (3, 32, 32), 10)
        real = build(spec, (3, 32, 32), 10)
        assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in real.parameters())


@pytest.mark.parametrize("depth,params", [(20, 269_722), (32, 464_154), (56, 853_018), (110, 1_727_962)])
def test_resnet_cifar_matches_he_et_al_param_counts(depth: int, params: int) -> None:
    # He et al. 2016, Table 6: 0.27M, 0.46M, 0.85M, 1.7M parameters on CIFAR-10.
    model = build(make_spec({"family": "resnet_cifar", "depth": depth}), (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == params


def test_resnet8_hand_count() -> None:
    # stem conv 3*16*9 + BN 32; stage1: 2 convs 16*16*9 + 2 BN 32; stage2: 16*32*9 + 32*32*9 + 2 BN 64;
    # stage3: 32*64*9 + 64*64*9 + 2 BN 128; fc 64*10 + 10. Option-A shortcuts have no parameters.
    expected = (3 * 16 * 9 + 32) + 2 * (16 * 16 * 9 + 32) + (16 * 32 * 9 + 32 * 32 * 9 + 128) \
        + (32 * 64 * 9 + 64 * 64 * 9 + 256) + (64 * 10 + 10)
    model = build(make_spec({"family": "resnet_cifar", "depth": 8}), (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_spec_defaults_filled_so_equal_specs_hash_equal() -> None:
    assert make_spec({"family": "resnet_cifar"}) == make_spec({"family": "resnet_cifar", "depth": 20, "width": 1.0})


def test_bad_specs_name_the_key() -> None:
    with pytest.raises(ConfigError, match="depth: must be 6n\\+2"):
        make_spec({"family": "resnet_cifar", "depth": 10})
    with pytest.raises(ConfigError, match="unknown model family 'vgg'; valid names: "):
        make_spec({"family": "vgg"})
    with pytest.raises(ConfigError, match="colour: unknown key"):
        make_spec({"family": "resnet_cifar", "colour": 1})
