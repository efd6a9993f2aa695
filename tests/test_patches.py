"""The third_party_patches/ work: fastreid and torchreid import and run on the CPU with torch 2,
and loading a checkpoint never executes pickled code."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_toolboxes_import():
    code = "import fastreid.data, fastreid.engine, fastreid.evaluation, torchreid, torchvision, faiss, occreid"
    subprocess.run([sys.executable, "-W", "error::ImportWarning", "-c", code], check=True)
    import torchreid
    assert hasattr(torchreid, "reid")  # PyPI torchreid 0.2.5 layout: torchreid.reid.*


def test_cython_ranker_built():
    from fastreid.evaluation import rank
    assert rank.IS_CYTHON_AVAI


def test_device_default_is_cpu_without_cuda():
    from fastreid.config import get_cfg
    assert get_cfg().MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")


def test_dataloaderx_iterates_on_cpu():
    from fastreid.data.build import fast_batch_collator
    from fastreid.data.data_utils import DataLoaderX
    data = [{"images": torch.full((3, 2, 2), float(i)), "targets": i} for i in range(6)]
    loader = DataLoaderX(0, dataset=data, batch_size=4, collate_fn=fast_batch_collator)
    batches = list(loader)
    assert [b["targets"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5]]
    assert batches[1]["images"][1, 0, 0, 0].item() == 5.0


def test_euclidean_distance_uses_torch2_addmm():
    from fastreid.utils.compute_dist import build_dist
    a, b = torch.randn(5, 8), torch.randn(7, 8)
    d = build_dist(a, b, "euclidean")
    np.testing.assert_allclose(d, (torch.cdist(a, b) ** 2).numpy(), rtol=1e-4, atol=1e-4)


def test_jaccard_rerank_falls_back_to_cpu_faiss():
    from fastreid.utils.compute_dist import compute_jaccard_distance
    torch.manual_seed(0)
    centers = torch.randn(4, 16) * 3
    feats = torch.cat([c + 0.1 * torch.randn(10, 16) for c in centers])
    jd = compute_jaccard_distance(feats, k1=5, k2=2, search_option=0)
    assert jd.shape == (40, 40)
    same = jd[:10, :10].mean()
    other = jd[:10, 10:].mean()
    assert 0 <= same < other <= 1


class _Exploit:
    """Unpickling this would create a file: the marker that pickled code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _Exploit(str(marker))}, path)
    return path, marker


def test_fastreid_checkpointer_refuses_pickled_code(tmp_path):
    from fastreid.utils.checkpoint import Checkpointer
    path, marker = _malicious_checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        Checkpointer(torch.nn.Linear(2, 2)).load(str(path))
    assert not marker.exists()


def test_fastreid_checkpoint_with_numpy_and_scheduler_round_trips(tmp_path):
    from fastreid.utils.checkpoint import Checkpointer
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 5])  # holds a Counter
    ck = Checkpointer(model, str(tmp_path), optimizer=opt, lr_sched=sched)
    ck.save("m", epoch=np.int64(3), score=np.float64(0.5), arr=np.arange(3))
    other = torch.nn.Linear(3, 2)
    extra = Checkpointer(other, str(tmp_path), optimizer=torch.optim.SGD(other.parameters(), lr=0.1),
                         lr_sched=torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1])).load(
        str(tmp_path / "m.pth"))
    assert torch.equal(other.weight, model.weight)
    assert int(extra["epoch"]) == 3 and list(extra["arr"]) == [0, 1, 2]


def test_torchreid_load_checkpoint_refuses_pickled_code(tmp_path):
    from torchreid.reid.utils.torchtools import load_checkpoint
    path, marker = _malicious_checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(str(path))
    assert not marker.exists()
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, good)
    assert load_checkpoint(str(good))["epoch"] == 3


def test_torchreid_hacnn_runs_on_cpu():
    from torchreid.reid.models import build_model
    model = build_model("hacnn", num_classes=5, pretrained=False, use_gpu=True).train()
    out = model(torch.randn(2, 3, 160, 64))
    assert out[0].shape == (2, 5)


def test_torchreid_osnet_loads_shared_checkpoint_format(tmp_path):
    from torchreid.reid.models import build_model
    from torchreid.reid.utils.torchtools import load_pretrained_weights
    model = build_model("osnet_x0_25", num_classes=3, pretrained=False)
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    load_pretrained_weights(build_model("osnet_x0_25", num_classes=3, pretrained=False), str(path))


def test_fastreid_baseline_training_steps_update_weights_on_cpu():
    """FastReID's own SimpleTrainer.run_step (ContiguousParams optimizer) on a Baseline: every
    parameter that gets a gradient changes, and the loss on a fixed batch goes down."""
    from fastreid.config import get_cfg
    from fastreid.engine.train_loop import SimpleTrainer
    from fastreid.modeling import build_model
    from fastreid.solver import build_optimizer
    from fastreid.utils.events import EventStorage
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "Base-BoT.yml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_osnet_backbone"
    cfg.MODEL.BACKBONE.DEPTH = "x0_25"
    cfg.MODEL.BACKBONE.FEAT_DIM = 128
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.SOLVER.BASE_LR = 1e-3
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer, param_wrapper = build_optimizer(cfg, model)
    images = torch.rand(8, 3, 64, 32) * 255
    targets = torch.arange(4).repeat_interleave(2)

    def batches():
        while True:
            yield {"images": images.clone(), "targets": targets.clone()}

    trainer = SimpleTrainer(model, batches(), optimizer, param_wrapper)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with EventStorage(0) as storage:
        for it in range(8):
            trainer.iter = it
            storage.iter = it
            trainer.run_step()
        losses = [v for v, _ in storage.history("total_loss").values()]
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert len(changed) > 0.9 * len(before), f"only {len(changed)}/{len(before)} parameters changed"
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
