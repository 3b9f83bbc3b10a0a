"""Distillation methods."""

from kdnas.distill.losses import METHODS, Method, check_hyperparameters, hinton_kd_term

__all__ = ["METHODS", "Method", "check_hyperparameters", "hinton_kd_term"]
