"""InfoNCE over in-batch and hard negatives with the Qwen3-Embedding false-negative mask."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omniret.errors import ConfigError, DimensionError


class InfoNCELoss(nn.Module):
    """Contrastive loss on embeddings: each query against its positive, its hard negatives and the batch.

    For query ``q_i`` with positive ``d_i+`` (cosine scores ``s``, temperature ``tau``)::

        L_i = -log( e^{s(q_i,d_i+)/tau} / Z_i )
        Z_i = e^{s(q_i,d_i+)/tau} + sum_k m e^{s(q_i,d_ik-)/tau}            (own hard negatives)
              + sum_{j!=i} m e^{s(q_i,d_j)/tau}                             (other rows' positives and,
                                                                              with in_batch_hard_negatives,
                                                                              their hard negatives)
              + sum_{j!=i} m e^{s(q_i,q_j)/tau}                             (query_query)
              + sum_{j!=i} m e^{s(d_i+,d_j)/tau}                            (doc_doc)

    The mask ``m`` drops a candidate whose score exceeds the positive's score ``s(q_i,d_i+)`` plus
    ``margin`` (0.1 in the report): such a candidate is more likely an unlabelled positive than a
    negative. For the ``doc_doc`` term a copy of the positive (cosine 1) is dropped as well.
    ``margin=None`` turns the mask off.

    Inputs: ``query`` ``(B, d)``, ``positive`` ``(B, d)``, ``negatives`` ``(B, K, d)`` or None.
    Embeddings need not be normalised (the loss uses cosine similarity). Labels: none, row ``i``'s
    positive is ``positive[i]``.

    Example::

        loss = InfoNCELoss(temperature=0.05, margin=0.1)
        value = loss(q_emb, pos_emb, neg_emb)   # scalar, backprop into the embedder

    ``gather_across_devices=True`` (under ``torch.distributed``) scores each rank's queries against the
    positives, hard negatives and queries of **every** rank, gathered with gradients
    (``omniret.training.distributed.all_gather_with_grad``); the mask and the positives' columns are
    taken over the global batch, so the ranks' mean loss is the loss of one process on the whole batch.
    Every rank must pass the same shapes.

    Paper: Zhang et al., "Qwen3 Embedding: Advancing Text Embedding and Reranking Through Foundation
    Models" (2025), section 3 (improved contrastive loss); van den Oord et al. 2018 for InfoNCE.
    """

    citation = """@article{qwen3embedding,
  title={Qwen3 Embedding: Advancing Text Embedding and Reranking Through Foundation Models},
  author={Zhang, Yanzhao and Li, Mingxin and Long, Dingkun and Zhang, Xin and Lin, Huan and Yang, Baosong and
          Xie, Pengjun and Yang, An and Liu, Dayiheng and Lin, Junyang and Huang, Fei and Zhou, Jingren},
  journal={arXiv preprint arXiv:2506.05176},
  year={2025}
}"""

    def __init__(self, temperature: float = 0.05, margin: float | None = 0.1, *,
                 in_batch_hard_negatives: bool = True, query_query: bool = True, doc_doc: bool = True,
                 gather_across_devices: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.margin = None if margin is None else float(margin)
        self.in_batch_hard_negatives = in_batch_hard_negatives
        self.query_query = query_query
        self.doc_doc = doc_doc
        self.gather_across_devices = gather_across_devices

    @property
    def config(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "margin": self.margin,
                "in_batch_hard_negatives": self.in_batch_hard_negatives, "query_query": self.query_query,
                "doc_doc": self.doc_doc, "gather_across_devices": self.gather_across_devices}

    def forward(self, query: Tensor, positive: Tensor, negatives: Tensor | None = None) -> Tensor:
        if query.ndim != 2 or positive.shape != query.shape:
            raise DimensionError(f"query and positive must both be (B, d); got {tuple(query.shape)} and "
                                 f"{tuple(positive.shape)}")
        b, d = query.shape
        q = F.normalize(query, dim=-1)
        p = F.normalize(positive, dim=-1)
        k = 0
        docs = p
        if negatives is not None and negatives.numel():
            if negatives.ndim != 3 or negatives.shape[0] != b or negatives.shape[2] != d:
                raise DimensionError(f"negatives must be (B, K, d) = ({b}, K, {d}); got {tuple(negatives.shape)}")
            k = negatives.shape[1]
            docs = torch.cat([p, F.normalize(negatives, dim=-1).reshape(b * k, d)])
        neg = docs[b:].reshape(b, k, d) if k else None
        all_q, all_p, all_n, offset = q, p, neg, 0
        if self.gather_across_devices:
            from omniret.training.distributed import all_gather_with_grad

            all_q, offset = all_gather_with_grad(q)
            all_p, _ = all_gather_with_grad(p)
            all_n = all_gather_with_grad(neg)[0] if neg is not None else None
        n = all_q.shape[0]                                   # the global batch (b without a gather)
        all_docs = all_p if all_n is None else torch.cat([all_p, all_n.reshape(n * k, d)])
        rows = torch.arange(b, device=q.device)
        cols = rows + offset                                 # each local row's own column in the global batch
        s_qd = q @ all_docs.T                               # (b, N + N*K); column offset+i is row i's positive
        s_pos = s_qd[rows, cols].unsqueeze(1)
        keep = torch.ones_like(s_qd, dtype=torch.bool)
        if k and not self.in_batch_hard_negatives:
            own = torch.zeros(b, n * k, dtype=torch.bool, device=q.device)
            own_cols = cols.repeat_interleave(k) * k + torch.arange(k, device=q.device).repeat(b)
            own[rows.repeat_interleave(k), own_cols] = True
            keep[:, n:] = own
        keep &= self._mask(s_qd, s_pos)
        keep[rows, cols] = True
        parts = [s_qd.masked_fill(~keep, float("-inf"))]
        off_diag = torch.ones(b, n, dtype=torch.bool, device=q.device)
        off_diag[rows, cols] = False
        if self.query_query:
            s_qq = q @ all_q.T
            parts.append(s_qq.masked_fill(~(off_diag & self._mask(s_qq, s_pos)), float("-inf")))
        if self.doc_doc:
            s_dd = p @ all_docs.T
            keep_dd = self._mask(s_dd, s_pos) & (s_dd < 1.0 - 1e-6)
            keep_dd[rows, cols] = False
            parts.append(s_dd.masked_fill(~keep_dd, float("-inf")))
        logits = torch.cat(parts, dim=1) / self.temperature
        return F.cross_entropy(logits, cols)

    def _mask(self, scores: Tensor, s_pos: Tensor) -> Tensor:
        if self.margin is None:
            return torch.ones_like(scores, dtype=torch.bool)
        return scores <= s_pos.detach() + self.margin
