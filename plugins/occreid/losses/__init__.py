"""Method losses: plain torch functions named after the papers' terms (no toolbox import)."""

from .separation_loss import separation_loss

__all__ = ["separation_loss"]
