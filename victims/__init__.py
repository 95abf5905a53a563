"""Classifier architectures (victims and shadows share them)."""

from victims.models import (
    MODELS,
    build_model,
    check_model,
    get_model_class,
    is_import_path,
    source_digest,
)

__all__ = ["MODELS", "build_model", "check_model", "get_model_class", "is_import_path",
           "source_digest"]
