"""Compound Batch Erasing of SGR (Yan et al., ICCV 2021, Sec. 3.2): random erasing on one copy of the
batch and batch-constant erasing (BcE) on another (toolbox-free, on image tensors)."""

from typing import Callable, Optional, Sequence, Tuple

import torch


class BatchConstantErasing:
    """Erase the same horizontal stripe in every image of a batch (BcE).

    The image height is split into ``s`` stripes, ``s`` drawn uniformly from ``stripes`` (paper: 6, 7,
    8); one stripe index is drawn, and rows ``[k H / s, (k + 1) H / s)`` of every image are set to
    ``value`` (per channel, in the images' own scale).

    Args:
        stripes: candidate numbers of stripes.
        value: fill value per channel (3 values) or one scalar.
        generator: a ``torch.Generator`` for reproducible draws.
    Shapes: (B, C, H, W) -> (B, C, H, W), a new tensor.
    """

    def __init__(self, stripes: Sequence[int] = (6, 7, 8), value=0.0, generator: Optional[torch.Generator] = None):
        if not stripes or min(stripes) < 1:
            raise ValueError(f"stripes must be positive integers, got {stripes}")
        self.stripes = tuple(stripes)
        self.value = value
        self.generator = generator

    def draw(self, height: int) -> Tuple[int, int]:
        """The rows ``(top, bottom)`` to erase for an image height."""
        s = self.stripes[int(torch.randint(len(self.stripes), (1,), generator=self.generator))]
        k = int(torch.randint(s, (1,), generator=self.generator))
        return k * height // s, (k + 1) * height // s

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        top, bottom = self.draw(images.shape[2])
        out = images.clone()
        value = torch.as_tensor(self.value, dtype=images.dtype, device=images.device)
        out[:, :, top:bottom, :] = value.view(-1, 1, 1) if value.dim() else value
        return out


def compound_batch(images: torch.Tensor, targets: torch.Tensor, random_erasing: Callable[[torch.Tensor], torch.Tensor],
                   batch_erasing: Optional[BatchConstantErasing]) -> Tuple[torch.Tensor, torch.Tensor]:
    """X_full = [RE(X); BcE(X)] (2B images) with the labels repeated, so both halves keep their P x K
    identities (Sec. 3.2).

    Args:
        images: (B, C, H, W) the sampled batch X.
        targets: (B,) labels.
        random_erasing: applied to each image of the first copy (e.g. torchvision ``RandomErasing``).
        batch_erasing: applied to the second copy as a whole; ``None`` gives the control
            [RE(X); RE(X)] (a doubled batch without BcE, two independent random-erasing draws), which
            separates CBE's own effect from the doubling of the batch.
    Returns: ((2B, C, H, W), (2B,)).
    """
    x_re = torch.stack([random_erasing(img) for img in images])
    if batch_erasing is None:
        second = torch.stack([random_erasing(img) for img in images])
    else:
        second = batch_erasing(images)
    return torch.cat([x_re, second]), torch.cat([targets, targets])
