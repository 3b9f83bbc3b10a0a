"""The registry of distillation methods: the one place where methods are registered."""

from __future__ import annotations

from typing import Any, Mapping

from kdnas.core import Registry
from kdnas.distill._base import Method, Report
from kdnas.distill._crd import ContrastiveRD
from kdnas.distill._feature import AttentionTransfer, FitNets, ProbabilisticKT, RelationalKD, SimilarityPreserving
from kdnas.distill._logit import DecoupledKD, HintonKD, LabelsOnly

METHODS: Registry[Method] = Registry("distillation method")
for _method in (LabelsOnly(), HintonKD(), DecoupledKD(), FitNets(), AttentionTransfer(), SimilarityPreserving(),
                RelationalKD(), ProbabilisticKT(), ContrastiveRD()):
    METHODS.register(_method.name, _method)


def check_hyperparameters(method: str, values: Mapping[str, Any], report: Report) -> None:
    """Rules for hyperparameter values, shared by study files, search spaces and ``make_loss``."""
    METHODS.get(method).check(values, report)


def resolve_hyperparameters(method: str, values: Mapping[str, Any]) -> dict[str, float]:
    """``values`` completed with the method's defaults (what a run actually uses)."""
    return METHODS.get(method).resolve(values)
