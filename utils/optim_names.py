"""Names of the optimizers, losses, learning-rate schedules and augmentations that
engine/optim.py and engine/recipe.py implement, for the config checks, which do not import
the engine."""

OPTIMIZER_NAMES = ("adam", "adamw", "sgd")
# Per-record losses by the kind of model they train.
CRITERION_NAMES = {"classifier": ("ce",), "attack": ("bce",)}
# Learning-rate schedules (engine.recipe.Schedule) and augmentations (engine.recipe.AUGMENTS).
SCHEDULER_NAMES = ("none", "cosine", "onecycle", "multistep")
AUGMENT_NAMES = ("none", "flip", "flip_crop")
