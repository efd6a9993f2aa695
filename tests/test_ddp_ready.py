"""DistributedDataParallel (without ``find_unused_parameters``, FastReID's setting) needs every trainable parameter
to receive a gradient in every training step, or the second step fails ("Expected to have finished reduction in the
prior iteration"). Every config of every method, headline and ablation rows (built on the tiny OSNet x0.25 of
``tiny_osnet_cfg``, random weights): one training step on a tiny batch, with parsing labels for AMD-Net, reaches every
parameter. Rows that differ from another only in a number (PAN's gamma, AlignedReID's alpha) and the paper
configs of other datasets (the same modules as the Occluded-Duke one) are not repeated; SGR's rows are built on
ResNet-50 as written (its DNL placement needs ResNet stages)."""

import glob
import os

import pytest
import torch

from conftest import build_cfg_and_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "projects", "*", "configs", "occluded_duke_osnet_x0_25_cpu.yml"))
                 + [p for p in glob.glob(os.path.join(REPO, "projects", "*", "configs", "ablation", "*.yml"))
                    if not os.path.basename(p).startswith(("fig2_gamma_", "alpha_0."))])


def _batch(cfg, b=8):
    g = torch.Generator().manual_seed(0)
    h, w = 128, 64
    out = {"images": torch.rand(b, 3, h, w, generator=g) * 255, "targets": torch.arange(b // 2).repeat_interleave(2)}
    if cfg.MODEL.META_ARCHITECTURE == "AMDNet":
        out["parsing"] = torch.randint(-1, 6, (b, h, w), generator=g)
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, os.path.join(REPO, "projects")) for p in CONFIGS])
def test_every_parameter_gets_a_gradient_in_a_training_step(path):
    from fastreid.utils.events import EventStorage
    cfg, model = build_cfg_and_model(path, resnet="/SGR/configs/ablation/" in path)
    model.train()
    with EventStorage(0):
        losses = model(_batch(cfg))
    sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"{len(unused)} parameters get no gradient (DDP would fail): {unused[:5]}"
