"""Shadow models: built from the victims/ architecture registry, trained on draws from the
shadow pool whose membership the attacker knows."""

from shadow_models.sampling import draw_shadow_records, pack_ranges

__all__ = ["draw_shadow_records", "pack_ranges"]
