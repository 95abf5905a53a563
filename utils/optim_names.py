"""Names of the optimizers and losses engine/optim.py implements, for the config checks,
which do not import the engine."""

OPTIMIZER_NAMES = ("adam", "adamw", "sgd")
# Per-record losses by the kind of model they train.
CRITERION_NAMES = {"classifier": ("ce",), "attack": ("bce",)}
