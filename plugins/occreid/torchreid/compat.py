"""TorchReID's two layouts: PyPI torchreid 0.2.5 (``torchreid.reid.models``, ...) and its GitHub tree
(``torchreid.models``, ...). :func:`torchreid_modules` (defined in :mod:`occreid.compat`, where the FastReID glue
finds it too) returns the same six modules from either; :func:`model_factory` and :func:`image_datasets` give
TorchReID's registries, where :mod:`occreid.torchreid` registers occreid's models and datasets."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

from occreid.compat import torchreid_modules

__all__ = ["image_datasets", "model_factory", "torchreid_modules"]


def model_factory(tr: SimpleNamespace) -> dict:
    """TorchReID's model factory dict (``name -> constructor``), which ``build_model`` reads.

    TorchReID keeps it as the module global ``__model_factory`` of its ``models`` package; its maintainers'
    advice is to edit that file. Adding to the dict is the same, without editing it."""
    return vars(tr.models)["__model_factory"]


def image_datasets(tr: SimpleNamespace) -> dict:
    """TorchReID's image-dataset registry dict (``name -> class``) of ``data.datasets``."""
    return vars(importlib.import_module(tr.data.__name__ + ".datasets"))["__image_datasets"]
