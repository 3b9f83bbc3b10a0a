"""A chosen student as a self-contained bundle: export, deployment files (ONNX, torch.export), full
training (``kdnas train``), ``load_student`` and ``kdnas predict``.
"""

from kdnas.bundle._api import export
from kdnas.bundle._export import Pick, export_trial, pick, pick_trial
from kdnas.bundle._files import deploy, load_student
from kdnas.bundle._fulltrain import train_bundle
from kdnas.bundle._predict import predict_images, write_csv

__all__ = [
    "export",
    "deploy", "export_trial", "load_student", "pick", "Pick", "pick_trial", "predict_images", "train_bundle", "write_csv",
]
