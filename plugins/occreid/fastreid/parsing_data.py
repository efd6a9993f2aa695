"""Training images with their human-parsing labels, transformed together (AMD-Net, Eq. 2).

FastReID's transforms act on the image alone; a parsing label must follow every geometric step (resize, flip,
pad + crop). :class:`ParsingReIDDataset` applies those steps to the image and its label with the same random
draws, then the image-only steps of FastReID's pipeline (colour jitter, AutoAugment, ToTensor, random erasing:
an erased patch occludes the person, its label stays that of the person behind it).

Labels come from :class:`occreid.data.parsing.ParsingLabels` (one PNG per image under ``DATASETS.PARSING.ROOT``,
mirroring the image's path relative to the datasets root). An image without a label gets a map of -1, which
:func:`occreid.layers.amdnet.part_attention_loss` ignores.
"""

import logging
import random

import numpy as np
import torch
from PIL import Image

from fastreid.data.data_utils import read_image
from fastreid.data.transforms import build_transforms

from .image_dataset import ReIDImageDataset
from .resume import seeded_index

logger = logging.getLogger(__name__)


def image_only_transforms(cfg):
    """FastReID's training transforms without the geometric steps done jointly here (resize kept: a no-op on
    an image already at ``INPUT.SIZE_TRAIN``)."""
    geometric = [k for k in ("AUTOAUG", "CROP", "AFFINE", "AUGMIX") if k in cfg.INPUT and cfg.INPUT[k].ENABLED]
    if geometric:
        raise ValueError(f"AMD-Net: INPUT.{', INPUT.'.join(geometric)} move pixels but would not move the parsing "
                         f"labels; disable them (only flip and pad + crop are applied jointly)")
    c = cfg.clone()
    c.defrost()
    c.INPUT.FLIP.ENABLED = False
    c.INPUT.PADDING.ENABLED = False
    return build_transforms(c, is_train=True)


class JointGeometry:
    """Resize to ``INPUT.SIZE_TRAIN`` (image bicubic, label nearest), horizontal flip with ``INPUT.FLIP.PROB``,
    ``INPUT.PADDING.SIZE`` zero padding and a random crop back to the size: the same draw for both.
    (PIL image, label (H, W) uint8 or None) -> (PIL image, label (h, w) int64 with -1 where no label)."""

    def __init__(self, cfg):
        self.size = tuple(cfg.INPUT.SIZE_TRAIN)     # (h, w)
        self.flip = cfg.INPUT.FLIP.PROB if cfg.INPUT.FLIP.ENABLED else 0.0
        self.pad = cfg.INPUT.PADDING.SIZE if cfg.INPUT.PADDING.ENABLED else 0
        if cfg.INPUT.PADDING.ENABLED and cfg.INPUT.PADDING.MODE != "constant":
            raise ValueError(f"AMD-Net's joint transforms pad with zeros: INPUT.PADDING.MODE must be 'constant', "
                             f"got {cfg.INPUT.PADDING.MODE!r}")

    def __call__(self, img: Image.Image, label):
        h, w = self.size
        img = img.resize((w, h), Image.BICUBIC)
        lab = (np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST)).astype(np.int64)
               if label is not None else np.full((h, w), -1, np.int64))
        if self.flip and random.random() < self.flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
            lab = lab[:, ::-1]
        if self.pad:
            p = self.pad
            arr = np.pad(np.asarray(img), ((p, p), (p, p), (0, 0)))
            labp = np.pad(lab, ((p, p), (p, p)), constant_values=0 if label is not None else -1)
            top, left = random.randint(0, 2 * p), random.randint(0, 2 * p)
            img = Image.fromarray(arr[top:top + h, left:left + w])
            lab = labp[top:top + h, left:left + w]
        return img, np.ascontiguousarray(lab)


class ParsingReIDDataset(ReIDImageDataset):
    """FastReID training set whose items also carry ``"parsing"`` (H, W) int64 at ``INPUT.SIZE_TRAIN``.

    Args: img_items (path, pid, camid) list; cfg (``INPUT.*``); labels: a
    :class:`occreid.data.parsing.ParsingLabels` or None (every item then gets -1); relabel as FastReID.
    Errors: an unreadable image raises RuntimeError naming it; a malformed label raises ValueError naming it.
    """

    def __init__(self, img_items, cfg, labels=None, relabel=True):
        super().__init__(img_items, image_only_transforms(cfg), relabel=relabel)
        self.geometry = JointGeometry(cfg)
        self.labels = labels

    def coverage(self):
        """(labelled images, images) of this set."""
        if self.labels is None:
            return 0, len(self.img_items)
        return self.labels.coverage([item[0] for item in self.img_items])

    def __getitem__(self, index):
        index = seeded_index(index)
        img_path, pid, camid = self.img_items[index][:3]
        try:
            img = read_image(img_path)
        except Exception as e:
            raise RuntimeError(f"cannot read image {img_path}: {e}") from e
        label = self.labels.load(img_path, check_size=False) if self.labels is not None else None
        if label is not None and label.shape != (img.size[1], img.size[0]):
            raise ValueError(f"parsing label {self.labels.path_for(img_path)} is {label.shape[1]} x {label.shape[0]} "
                             f"but image {img_path} is {img.size[0]} x {img.size[1]}")
        img, lab = self.geometry(img, label)
        img = self.transform(img)
        if self.relabel:
            pid, camid = self.pid_dict[pid], self.cam_dict[camid]
        return {"images": img, "targets": pid, "camids": camid, "img_paths": img_path,
                "parsing": torch.from_numpy(lab)}
