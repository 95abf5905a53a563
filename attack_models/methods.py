"""Names of the membership inference methods (ATTACKER.METHODS) engine/methods.py runs, for
the config checks, which do not import the engine."""

from attack_models.signals import SIGNALS

METHOD_NAMES = ("shokri", *SIGNALS, "ml_leaks", "lira_online", "lira_online_fixed",
                "lira_offline", "lira_offline_fixed", "rmia", "rmia_online", "label_only")
# Methods that need reference models trained with and without each target.
NEEDS_RANDOM_HALF = ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed",
                     "rmia", "rmia_online")
# VICTIM.OUTPUT kinds each method can run on; a method not listed runs on any release of
# posteriors (probs, topk, rounded), where a zeroed or rounded-away probability reads as
# 1e-30. On label (the predicted class only) only the methods that need no more run.
_LABEL_ENOUGH = ("correctness", "label_only")
_POSTERIOR_OUTPUTS = ("probs", "topk", "rounded")
METHOD_OUTPUTS = {name: _POSTERIOR_OUTPUTS + (("label",) if name in _LABEL_ENOUGH else ())
                  for name in METHOD_NAMES}


def methods_for_output(output):
    """The methods that can run on VICTIM.OUTPUT `output`, in METHOD_NAMES order."""
    return [name for name in METHOD_NAMES if output in METHOD_OUTPUTS[name]]
