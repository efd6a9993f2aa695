"""A decoded-image cache: images decoded and resized once, kept as uint8 in one memory-mapped file.

Evaluation decodes every query and gallery JPEG and resizes it to the test size at every evaluation; on a CPU
machine with 2 cores that decoding competes with the model for the cores (benchmarks/results/throughput_cpu.md).
:class:`DecodedImageCache` does it once: a (N, H, W, 3) uint8 array in ``<root>/<key>.u8`` (memory-mapped, read by
every loader worker without copying) with ``<key>.json`` beside it, where the key is the sha256 of the image paths,
their sizes and modification times, the target size and the resize function's name: a changed, added or removed
image, or another size, gives another file, never a stale image. Writes go to a temporary file renamed into
place when complete, so an interrupted build is rebuilt, never read.

Toolbox-free (numpy, Pillow, tqdm).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Sequence, Tuple

import numpy as np
from PIL import Image


def cache_key(paths: Sequence[str], size: Tuple[int, int], resize_name: str) -> str:
    """sha256 (hex) of the paths with their byte sizes and modification times, ``size`` (H, W) and the resize's
    name. Raises FileNotFoundError naming a path that does not exist."""
    h = hashlib.sha256(json.dumps([list(size), resize_name]).encode())
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise FileNotFoundError(f"image not found: {p}") from None
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class DecodedImageCache:
    """Images ``paths`` decoded by ``read`` and resized by ``resize`` to ``size`` (H, W), as uint8 RGB, in a
    memory-mapped file under ``root`` (built on first use, with a progress bar).

    Args:
        paths: image files, in the order of the dataset that reads them.
        size: (H, W) of the cached images (the test size).
        root: folder of the cache files (created).
        read: path -> PIL image (RGB), e.g. FastReID's ``read_image``.
        resize: PIL image -> PIL image of ``size`` (e.g. the test transforms' ``Resize``), applied once.
        resize_name: what identifies ``resize`` in the key (e.g. ``repr(resize)``).
        progress: show a progress bar while building.
    Raises:
        FileNotFoundError: an image is missing. RuntimeError: an image cannot be decoded (names the file), or a
        resized image is not ``size``.
    """

    def __init__(self, paths: Sequence[str], size: Tuple[int, int], root: str, read: Callable,
                 resize: Callable, resize_name: str, progress: bool = True):
        self.paths = list(paths)
        self.size = (int(size[0]), int(size[1]))
        root = os.path.expanduser(root)
        os.makedirs(root, exist_ok=True)
        key = cache_key(self.paths, self.size, resize_name)
        self.file = os.path.join(root, f"{key}.u8")
        shape = (len(self.paths), self.size[0], self.size[1], 3)
        meta = os.path.join(root, f"{key}.json")
        if not (os.path.isfile(self.file) and os.path.isfile(meta)
                and os.path.getsize(self.file) == int(np.prod(shape))):
            self._build(shape, read, resize, meta, progress)
        self.array = np.memmap(self.file, dtype=np.uint8, mode="r", shape=shape)

    def _build(self, shape, read, resize, meta, progress):
        tmp = f"{self.file}.{os.getpid()}.tmp"
        out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        it = range(len(self.paths))
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc=f"caching {len(self.paths)} decoded images", unit="img")
        for i in it:
            try:
                img = resize(read(self.paths[i]))
            except Exception as e:  # noqa: BLE001 - decoding errors carry no path
                os.remove(tmp)
                raise RuntimeError(f"cannot read image {self.paths[i]}: {e}") from e
            a = np.asarray(img.convert("RGB"), dtype=np.uint8)
            if a.shape != shape[1:]:
                os.remove(tmp)
                raise RuntimeError(f"{self.paths[i]}: resized to {a.shape[:2]}, the cache holds {shape[1:3]}")
            out[i] = a
        out.flush()
        del out
        os.replace(tmp, self.file)
        with open(meta, "w") as f:
            json.dump({"images": len(self.paths), "size": list(self.size), "first": self.paths[:1]}, f)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Image.Image:
        """The cached image ``i`` as a PIL RGB image of ``size``."""
        return Image.fromarray(np.array(self.array[i]))
