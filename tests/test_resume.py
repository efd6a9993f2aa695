"""Exact resume (``train_net.py --resume``, occreid.fastreid.resume): a seeded run stopped after its first epoch
and resumed ends with the same weights, loss curve and metrics as the same run never stopped."""

import os
import random

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOT_CPU = os.path.join(REPO, "projects", "BoT", "configs", "occluded_duke_osnet_x0_25_cpu.yml")


class _Stop(Exception):
    pass


def _trainer(config_file, out_dir, data_root):
    from fastreid.config import get_cfg
    from occreid.fastreid import OccReIDTrainer, add_occreid_config
    from occreid.fastreid.config import expand_config_paths
    cfg = add_occreid_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list([
        "SEED", 5, "DATASETS.SUBSET.TRAIN_IDS", 6, "DATASETS.SUBSET.TEST_IDS", 4, "SOLVER.IMS_PER_BATCH", 16,
        "SOLVER.MAX_EPOCH", 2, "SOLVER.WARMUP_ITERS", 2, "SOLVER.STEPS", [1], "TEST.EVAL_PERIOD", 1,
        "SOLVER.CHECKPOINT_PERIOD", 1, "DATALOADER.NUM_WORKERS", 2, "SOLVER.LOG_PERIOD", 1,
        "OUTPUT_DIR", str(out_dir)])
    expand_config_paths(cfg)
    os.makedirs(out_dir, exist_ok=True)
    return OccReIDTrainer(cfg)


def _stop_after_first_epoch(trainer):
    from fastreid.engine import hooks

    class StopHook(hooks.HookBase):  # after the checkpointer: the epoch-0 checkpoint is on disk
        def after_epoch(self):
            if self.trainer.epoch == 0:
                raise _Stop()
    trainer.register_hooks([StopHook()])


def _losses(trainer):
    return [v for v, _ in trainer.storage.history("total_loss").values()]


@pytest.mark.realdata
@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(real_data_root, tmp_path, monkeypatch):
    """BoT: the P x K sampler, flips, padding crops and random erasing, the optimizer and LR schedule: 2 epochs straight
    vs 1 epoch, stop, ``--resume``, 1 epoch. (SGR, with model-side randomness too (Batch Erasing in the forward pass)
    and the momentum mean feature, passed the same test when it was written; BoT keeps CI shorter.)"""
    config_file = BOT_CPU
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    straight = _trainer(config_file, tmp_path / "straight", real_data_root)
    straight.resume_or_load(resume=False)
    res_straight = straight.train()
    iters = straight.iters_per_epoch

    first = _trainer(config_file, tmp_path / "stopped", real_data_root)
    first.resume_or_load(resume=False)
    _stop_after_first_epoch(first)
    with pytest.raises(_Stop):
        first.train()
    assert os.path.isfile(tmp_path / "stopped" / "last_checkpoint")
    # other draws in between must not matter: the resumed run restores the generators from the checkpoint
    random.random(), np.random.rand(), torch.rand(3)

    resumed = _trainer(config_file, tmp_path / "stopped", real_data_root)
    resumed.resume_or_load(resume=True)
    assert resumed.start_epoch == 1
    res_resumed = resumed.train()

    # FastReID's storage keeps the loss of every iteration: epoch 2 of both runs
    assert _losses(resumed)[-iters:] == _losses(straight)[-iters:]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for m in ("Rank-1", "mAP", "mINP"):
        assert res_resumed[m] == res_straight[m]


def test_rng_states_round_trip_through_weights_only_checkpoint(tmp_path):
    """RNGStates holds only tensors / ints / lists: it survives torch.save + torch.load(weights_only=True)
    and restores python, numpy and torch to the saved point."""
    from occreid.fastreid.resume import RNGStates
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = RNGStates().state_dict()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    torch.save({"rng": state}, tmp_path / "c.pth")
    loaded = torch.load(tmp_path / "c.pth", weights_only=True)["rng"]
    RNGStates().load_state_dict(loaded)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    with pytest.raises(KeyError, match="numpy"):
        RNGStates().load_state_dict({"python": loaded["python"], "torch": loaded["torch"]})


def test_seeded_sample_stream_numbers_and_skips():
    """Sample n of the stream is (index, SEED, rank, n); skip_to(k) continues at sample k of the same sequence;
    the per-sample seeds depend on (SEED, rank, n) only."""
    from occreid.fastreid.resume import SeededSampleStream, sample_seed, seeded_index
    import itertools
    base = list(range(100, 200))
    stream = SeededSampleStream(base, seed=4, rank=1)
    first = list(itertools.islice(iter(stream), 10))
    assert first[3] == (103, 4, 1, 3)
    stream.skip_to(6)
    assert list(itertools.islice(iter(stream), 4)) == first[6:10]
    assert sample_seed(4, 1, 3) == sample_seed(4, 1, 3) != sample_seed(4, 0, 3) != sample_seed(4, 1, 4)
    assert seeded_index(first[3]) == 103 and seeded_index(7) == 7
    seeded_index(first[3])  # the draws after seeding a sample are fixed by (SEED, rank, n)
    x = torch.rand(2)
    seeded_index(first[3])
    assert torch.equal(torch.rand(2), x)
    seeded_index(first[4])
    assert not torch.equal(torch.rand(2), x)
    with pytest.raises(ValueError, match="SEED"):
        SeededSampleStream(base, seed=-1)
