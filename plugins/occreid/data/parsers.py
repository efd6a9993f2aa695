"""Parsers of the occluded / partial re-identification benchmarks (toolbox-free).

Each ``parse_*`` function takes the datasets root (FastReID's ``FASTREID_DATASETS``) and returns
:class:`~occreid.data.common.ReIDSplits`: ``train``, ``query``, ``gallery`` lists of
``(img_path, pid, camid)`` with integer ids and 0-based cameras. They never skip an image: a missing
folder raises ``FileNotFoundError`` naming it; an empty split, or a file or folder name that cannot be
parsed, raises :class:`~occreid.data.common.DatasetFormatError` naming the path.

Layouts (relative to ``root``):

============== ================================================================================
OccludedDuke   ``Occluded_Duke/{bounding_box_train,query,bounding_box_test}/PPPP_cC_fFFFFFFF.jpg``
               (Miao et al., ICCV 2019; 8 cameras)
OccludedREID   ``Occluded_REID/{occluded_body_images,whole_body_images}/<pid>/*.jpg``; query =
               occluded (camid 0), gallery = whole body (camid 1); test only (Zhuo et al., ICME 2018)
PartialREID    ``Partial-REID_Dataset/{partial_body_images|occluded_body_images,whole_body_images}/PPP_NNN.jpg``;
               query = partial (default) or occluded images (camid 0), gallery = whole body (camid 1);
               test only (Zheng et al., ICCV 2015)
PartialiLIDS   ``Partial_iLIDS/{Probe,Gallery}`` listed by ``Probe.txt`` / ``Gallery.txt`` (one relative
               path per line, ``N.jpg`` with N the person id); query camid 0, gallery camid 1; test only
PDukeMTMC      ``P-DukeMTMC-reID/{train,test}/{occluded_body_images,whole_body_images}/<pid>/*.jpg``;
               train = both folders of ``train``; query = ``test`` occluded (camid 0), gallery =
               ``test`` whole body (camid 1) (Zhuo et al., 2019)
OPReID         ``OPReID/{bounding_box_train,query,bounding_box_test}/PPPP_cCCCC_*.jpg`` (our layout: the
               release format is not available to us; see docs/datasets.md)
============== ================================================================================
"""

from __future__ import annotations

import os
from typing import List

from .common import (DatasetFormatError, Item, ReIDSplits, list_images, parse_int_name,
                     parse_pid_camid, require_dir)

OCCLUDED_DUKE_DIR = "Occluded_Duke"
OCCLUDED_REID_DIR = "Occluded_REID"
PARTIAL_REID_DIR = "Partial-REID_Dataset"
PARTIAL_ILIDS_DIR = "Partial_iLIDS"
P_DUKEMTMC_DIR = "P-DukeMTMC-reID"
OPREID_DIR = "OPReID"

QUERY_CAMID = 0
GALLERY_CAMID = 1


def _market_style_split(folder: str, num_cameras=None) -> List[Item]:
    items = []
    for path in list_images(folder):
        pid, camid = parse_pid_camid(path, num_cameras=num_cameras)
        items.append((path, pid, camid))
    return items


def _market_style(root: str, dataset_dir: str, name: str, num_cameras=None) -> ReIDSplits:
    base = require_dir(os.path.join(root, dataset_dir), f"{name} dataset")
    splits = [_market_style_split(require_dir(os.path.join(base, d), f"{name} {d}"), num_cameras)
              for d in ("bounding_box_train", "query", "bounding_box_test")]
    return ReIDSplits(*splits)


def parse_occluded_duke(root: str) -> ReIDSplits:
    """Occluded-Duke (Occluded-DukeMTMC, Miao et al. ICCV 2019): train 15,618 images / 702 ids,
    query 2,210 / 519, gallery 17,661 / 1,110 on the official release; 8 cameras."""
    return _market_style(root, OCCLUDED_DUKE_DIR, "Occluded-Duke", num_cameras=8)


def parse_opreid(root: str) -> ReIDSplits:
    """OPReID (Yan et al. ICCV 2021) in the layout we support: ``OPReID/{bounding_box_train,query,
    bounding_box_test}`` with file names ``<pid>_c<camera>_<anything>.jpg`` (pid and 1-based camera of
    any width; the paper's data has about 6,000 cameras). Paper statistics: train 27,228 images / 1,744
    ids, query 4,200 / 3,515, gallery 41,014 / 6,174."""
    return _market_style(root, OPREID_DIR, "OPReID")


def _identity_folders(folder: str, camid: int, what: str) -> List[Item]:
    """Images of ``folder/<pid>/*``: one sub-folder per person, the folder name its integer id."""
    require_dir(folder, what)
    items = []
    sub = sorted(d for d in os.listdir(folder) if not d.startswith("."))
    for d in sub:
        path = os.path.join(folder, d)
        if not os.path.isdir(path):
            raise DatasetFormatError(f"{what}: expected one sub-folder per person id, found file {path}")
        pid = parse_int_name(d, path, "person id")
        items.extend((p, pid, camid) for p in list_images(path))
    if not items:
        raise DatasetFormatError(f"empty split: {what} has no person folder in {folder}")
    return items


def parse_occluded_reid(root: str) -> ReIDSplits:
    """Occluded-REID (Zhuo et al. ICME 2018): 200 ids x 5 occluded + 5 whole-body images; test only."""
    base = require_dir(os.path.join(root, OCCLUDED_REID_DIR), "Occluded-REID dataset")
    query = _identity_folders(os.path.join(base, "occluded_body_images"), QUERY_CAMID, "Occluded-REID query")
    gallery = _identity_folders(os.path.join(base, "whole_body_images"), GALLERY_CAMID, "Occluded-REID gallery")
    return ReIDSplits([], query, gallery)


def _pid_from_stem(path: str) -> int:
    stem = os.path.splitext(os.path.basename(path))[0]
    return parse_int_name(stem.split("_")[0], path, "person id")


def parse_partial_reid(root: str, query_type: str = "partial") -> ReIDSplits:
    """Partial-REID (Zheng et al. ICCV 2015): 60 ids, 5 images each in ``partial_body_images``,
    ``occluded_body_images`` and ``whole_body_images``, names ``PPP_NNN.jpg``; test only.

    Args:
        query_type: ``"partial"`` (the hand-cropped partial bodies, the usual protocol) or
            ``"occluded"`` (the uncropped occluded images) as query; whole-body images are the gallery.
    Raises:
        ValueError: unknown ``query_type``.
    """
    if query_type not in ("partial", "occluded"):
        raise ValueError(f"query_type must be 'partial' or 'occluded', got {query_type!r}")
    base = require_dir(os.path.join(root, PARTIAL_REID_DIR), "Partial-REID dataset")
    qdir = require_dir(os.path.join(base, f"{query_type}_body_images"), "Partial-REID query")
    gdir = require_dir(os.path.join(base, "whole_body_images"), "Partial-REID gallery")
    query = [(p, _pid_from_stem(p), QUERY_CAMID) for p in list_images(qdir)]
    gallery = [(p, _pid_from_stem(p), GALLERY_CAMID) for p in list_images(gdir)]
    return ReIDSplits([], query, gallery)


def _read_list(base: str, list_name: str, camid: int) -> List[Item]:
    list_path = os.path.join(base, list_name)
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"Partial-iLIDS list file not found: {list_path}")
    items = []
    with open(list_path) as f:
        for lineno, line in enumerate(f, 1):
            rel = line.strip()
            if not rel:
                continue
            path = os.path.join(base, rel.split()[0])
            if not os.path.isfile(path):
                raise DatasetFormatError(f"{list_path}:{lineno}: listed image not found: {path}")
            items.append((path, _pid_from_stem(path), camid))
    if not items:
        raise DatasetFormatError(f"empty split: {list_path} lists no image")
    return items


def parse_partial_ilids(root: str) -> ReIDSplits:
    """Partial-iLIDS (Zheng et al. ICCV 2015): 119 ids, one partial probe and one whole-body gallery
    image each, listed in ``Probe.txt`` / ``Gallery.txt``; test only."""
    base = require_dir(os.path.join(root, PARTIAL_ILIDS_DIR), "Partial-iLIDS dataset")
    return ReIDSplits([], _read_list(base, "Probe.txt", QUERY_CAMID),
                      _read_list(base, "Gallery.txt", GALLERY_CAMID))


def parse_p_dukemtmc(root: str) -> ReIDSplits:
    """P-DukeMTMC-reID (Zhuo et al. 2019): one folder per identity under ``occluded_body_images`` and
    ``whole_body_images`` of ``train`` and ``test``. Cameras are taken from the folder (occluded 0,
    whole body 1), not from the file names, so that the standard evaluation never drops a true match."""
    base = require_dir(os.path.join(root, P_DUKEMTMC_DIR), "P-DukeMTMC-reID dataset")
    train_dir = os.path.join(base, "train")
    test_dir = os.path.join(base, "test")
    train = (_identity_folders(os.path.join(train_dir, "occluded_body_images"), QUERY_CAMID,
                               "P-DukeMTMC-reID train (occluded)")
             + _identity_folders(os.path.join(train_dir, "whole_body_images"), GALLERY_CAMID,
                                 "P-DukeMTMC-reID train (whole body)"))
    query = _identity_folders(os.path.join(test_dir, "occluded_body_images"), QUERY_CAMID,
                              "P-DukeMTMC-reID query")
    gallery = _identity_folders(os.path.join(test_dir, "whole_body_images"), GALLERY_CAMID,
                                "P-DukeMTMC-reID gallery")
    return ReIDSplits(train, query, gallery)


PARSERS = {
    "OccludedDuke": parse_occluded_duke,
    "OccludedREID": parse_occluded_reid,
    "PartialREID": parse_partial_reid,
    "PartialiLIDS": parse_partial_ilids,
    "PDukeMTMC": parse_p_dukemtmc,
    "OPReID": parse_opreid,
}

#: Datasets without a training split: naming one in DATASETS.NAMES is an error.
TEST_ONLY = frozenset({"OccludedREID", "PartialREID", "PartialiLIDS"})
