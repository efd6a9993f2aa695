"""ONNX export of a trained occreid / FastReID model's inference graph (``occreid export``).

The exported graph takes ``images``: (B, 3, H, W) float32 RGB pixels in 0-255, resized to ``INPUT.SIZE_TEST``
(FastReID's test transform: bicubic resize, no normalisation; the model normalises with ``MODEL.PIXEL_MEAN/STD``),
with a dynamic batch size B, and returns ``features``: the model's test feature, (B, D) float32, exactly what
FastReID's evaluator receives:

- BoT / SBS / SGR / PAN: the feature its head gives at test time;
- OCNet: [F_final, F_BB] concatenated, the two features its Eq. 4 distance needs
  (:func:`occreid.fastreid.ocnet.ocnet_distance_from_cfg` splits them);
- AlignedReID: [global, local stripes flattened] (:func:`occreid.fastreid.aligned.aligned_distance_from_cfg`);
- AMD-Net: [f_g, f_t, f_c, part features, visibility] (:func:`occreid.fastreid.amdnet.amd_distance_from_cfg`).

Operators ONNX cannot take: AMD-Net's Spatial-frequency Interaction Module uses ``torch.fft.rfft2`` / ``angle`` /
``polar`` / ``irfft2`` on complex tensors, which ONNX does not have (torch's TorchScript exporter: "aten::fft_rfft2
is not supported"; its dynamo exporter fails on the complex ``ones_like``). For the export it switches to the same
transform written with real DFT matrices (``SpatialFrequencyInteraction.real_dft``), equal to float rounding.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


class FeatureGraph(nn.Module):
    """``images`` (B, 3, H, W), 0-255 -> the FastReID model's test feature (B, D)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model({"images": images})


def prepare_for_export(model: nn.Module) -> nn.Module:
    """Eval mode, and every module with an ONNX-friendly twin switched to it (AMD-Net's SIM: real DFT)."""
    from occreid.layers.amdnet import SpatialFrequencyInteraction
    model.eval()
    for m in model.modules():
        if isinstance(m, SpatialFrequencyInteraction):
            m.real_dft = True
    return model


def export_onnx(model: nn.Module, out: str, size=(256, 128), opset: int = 18, check: bool = True,
                atol: float = 1e-4) -> dict:
    """Export ``model`` (a built FastReID meta-architecture with its weights) to ``out``.

    Args:
        model: FastReID model; put in eval mode and export-prepared (:func:`prepare_for_export`).
        out: .onnx path (folders created).
        size: (H, W) of the input, ``INPUT.SIZE_TEST``.
        opset: ONNX opset.
        check: run the exported graph in onnxruntime on a random batch of 3 (another size than the traced 2) and
            compare with torch.
        atol: the largest |onnxruntime - torch| feature difference accepted by ``check``.
    Returns:
        ``{"path", "dim", "max_abs_diff"}``.
    Raises:
        RuntimeError: the check finds a difference above ``atol`` (names the file and the difference).
    """
    graph = FeatureGraph(prepare_for_export(model)).eval()
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    x = torch.rand(2, 3, *size) * 255
    with torch.no_grad():
        dim = graph(x.clone()).shape[1]
        torch.onnx.export(graph, (x,), out, input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    info = {"path": out, "dim": int(dim), "max_abs_diff": None}
    if check:
        y = torch.rand(3, 3, *size) * 255
        diff = float(np.abs(run_onnx(out, y.numpy()) - torch_features(graph, y)).max())
        info["max_abs_diff"] = diff
        if not diff <= atol:
            raise RuntimeError(f"{out}: onnxruntime and torch features differ by {diff:.3g} > {atol}")
    return info


def torch_features(graph: nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return graph(images.clone()).numpy()


def run_onnx(path: str, images: np.ndarray, session=None) -> np.ndarray:
    """Features of ``images`` (B, 3, H, W) float32 0-255 from the exported graph at ``path`` (onnxruntime, CPU)."""
    import onnxruntime as ort
    sess = session or ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(["features"], {"images": np.ascontiguousarray(images, dtype=np.float32)})[0]


def export_from_config(config_file: str, weights: str, out: str, opts=(), check: bool = True,
                       atol: float = 1e-4) -> dict:
    """Build the model of ``config_file`` (+ ``opts``), load ``weights`` (checked: a checkpoint of another model is
    an error naming the file; ``""``: the config's starting weights) and export it (:func:`export_onnx`)."""
    from fastreid.config import get_cfg
    from occreid.fastreid import OccReIDTrainer, add_occreid_config
    from occreid.fastreid.config import expand_config_paths
    from occreid.fastreid.trainer import load_checked_weights

    cfg = add_occreid_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    if weights:
        cfg.MODEL.BACKBONE.PRETRAIN = False
        cfg.MODEL.HEADS.NUM_CLASSES = 0
    expand_config_paths(cfg)
    model = OccReIDTrainer.build_model(cfg)
    if weights:
        load_checked_weights(model, weights)
    return export_onnx(model, out, size=tuple(cfg.INPUT.SIZE_TEST), check=check, atol=atol)
