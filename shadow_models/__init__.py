"""Shadow models: built from the victims/ architecture registry, trained on draws from the
shadow pool whose membership the attacker knows."""

from shadow_models.sampling import (
    draw_random_half,
    draw_shadow_records,
    draw_shadow_val,
    pack_ranges,
    reference_population,
)

__all__ = ["draw_random_half", "draw_shadow_records", "draw_shadow_val", "pack_ranges",
           "reference_population"]
