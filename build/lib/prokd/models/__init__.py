"""Networks: a registry of MONAI teachers and lightweight students, with feature taps."""

from prokd.models import students, teachers  # noqa: F401  (registration side effects)
from prokd.models.registry import MODELS, ModelSpec, build_model, get_spec

__all__ = ["MODELS", "ModelSpec", "build_model", "get_spec"]
