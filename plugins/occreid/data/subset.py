"""Deterministic identity subsets of a dataset, for quick runs and tests (toolbox-free)."""

from __future__ import annotations

import random
from typing import Hashable, Iterable, List, Sequence, Set, Tuple

from .common import ReIDSplits

SUBSET_MODES = ("first", "random")


def select_identities(pids: Iterable[Hashable], num_ids: int, mode: str = "first", seed: int = 0) -> Set:
    """Choose ``num_ids`` distinct identities from ``pids``.

    Args:
        pids: person ids (any sortable type; repeats allowed).
        num_ids: how many to keep; ``0`` or more than there are keeps all.
        mode: ``"first"``: the ``num_ids`` smallest ids; ``"random"``: a uniform sample drawn with
            ``random.Random(seed)`` from the sorted ids (the same ids on every machine).
        seed: seed of the ``"random"`` mode.
    Returns:
        the set of chosen ids.
    Raises:
        ValueError: unknown ``mode`` or negative ``num_ids``.
    """
    if mode not in SUBSET_MODES:
        raise ValueError(f"subset mode must be one of {SUBSET_MODES}, got {mode!r}")
    if num_ids < 0:
        raise ValueError(f"number of identities must be >= 0, got {num_ids}")
    unique = sorted(set(pids))
    if num_ids == 0 or num_ids >= len(unique):
        return set(unique)
    if mode == "first":
        return set(unique[:num_ids])
    return set(random.Random(seed).sample(unique, num_ids))


def filter_items(items: Sequence[Tuple], keep: Set) -> List[Tuple]:
    """The ``(img_path, pid, camid)`` items whose pid is in ``keep``, in their original order."""
    return [it for it in items if it[1] in keep]


def subset_splits(splits: ReIDSplits, train_ids: int = 0, test_ids: int = 0,
                  mode: str = "first", seed: int = 0) -> ReIDSplits:
    """Restrict a dataset to a deterministic subset of identities.

    The training split keeps ``train_ids`` identities. The test side keeps ``test_ids`` of the query
    identities: their query images, and the gallery images of those identities (other gallery
    identities, the distractors, are dropped, so metrics on a subset are higher than on the full set).
    ``0`` keeps a split whole.
    """
    train, query, gallery = splits
    if train_ids:
        train = filter_items(train, select_identities((it[1] for it in train), train_ids, mode, seed))
    if test_ids:
        keep = select_identities((it[1] for it in query), test_ids, mode, seed)
        query, gallery = filter_items(query, keep), filter_items(gallery, keep)
    return ReIDSplits(list(train), list(query), list(gallery))
