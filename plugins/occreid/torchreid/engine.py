"""TorchReID engines for occreid's models.

- :class:`OccReIDEngine`: trains any :class:`~occreid.torchreid.models.FastReIDModel` with the method's own
  losses (the model's ``forward(x, pids)``: the same loss code as through FastReID), for the methods whose
  losses TorchReID's ``ImageSoftmaxEngine`` / ``ImageTripletEngine`` cannot express (all of occreid's).
- :class:`OccReIDEvalMixin` (in all three engines below): TorchReID's evaluation (its feature extraction,
  its ``evaluate_rank``) with the test distance of the model's FastReID config
  (:func:`occreid.fastreid.evaluator.compute_test_distance`: ``TEST.METRIC`` or the method's own distance, e.g.
  OCNet's Eq. 4) and, with ``rerank=True``, occreid's k-reciprocal re-ranking
  (:func:`occreid.evaluation.rerank.re_ranking`) in place of TorchReID's dense one. TorchReID's
  ``dist_metric`` / ``normalize_feature`` arguments are used only for models that are not occreid models.
  Results: ``self.results[dataset]`` and ``self.last_results`` (Rank-1/5/10, mAP, mINP in %).
- :class:`OccReIDSoftmaxEngine`, :class:`OccReIDTripletEngine`: TorchReID's two engines with that evaluation.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .compat import torchreid_modules

_tr = torchreid_modules()


class OccReIDEvalMixin:
    """TorchReID ``Engine._evaluate`` with occreid's test distance and re-ranking (see the module docstring)."""

    last_results = None

    @property
    def results(self):
        """``{dataset name: {Rank-1, Rank-5, Rank-10, mAP, mINP}}`` (%) of this engine's evaluations, the last per set."""
        if "_occreid_results" not in self.__dict__:
            self._occreid_results = {}
        return self._occreid_results

    @torch.no_grad()
    def _evaluate(self, dataset_name="", query_loader=None, gallery_loader=None, dist_metric="euclidean",
                  normalize_feature=False, visrank=False, visrank_topk=10, save_dir="", use_metric_cuhk03=False,
                  ranks=(1, 5, 10, 20), rerank=False):
        from occreid.fastreid.evaluator import compute_test_distance
        from fastreid.evaluation.rank import evaluate_rank as fastreid_evaluate_rank  # mINP
        from .models import FastReIDModel

        from tqdm import tqdm

        def extract(loader):
            f_, pids_, camids_ = [], [], []
            for data in tqdm(loader, desc=f"{dataset_name} features", unit="batch", leave=False):
                imgs, pids, camids = self.parse_data_for_eval(data)
                if self.use_gpu:
                    imgs = imgs.cuda()
                f_.append(self.extract_features(imgs).float().cpu())
                pids_.extend(pids.tolist())
                camids_.extend(camids.tolist())
            return torch.cat(f_), np.asarray(pids_), np.asarray(camids_)

        start = time.time()
        qf, q_pids, q_camids = extract(query_loader)
        gf, g_pids, g_camids = extract(gallery_loader)
        print(f"Extracted {qf.shape[0]} query / {gf.shape[0]} gallery features ({qf.shape[1]}-d) "
              f"in {time.time() - start:.1f} s")
        model = self.model.module if hasattr(self.model, "module") else self.model
        if isinstance(model, FastReIDModel):
            cfg = model.cfg.clone()
            cfg.defrost()
            cfg.TEST.RERANK.ENABLED = bool(rerank) or cfg.TEST.RERANK.ENABLED
            cfg.freeze()
            fn = model.test_distance()
            what = f"{model.meta_architecture}'s own test distance" if fn else f"TEST.METRIC {cfg.TEST.METRIC}"
            rr = ", then occreid's re-ranking" if cfg.TEST.RERANK.ENABLED else ""
            print(f"Distance: {what}{rr} (the model's FastReID config)")
            distmat = compute_test_distance(cfg, qf, gf, fn)
        else:
            from occreid.evaluation.rerank import re_ranking
            if normalize_feature:
                qf, gf = torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1)
            distmat = _tr.metrics.compute_distance_matrix(qf, gf, dist_metric).numpy()
            if rerank:
                print("Applying person re-ranking (occreid) ...")
                distmat = re_ranking(qf, gf, metric="cosine" if dist_metric == "cosine" else "euclidean",
                                     mode="zhong")
        cmc, mAP = _tr.metrics.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                                             use_metric_cuhk03=use_metric_cuhk03)
        _, _, all_inp = fastreid_evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
        self.last_results = {"Rank-1": float(cmc[0]) * 100, "Rank-5": float(cmc[4]) * 100,
                             "Rank-10": float(cmc[9]) * 100, "mAP": float(mAP) * 100,
                             "mINP": float(np.mean(all_inp)) * 100}
        print("** Results **")
        print(f"mAP: {mAP:.2%}   mINP: {np.mean(all_inp):.2%}")
        for r in ranks:
            print(f"Rank-{r:<3}: {cmc[r - 1]:.2%}")
        if visrank:
            _tr.utils.visualize_ranked_results(distmat, self.datamanager.fetch_test_loaders(dataset_name),
                                               self.datamanager.data_type, width=self.datamanager.width,
                                               height=self.datamanager.height,
                                               save_dir=f"{save_dir}/visrank_{dataset_name}", topk=visrank_topk)
        self.results[dataset_name] = dict(self.last_results)
        return float(cmc[0]), float(mAP)  # python floats: TorchReID saves rank1 in its checkpoints


class OccReIDEngine(OccReIDEvalMixin, _tr.engine.Engine):
    """Trains an occreid model with its own losses (``model(imgs, pids)`` -> loss dict, summed).

    Args:
        datamanager: TorchReID ``ImageDataManager``.
        model: a :class:`~occreid.torchreid.models.FastReIDModel` (one device; ``nn.DataParallel`` is not
            supported: its gather of the loss dict and FastReID's shared event storage do not mix).
        optimizer, scheduler: TorchReID's (``torchreid.optim.build_optimizer`` / ``build_lr_scheduler``).
        use_gpu: CUDA.
    """

    def __init__(self, datamanager, model, optimizer, scheduler=None, use_gpu=True):
        super().__init__(datamanager, use_gpu)
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.register_model("model", model, optimizer, scheduler)

    def forward_backward(self, data):
        imgs, pids = self.parse_data_for_train(data)
        if self.use_gpu:
            imgs, pids = imgs.cuda(), pids.cuda()
        losses = self.model(imgs, pids)
        loss = sum(losses.values())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        summary = {k: float(v.detach()) for k, v in losses.items()}
        summary["loss"] = float(loss.detach())
        return summary


class OccReIDSoftmaxEngine(OccReIDEvalMixin, _tr.engine.ImageSoftmaxEngine):
    """TorchReID's ``ImageSoftmaxEngine`` with occreid's evaluation."""


class OccReIDTripletEngine(OccReIDEvalMixin, _tr.engine.ImageTripletEngine):
    """TorchReID's ``ImageTripletEngine`` with occreid's evaluation."""
