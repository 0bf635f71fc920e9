"""Detector architectures (registry) and the endoedge checkpoint format.

Importing this package registers the built-in architectures; it does not import torch.
"""

from __future__ import annotations

from endoedge.models import efficientnet_ssd as _efficientnet_ssd  # noqa: F401 - registers archs
from endoedge.models import multitask_ssd as _multitask_ssd  # noqa: F401 - registers archs
from endoedge.models import torchvision_ssd as _torchvision_ssd  # noqa: F401 - registers archs
from endoedge.models.registry import Architecture, arch_names, get_arch, register_arch

__all__ = ["Architecture", "arch_names", "get_arch", "register_arch"]
