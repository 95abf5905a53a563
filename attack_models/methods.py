"""Names of the membership inference methods (ATTACKER.METHODS) engine/methods.py runs, for
the config checks, which do not import the engine."""

from attack_models.signals import SIGNALS

METHOD_NAMES = ("shokri", *SIGNALS, "ml_leaks", "lira_online", "lira_online_fixed",
                "lira_offline", "lira_offline_fixed", "rmia", "rmia_online")
# Methods that need reference models trained with and without each target.
NEEDS_RANDOM_HALF = ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed",
                     "rmia", "rmia_online")
