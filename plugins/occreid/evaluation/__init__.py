"""Evaluation: scalable k-reciprocal re-ranking (:mod:`occreid.evaluation.rerank`)."""

from .rerank import re_ranking, re_ranking_topk

__all__ = ["re_ranking", "re_ranking_topk"]
