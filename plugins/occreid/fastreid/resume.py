"""Exact resume of a seeded training run: ``train_net.py --resume`` continues where a run stopped and ends
with the same weights and metrics as a run that was never stopped.

FastReID's checkpoints hold the model, optimizer, LR scheduler and epoch; three random streams are not in
them, so a resumed run draws other batches and augmentations than the run it continues:

1. the P x K sampler restarts from its first index (its seed is drawn once, when the loader is built); worse,
   FastReID's ``NaiveIdentitySampler`` draws from numpy's *global* generator, in the loader's background
   thread, and re-seeds it when iteration starts, so its batches also depend on what the main thread draws
   meanwhile;
2. the augmentations in the data-loader workers restart from the workers' initial seeds;
3. the main process's python / numpy / torch generators (model-side randomness: SGR's Batch Erasing,
   AlignedReID's occlusion simulator, dropout) restart from ``SEED``.

With ``SEED`` >= 0, occreid makes each of them resumable:

1. :class:`SeededIdentitySampler` is FastReID's P x K algorithm with a private generator;
   :class:`SeededSampleStream` wraps the sampler and numbers what it yields: sample ``n`` of rank ``r``
   is ``(index, SEED, r, n)``; on resume the stream skips the ``start_iter x mini-batch`` samples already trained on;
2. the dataset seeds python / numpy / torch from ``(SEED, r, n)`` before augmenting sample ``n``
   (:func:`seeded_index`), so an augmentation depends on the sample's position in the stream, not on which
   worker drew it or how many images that worker saw before;
3. :class:`RNGStates` is a checkpointable of the main process's generators, saved with every checkpoint and
   restored on resume.

Data-loader workers are separate processes, so seeding their global generators per sample is private to
them. With ``DATALOADER.NUM_WORKERS 0`` FastReID loads batches in a background thread of the main process,
which shares the main generators: a seeded run is then not repeatable (this was so before resume existed);
keep ``NUM_WORKERS`` >= 1 for exact runs.
"""

import copy
import itertools
import random
from typing import Iterator, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Sampler


class SeededIdentitySampler(Sampler):
    """FastReID's ``NaiveIdentitySampler`` (P x K: ``mini_batch / K`` identities, K images each, an identity
    leaves the epoch's pool when fewer than K of its images are left), drawing from its own
    ``numpy.random.RandomState(seed)`` instead of numpy's global generator. Built from a
    ``NaiveIdentitySampler``: same identities, K, batch size, rank / world size and seed.

    Per rank it yields every ``world_size``-th index of the global batches, reordered with FastReID's
    ``reorder_index`` (each rank gets whole identities), as FastReID's sampler does.
    """

    def __init__(self, naive_sampler):
        self.pid_index = naive_sampler.pid_index
        self.pids = naive_sampler.pids
        self.num_instances = naive_sampler.num_instances
        self.num_pids_per_batch = naive_sampler.num_pids_per_batch
        self.batch_size = naive_sampler.batch_size  # global: mini-batch x world size
        self._rank, self._world_size = naive_sampler._rank, naive_sampler._world_size
        self._seed = naive_sampler._seed

    def __iter__(self):
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self):
        from fastreid.data.samplers.triplet_sampler import reorder_index
        rng = np.random.RandomState(self._seed)
        while True:
            avl_pids = copy.deepcopy(self.pids)
            batch_idxs_dict = {}
            batch_indices = []
            while len(avl_pids) >= self.num_pids_per_batch:
                selected_pids = rng.choice(avl_pids, self.num_pids_per_batch, replace=False).tolist()
                for pid in selected_pids:
                    if pid not in batch_idxs_dict:
                        idxs = copy.deepcopy(self.pid_index[pid])
                        if len(idxs) < self.num_instances:
                            idxs = rng.choice(idxs, size=self.num_instances, replace=True).tolist()
                        rng.shuffle(idxs)
                        batch_idxs_dict[pid] = idxs
                    avl_idxs = batch_idxs_dict[pid]
                    for _ in range(self.num_instances):
                        batch_indices.append(avl_idxs.pop(0))
                    if len(avl_idxs) < self.num_instances:
                        avl_pids.remove(pid)
                if len(batch_indices) == self.batch_size:
                    yield from reorder_index(batch_indices, self._world_size)
                    batch_indices = []


class SeededSampleStream(Sampler):
    """Wrap a FastReID training sampler (infinite, per rank): yields ``(index, seed, rank, n)`` with ``n`` the
    running number of the sample on this rank (0, 1, 2, ...), starting at :attr:`start`.

    Args:
        sampler: yields dataset indices (int), e.g. ``NaiveIdentitySampler``; its own seed is fixed when it is
            built (``SEED`` >= 0), so its sequence is the same in every run.
        seed: the run's ``SEED`` (>= 0); carried to the dataset with each index.
        rank: this process's rank (its samples are seeded apart from the other ranks').
    Raises:
        ValueError: ``seed`` < 0 (a random run has nothing to resume exactly).
    """

    def __init__(self, sampler, seed: int, rank: int = 0):
        if seed < 0:
            raise ValueError(f"SeededSampleStream needs SEED >= 0, got {seed}")
        self.sampler = sampler
        self.seed = int(seed)
        self.rank = int(rank)
        self.start = 0

    def skip_to(self, n: int) -> None:
        """Continue at sample ``n`` (the ``n`` samples before were trained on before the resume)."""
        if n < 0:
            raise ValueError(f"cannot skip to sample {n}")
        self.start = int(n)

    def __iter__(self) -> Iterator[Tuple[int, int, int, int]]:
        stream = itertools.islice(iter(self.sampler), self.start, None)
        for n, index in enumerate(stream, self.start):
            yield (int(index), self.seed, self.rank, n)

    def __len__(self):  # FastReID's samplers are infinite; BatchSampler never asks
        raise TypeError("SeededSampleStream is infinite")


def sample_seed(seed: int, rank: int, n: int) -> int:
    """A 63-bit seed for sample ``n`` of rank ``rank`` in a run seeded with ``seed`` (numpy's SeedSequence:
    nearby inputs give unrelated seeds)."""
    words = np.random.SeedSequence([seed, rank, n]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def seeded_index(index: Union[int, Tuple[int, int, int, int]]) -> int:
    """The dataset index of ``index``; when it comes from :class:`SeededSampleStream` (a tuple
    ``(index, seed, rank, n)``), first seed python's ``random``, numpy and torch for that sample."""
    if isinstance(index, tuple):
        index, seed, rank, n = index
        s = sample_seed(seed, rank, n)
        random.seed(s)
        np.random.seed(s % (2 ** 32))
        torch.manual_seed(s)
    return index


class RNGStates:
    """Checkpointable (``state_dict`` / ``load_state_dict``) of the main process's python, numpy and torch
    (CPU, and CUDA when present) generators. The state holds only tensors, ints and lists, so it loads with
    ``torch.load(weights_only=True)``."""

    def state_dict(self) -> dict:
        py_version, py_state, py_gauss = random.getstate()
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        state = {"python": [py_version, list(py_state), py_gauss],
                 "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                           float(np_gauss)],
                 "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore the generators. Raises KeyError naming a missing part."""
        for part in ("python", "numpy", "torch"):
            if part not in state:
                raise KeyError(f"RNG state has no {part!r} part")
        version, py_state, gauss = state["python"]
        random.setstate((version, tuple(py_state), gauss))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
