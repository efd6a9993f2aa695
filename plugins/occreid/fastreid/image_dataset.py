"""FastReID image datasets whose failures name the file, and a test set read from a decoded-image cache.

:class:`ReIDImageDataset` is what :class:`~occreid.fastreid.trainer.OccReIDTrainer`, the ``occreid`` commands and
AMD-Net's :class:`~occreid.fastreid.parsing_data.ParsingReIDDataset` read images with; items are numbered by
:class:`~occreid.fastreid.resume.SeededSampleStream` (per-sample seeds, :func:`~occreid.fastreid.resume.seeded_index`).
:mod:`occreid.fastreid.trainer` re-exports both classes (``from occreid.fastreid.trainer import ReIDImageDataset``
and ``from occreid.fastreid import ReIDImageDataset`` keep working).
"""

from fastreid.data.common import CommDataset

from .resume import seeded_index


class ReIDImageDataset(CommDataset):
    """FastReID's ``CommDataset`` whose unreadable images raise ``RuntimeError`` naming the file."""

    def __getitem__(self, index):
        index = seeded_index(index)  # (index, SEED, rank, n) from SeededSampleStream: per-sample seeds
        try:
            return super().__getitem__(index)
        except Exception as e:  # PIL / OSError / decoding errors carry no path
            raise RuntimeError(f"cannot read image {self.img_items[index][0]}: {e}") from e


class CachedReIDImageDataset(ReIDImageDataset):
    """A test set read from a :class:`occreid.data.image_cache.DecodedImageCache` (``DATALOADER.CACHE_DIR``): the
    images decoded and resized once; the transforms after the resize (to tensor) run per item. Same tensors as
    :class:`ReIDImageDataset` with the same transforms (tests/test_throughput.py)."""

    def __init__(self, img_items, transform, cache_dir):
        from torchvision.transforms import Compose, Resize
        from fastreid.data.data_utils import read_image
        from occreid.data.image_cache import DecodedImageCache
        steps = list(transform.transforms)
        if not steps or not isinstance(steps[0], Resize):
            raise ValueError("DATALOADER.CACHE_DIR: the test transforms must start with a resize")
        resize, size = steps[0], steps[0].size
        super().__init__(img_items, Compose(steps[1:]), relabel=False)
        self.cache = DecodedImageCache([it[0] for it in img_items], tuple(size), cache_dir, read_image, resize,
                                       repr(resize))

    def __getitem__(self, index):
        index = seeded_index(index)
        path, pid, camid = self.img_items[index]
        return {"images": self.transform(self.cache[index]), "targets": pid, "camids": camid, "img_paths": path}
