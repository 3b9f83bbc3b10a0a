"""Distillation methods: one registry, one weighting convention, features through forward hooks.

Weighting convention, the same for every method::

    loss = (1 - alpha) * CE(student_logits, labels) + alpha * D

``alpha`` in [0, 1] is the distillation term's share (``alpha = 0`` trains on labels alone; ``none`` has no
alpha and is exactly that). ``D`` is the method's term with its paper's constants inside it:

- soft-target terms (``hinton``, ``dkd``) carry ``T**2`` (Hinton et al. 2015): the gradient of a KL between
  T-softened distributions shrinks as 1/T**2, and the factor keeps D's scale independent of T;
- single-term feature methods (``fitnet``, ``at``, ``sp``, ``pkt``, ``crd``) are ``beta * term``: their raw
  terms differ in size by orders of magnitude (PKT's is ~1e-4 of SP's), and ``beta`` brings each to the
  label loss's scale. The default betas are RepDistiller's (which weighs CE 1 and the term beta), so the
  default ``alpha = 0.5`` reproduces its CE:term ratio;
- multi-term methods weigh their terms by name (``rkd``: ``distance``, ``angle``; ``dkd``: ``tckd``, ``nckd``).

The hyperparameters, their defaults and rules are declared by each method (``METHODS.get(name)
.hyperparameters``); ``docs/methods.md`` lists them.
"""

from kdnas.distill._base import Hyper, Method, PairShape, Step
from kdnas.distill._chain import AssistantPool, Guide, ensemble_guide, guided_loss
from kdnas.distill._ensemble import Ensemble, ensemble_logits
from kdnas.distill._hooks import FeatureTap, pair_stages, probe_shapes
from kdnas.distill._logit import hinton_kd_term
from kdnas.distill._loss import make_loss
from kdnas.distill._methods import METHODS, check_hyperparameters, resolve_hyperparameters
from kdnas.distill._spec import Chain, MethodSpec
from kdnas.distill._teacher_logits import TeacherLogits, teacher_logits

__all__ = [
    "AssistantPool", "Chain", "check_hyperparameters", "Ensemble", "ensemble_guide", "ensemble_logits", "FeatureTap", "Guide", "guided_loss", "hinton_kd_term",
    "Hyper", "make_loss", "Method", "METHODS", "MethodSpec", "pair_stages", "PairShape", "probe_shapes",
    "resolve_hyperparameters", "Step", "teacher_logits", "TeacherLogits",
]
