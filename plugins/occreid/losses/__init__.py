"""Method losses: plain torch functions named after the papers' terms (no toolbox import)."""

from .bed_loss import bed_loss, bed_pair_loss
from .separation_loss import separation_loss

__all__ = ["bed_loss", "bed_pair_loss", "separation_loss"]
