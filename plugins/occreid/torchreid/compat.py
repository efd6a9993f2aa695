"""TorchReID's two layouts: PyPI torchreid 0.2.5 (``torchreid.reid.models``, ...) and its GitHub tree
(``torchreid.models``, ...). :func:`torchreid_modules` returns the same six modules from either."""

from __future__ import annotations

import importlib
from types import SimpleNamespace


def torchreid_modules() -> SimpleNamespace:
    """``SimpleNamespace(models, data, engine, metrics, utils, optim, layout)`` of the installed TorchReID.

    ``layout`` is ``"pypi"`` (``torchreid.reid.*``) or ``"github"`` (``torchreid.*``).

    Raises:
        ImportError: torchreid is not installed, or has neither layout (names what was tried); an import error
            inside an installed torchreid (e.g. a missing dependency) is raised unchanged.
    """
    import importlib.util
    try:
        top = importlib.util.find_spec("torchreid")
    except ImportError:
        top = None
    for layout, prefix in (("pypi", "torchreid.reid"), ("github", "torchreid")):
        if top is None or importlib.util.find_spec(f"{prefix}.models") is None:
            continue  # not this layout; an ImportError *inside* torchreid (a missing dependency) is raised as is
        mods = {name: importlib.import_module(f"{prefix}.{name}")
                for name in ("models", "data", "engine", "metrics", "utils", "optim")}
        return SimpleNamespace(layout=layout, **mods)
    raise ImportError("torchreid not found in either layout (tried torchreid.reid.models for PyPI torchreid "
                      "0.2.5 and torchreid.models for TorchReID's GitHub tree): pip install torchreid==0.2.5")


def model_factory(tr: SimpleNamespace) -> dict:
    """TorchReID's model factory dict (``name -> constructor``), which ``build_model`` reads.

    TorchReID keeps it as the module global ``__model_factory`` of its ``models`` package; its maintainers'
    advice is to edit that file. Adding to the dict is the same, without editing it."""
    return vars(tr.models)["__model_factory"]


def image_datasets(tr: SimpleNamespace) -> dict:
    """TorchReID's image-dataset registry dict (``name -> class``) of ``data.datasets``."""
    return vars(importlib.import_module(tr.data.__name__ + ".datasets"))["__image_datasets"]
