"""Shared helpers of the dataset parsers: folder checks, image listing, file-name parsing.

Toolbox-free (standard library only). Every parser returns :class:`ReIDSplits`, three lists of
``(img_path, pid, camid)`` tuples with integer ``pid`` / ``camid``, the convention of FastReID's and
TorchReID's datasets.
"""

from __future__ import annotations

import os
import re
from typing import List, NamedTuple, Optional, Pattern, Tuple

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

Item = Tuple[str, int, int]


class DatasetFormatError(ValueError):
    """A dataset folder exists but its content does not follow the expected layout
    (an empty split, a file name or folder name that cannot be parsed, a bad list file)."""


class ReIDSplits(NamedTuple):
    """The three splits of a re-identification dataset; each is a list of ``(img_path, pid, camid)``."""

    train: List[Item]
    query: List[Item]
    gallery: List[Item]


def require_dir(path: str, what: str) -> str:
    """Return ``path`` if it is a folder, else raise ``FileNotFoundError`` naming it and ``what`` it should hold."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what}: folder not found: {path}")
    return path


def list_images(folder: str, recursive: bool = False) -> List[str]:
    """Sorted paths of the image files (``IMAGE_EXTENSIONS``, any case) in ``folder``.

    Files that are not images (``Thumbs.db``, ``Readme.txt``, hidden files) are not data and are
    left out; nothing that looks like an image is skipped. With ``recursive`` sub-folders are walked.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        DatasetFormatError: ``folder`` holds no image.
    """
    require_dir(folder, "image folder")
    paths = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            paths.extend(os.path.join(dirpath, f) for f in filenames if _is_image(f))
    else:
        paths = [os.path.join(folder, f) for f in os.listdir(folder) if _is_image(f)]
    if not paths:
        raise DatasetFormatError(f"empty split: no image ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return sorted(paths)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# DukeMTMC / Market-1501 naming: PPPP_cC_fFFFFFFF.jpg (Duke), PPPP_cCsS_FFFFFF_NN.jpg (Market).
PID_CAM_PATTERN = re.compile(r"^(-?\d+)_c(\d+)")


def parse_pid_camid(path: str, pattern: Pattern = PID_CAM_PATTERN,
                    num_cameras: Optional[int] = None) -> Tuple[int, int]:
    """Person id and 0-based camera id from a file name such as ``0019_c1_f0051230.jpg``.

    Args:
        path: image path; only its base name is parsed.
        pattern: regular expression with two groups, pid and 1-based camera index.
        num_cameras: if given, the camera index must lie in ``1..num_cameras``.
    Returns:
        ``(pid, camid)`` with ``camid`` 0-based.
    Raises:
        DatasetFormatError: the name does not match, or the camera index is out of range.
    """
    name = os.path.basename(path)
    m = pattern.match(name)
    if m is None:
        raise DatasetFormatError(
            f"cannot parse person id and camera from file name {name!r} ({path}); "
            f"expected a name like 0019_c1_f0051230.jpg")
    pid, cam = int(m.group(1)), int(m.group(2))
    if cam < 1 or (num_cameras is not None and cam > num_cameras):
        raise DatasetFormatError(
            f"camera index c{cam} out of range 1..{num_cameras or 'N'} in file name {name!r} ({path})")
    return pid, cam - 1


def parse_int_name(name: str, path: str, what: str) -> int:
    """``int(name)`` for an identity folder or numeric file stem, or ``DatasetFormatError`` naming ``path``."""
    try:
        return int(name)
    except ValueError:
        raise DatasetFormatError(f"cannot parse {what} from {name!r} ({path}); expected an integer") from None
