"""Attack architectures: binary membership classifiers on a victim's posteriors."""

from attack_models.fcnet import (
    ATTACK_MODELS,
    INPUT_SCALINGS,
    FCNet,
    LogPosteriors,
    RankFeatures,
    build_attack_model,
)

__all__ = ["ATTACK_MODELS", "INPUT_SCALINGS", "FCNet", "LogPosteriors", "RankFeatures",
           "build_attack_model"]
