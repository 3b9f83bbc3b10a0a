"""Model families and architecture specs."""

from __future__ import annotations

from typing import Any, Mapping

from kdnas.core import Collector, Registry, is_missing, parse_section
from kdnas.models._base import KDNet, ModelFamily
from kdnas.models._spec import ArchSpec, canonical_json, digest
from kdnas.models.mobilenetv2 import MobileNetV2Family
from kdnas.models.plain_cnn import PlainCNNFamily
from kdnas.models.resnet_cifar import ResNetCifarFamily

FAMILIES: Registry[ModelFamily] = Registry("model family")
# The one place where families are registered.
FAMILIES.register(ResNetCifarFamily.name, ResNetCifarFamily())
FAMILIES.register(PlainCNNFamily.name, PlainCNNFamily())
FAMILIES.register(MobileNetV2Family.name, MobileNetV2Family())


def check_spec(raw: Any, report) -> ArchSpec | None:
    """Validate a spec mapping ``{family: NAME, <param>: value, ...}``; return the spec or None."""
    if not isinstance(raw, Mapping):
        report("", f"expected a mapping with a `family` key, got {raw!r}")
        return None
    family_name = raw.get("family")
    if family_name not in FAMILIES:
        report("family", f"unknown model family {family_name!r}; valid names: {', '.join(FAMILIES.names())}")
        return None
    family = FAMILIES.get(family_name)
    params = parse_section(family.Params, {k: v for k, v in raw.items() if k != "family"}, "", report)
    if is_missing(params):
        return None
    return ArchSpec.of(family_name, vars(params))


def make_spec(raw: Mapping[str, Any], source: str = "<spec>") -> ArchSpec:
    """Validate and normalise a spec mapping; raises ConfigError listing every problem."""
    problems = Collector(source)
    spec = check_spec(raw, problems.add)
    problems.raise_if_any()
    assert spec is not None
    return spec


def build(spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int) -> KDNet:
    """Build the network described by ``spec`` for inputs of shape ``(C, H, W)``."""
    family = FAMILIES.get(spec.family)
    return family.build(family.Params(**spec.param_dict()), tuple(input_shape), num_classes)


__all__ = ["ArchSpec", "FAMILIES", "KDNet", "ModelFamily", "build", "canonical_json", "check_spec", "digest", "make_spec"]
