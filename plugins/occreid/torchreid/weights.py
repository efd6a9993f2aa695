"""Checkpoints both ways between FastReID and TorchReID, never unpickling code (``weights_only=True``).

- FastReID's checkpoint: ``{"model": state_dict, ...}`` with the meta-architecture's keys (``backbone.*``,
  ``heads.*``); TorchReID's: ``{"state_dict": state_dict, "epoch": ..., ...}`` (``torchreid.utils.save_checkpoint``)
  whose keys, for a :class:`~occreid.torchreid.models.FastReIDModel`, carry the prefix ``fastreid.``; either may
  carry ``module.`` (``DataParallel``).
- FastReID's side (``train_net.py --eval-only MODEL.WEIGHTS``, :func:`occreid.fastreid.trainer.load_checked_weights`)
  reads TorchReID checkpoints of occreid models directly;
- :func:`fastreid_state_dict` reads any of them as FastReID keys; :func:`load_weights` loads one into a
  ``FastReIDModel`` (checked as :func:`occreid.fastreid.check_checkpoint_matches` checks: only the identity
  classifier may differ); :func:`save_fastreid_checkpoint` writes a file FastReID's ``MODEL.WEIGHTS`` loads;
  :func:`convert_checkpoint` converts a file (``occreid convert-checkpoint``).
"""

from __future__ import annotations

import os

import torch

PREFIX = "fastreid."


def fastreid_state_dict(path: str) -> dict:
    """The model state dict in a FastReID or TorchReID checkpoint file, with FastReID's key names
    (:func:`occreid.fastreid.trainer.read_state_dict`).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file holds no state dict of tensors (names the file).
    """
    from occreid.fastreid.trainer import read_state_dict
    return read_state_dict(path)[0]


def load_weights(model, path: str):
    """Load a FastReID or TorchReID checkpoint of the same method into a ``FastReIDModel`` (in place; returns it).

    The identity classifier is loaded when its shape matches and left as built otherwise (evaluation, or
    fine-tuning on another dataset).

    Raises:
        ValueError: the checkpoint is not one of this model (missing keys or other shapes outside the
            classifier; names the file and the first keys).
    """
    from occreid.fastreid.trainer import load_checked_weights  # the FastReID side's check and loader, shared
    model = model.module if hasattr(model, "module") else model
    load_checked_weights(model.fastreid, path)
    return model


def save_fastreid_checkpoint(model, path: str):
    """Write ``{"model": state_dict}`` of a ``FastReIDModel``: FastReID's ``MODEL.WEIGHTS`` (and
    ``train_net.py --eval-only``) loads it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    inner = model.module if hasattr(model, "module") else model
    torch.save({"model": inner.fastreid.state_dict()}, path)
    return path


def convert_checkpoint(src: str, dst: str, to: str = "fastreid"):
    """Convert a checkpoint file: ``to="fastreid"`` writes ``{"model": ...}`` (FastReID keys), ``to="torchreid"``
    writes ``{"state_dict": ...}`` with ``fastreid.``-prefixed keys (``torchreid.utils.load_pretrained_weights``
    and ``FastReIDModel.load_state_dict`` read it). The FastReID side's
    :func:`occreid.fastreid.trainer.convert_checkpoint`, which ``occreid convert-checkpoint`` runs without TorchReID.

    Raises:
        ValueError: unknown ``to``, or ``src`` holds no state dict.
    """
    from occreid.fastreid.trainer import convert_checkpoint as convert
    return convert(src, dst, to=to)
