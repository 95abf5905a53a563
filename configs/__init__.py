"""The yacs config tree (defaults.py) and how a run's config is built from it (config.py)."""
