"""Toolbox-free dataset parsers and data utilities.

Parsers return :class:`ReIDSplits` of ``(img_path, pid, camid)`` lists; see :mod:`occreid.data.parsers`.
"""

from .common import DatasetFormatError, ReIDSplits, list_images, parse_pid_camid
from .parsers import (PARSERS, TEST_ONLY, parse_occluded_duke, parse_occluded_reid, parse_opreid,
                      parse_p_dukemtmc, parse_partial_ilids, parse_partial_reid)
from .occlusion import OcclusionSimulator
from .parsing import PART_NAMES, ParsingLabels, load_bpbreid_mask
from .subset import select_identities, subset_splits

__all__ = [
    "DatasetFormatError", "ReIDSplits", "list_images", "parse_pid_camid", "PARSERS", "TEST_ONLY",
    "parse_occluded_duke", "parse_occluded_reid", "parse_opreid", "parse_p_dukemtmc",
    "parse_partial_ilids", "parse_partial_reid", "select_identities", "subset_splits", "OcclusionSimulator",
    "PART_NAMES", "ParsingLabels", "load_bpbreid_mask",
]
