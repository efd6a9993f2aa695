"""Toolbox layouts, found without importing occreid's glue for either toolbox.

:func:`torchreid_modules` finds TorchReID's modules in either of its two layouts: PyPI torchreid 0.2.5
(``torchreid.reid.models``, ...) and its GitHub tree (``torchreid.models``, ...). Importing this module imports
no toolbox; TorchReID is imported when the function is called. Both glues use it: the FastReID side's
``build_torchreid_osnet_backbone`` (:mod:`occreid.fastreid.backbones`) and :mod:`occreid.torchreid`, whose
:mod:`occreid.torchreid.compat` re-exports it. Kept here, outside both, so that the FastReID glue never imports
the TorchReID glue (importing ``occreid.torchreid`` registers occreid's models into TorchReID).
"""

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
