"""Features of image files from a TorchReID model (e.g. the MSMT17 OSNet x0.25 of ../shared/data)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image


def build_torchreid_model(name: str, weights: str, num_classes: int = 1041) -> torch.nn.Module:
    """A TorchReID model (``torchreid.reid.models.build_model``) with ``weights`` loaded strictly
    (``torch.load(weights_only=True)``), in eval mode.

    Raises:
        FileNotFoundError: no file at ``weights``.
        RuntimeError: the state dict does not match the model (names the file).
    """
    from torchreid.reid.models import build_model

    model = build_model(name, num_classes=num_classes, pretrained=False)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state.get("state_dict", state), strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"{weights} does not match torchreid model {name!r}: {e}") from e
    return model.eval()


@torch.no_grad()
def extract_features(model: torch.nn.Module, paths: Sequence[str], size=(256, 128), batch_size: int = 128,
                     progress: bool = False) -> np.ndarray:
    """(n, D) float32 features of ``paths``: RGB, bilinear resize to ``size`` (h, w), ImageNet
    mean/std normalisation (TorchReID's test transform).

    Raises:
        OSError: an image cannot be read (names the file).
    """
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    starts = range(0, len(paths), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="features", unit="batch")
    out = []
    for s in starts:
        imgs = []
        for p in paths[s:s + batch_size]:
            try:
                img = Image.open(p).convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
            except OSError as e:
                raise OSError(f"cannot read image {p}: {e}") from e
            imgs.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
        x = (torch.stack(imgs) - mean) / std
        out.append(model(x).float())
    return torch.cat(out).numpy()
