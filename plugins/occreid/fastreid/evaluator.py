"""``OccReIDEvaluator``: FastReID's ``ReidEvaluator`` with occreid's re-ranking and custom distances.

- ``TEST.RERANK.ENABLED`` re-ranks with :func:`occreid.evaluation.rerank.re_ranking` (CPU or CUDA,
  O(N k1) memory) instead of FastReID's dense ``compute_jaccard_distance``. ``TEST.RERANK.MODE``
  ``fastreid`` (default) gives the numbers FastReID's own re-ranking gives; ``zhong`` is Zhong et al.'s
  reference formulation (TorchReID's). ``TEST.RERANK.SEARCH`` picks the k-NN search.
- ``distance_fn(query_feats, gallery_feats) -> (q, g) array`` replaces the base distance (methods
  such as OCNet combine two features' distances); with re-ranking it is the distance that is mixed
  with the Jaccard distance, while neighbourhoods come from the features.
- ``TEST.AQE`` (average query expansion) and ``TEST.METRIC`` work as in FastReID.
"""

import copy
import logging
from collections import OrderedDict

import numpy as np
import torch
from fastreid.evaluation import ReidEvaluator
from fastreid.evaluation.query_expansion import aqe
from fastreid.evaluation.rank import evaluate_rank
from fastreid.utils import comm
from fastreid.utils.compute_dist import build_dist

from occreid.evaluation.rerank import re_ranking

logger = logging.getLogger(__name__)


class OccReIDEvaluator(ReidEvaluator):
    """Re-identification evaluator: CMC Rank-1/5/10, mAP, mINP (%), optionally re-ranked.

    Args:
        cfg: FastReID config (``TEST.METRIC``, ``TEST.AQE.*``, ``TEST.RERANK.*``).
        num_query: the first ``num_query`` processed images are the query, the rest the gallery.
        output_dir: unused (FastReID's signature).
        distance_fn: optional ``(query_feats (q, D), gallery_feats (g, D)) -> (q, g)`` distance.
    """

    def __init__(self, cfg, num_query, output_dir=None, distance_fn=None):
        super().__init__(cfg, num_query, output_dir)
        self.distance_fn = distance_fn
        self.last_distance = None

    def evaluate(self):
        if comm.get_world_size() > 1:
            comm.synchronize()
            predictions = comm.gather(self._predictions, dst=0)
            predictions = [p for part in predictions for p in part]
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions

        features = torch.cat([p["feats"] for p in predictions])
        pids = torch.cat([p["pids"] for p in predictions]).numpy()
        camids = torch.cat([p["camids"] for p in predictions]).numpy()
        nq = self._num_query
        qf, gf = features[:nq], features[nq:]
        dist = compute_test_distance(self.cfg, qf, gf, self.distance_fn)
        self.last_distance = dist

        cmc, all_ap, all_inp = evaluate_rank(dist, pids[:nq], pids[nq:], camids[:nq], camids[nq:])
        results = OrderedDict()
        for r in (1, 5, 10):
            results[f"Rank-{r}"] = cmc[r - 1] * 100
        results["mAP"] = np.mean(all_ap) * 100
        results["mINP"] = np.mean(all_inp) * 100
        results["metric"] = (np.mean(all_ap) + cmc[0]) / 2 * 100
        self._results = results
        return copy.deepcopy(results)


def compute_test_distance(cfg, qf, gf, distance_fn=None):
    """The (q, g) test distance of a FastReID config: AQE (``TEST.AQE``), then the method's own distance
    (``distance_fn``, e.g. OCNet's Eq. 4) or ``TEST.METRIC``, then occreid's re-ranking (``TEST.RERANK``).

    Shared by :class:`OccReIDEvaluator` and TorchReID's :class:`occreid.torchreid.engine.OccReIDEngine`, so one
    checkpoint gives one distance through either toolbox.

    Args:
        cfg: an occreid-extended FastReID config.
        qf, gf: (q, D) / (g, D) float torch tensors (CPU).
        distance_fn: optional ``(qf, gf) -> (q, g)`` distance.
    Returns:
        (q, g) float32 numpy array.
    """
    if cfg.TEST.AQE.ENABLED:
        logger.info("Test with AQE setting")
        qf, gf = aqe(qf, gf, cfg.TEST.AQE.QE_TIME, cfg.TEST.AQE.QE_K, cfg.TEST.AQE.ALPHA)

    if distance_fn is not None:
        dist = np.asarray(distance_fn(qf, gf), dtype=np.float32)
    else:
        dist = build_dist(qf, gf, cfg.TEST.METRIC)

    if cfg.TEST.RERANK.ENABLED:
        rr = cfg.TEST.RERANK
        logger.info(f"Re-ranking (occreid, mode={rr.MODE}, search={rr.SEARCH}, k1={rr.K1}, "
                    f"k2={rr.K2}, lambda={rr.LAMBDA}) of {len(qf)} queries x {len(gf)} gallery")
        dist = re_ranking(qf, gf, k1=rr.K1, k2=rr.K2, lambda_value=rr.LAMBDA,
                          metric="cosine" if cfg.TEST.METRIC == "cosine" else "euclidean",
                          mode=rr.MODE, search=rr.SEARCH,
                          base_distance=dist if (distance_fn is not None or rr.MODE == "fastreid") else None)
    return dist
