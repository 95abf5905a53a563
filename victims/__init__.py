"""Classifier architectures (victims and shadows share them)."""

from victims.models import MODELS, build_model, check_model

__all__ = ["MODELS", "build_model", "check_model"]
