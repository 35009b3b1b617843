"""Sampling a run trained with length anchors: each row's END and PAD tail held clean.

`AnchoredDenoiser` sits next to the network (inside every guidance wrapper), so every
evaluation, guided branches included, reads x_t as training showed it (`model/anchors.py`).
The trainer cuts each length-bucketed batch after its longest row (`train.length_pool`), so
the denoiser learned from rows that fill nearly all of their canvas; a row of 10 words on a
48-position canvas would be far from anything it saw. So each call is split into groups of
rows of one length, each cut after its END, and the positions cut off come back as
EMB(PAD): samplers and constraints still see all L positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from difflm.model.anchors import anchor, anchor_ids, width_groups
from difflm.model.denoiser import Prediction
from difflm.sampling.wrappers import DenoiserWrapper
from difflm.text.vocab import Vocab

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser


class AnchoredDenoiser(DenoiserWrapper):
    """The denoiser with the positions `anchors` [B, L] held at EMB(END) then EMB(PAD)
    (`model/anchors.anchor`), evaluated one length at a time.

    A call on k·B rows (a guidance's batched branches) repeats the anchors k times.
    """

    def __init__(self, denoiser: Denoiser | DenoiserWrapper, anchors: torch.Tensor) -> None:
        super().__init__(denoiser)
        self.anchors = anchors

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **inputs: Any) -> Prediction:
        rows = self.anchors.shape[0]
        if x_t.shape[0] % rows:
            raise ValueError(f"anchors were set for {rows} rows; a call on {x_t.shape[0]} rows does not fit")
        anchors = self.anchors.repeat(x_t.shape[0] // rows, 1)
        anchored = anchor(x_t, anchors, self.embedding)
        x0 = anchored.clone()  # written group by group (a copy: guidance differentiates through the reads)
        # Positions outside a group's width hold an anchor: its readout, from the anchor words' rows.
        words = torch.tensor([Vocab.END_ID, Vocab.PAD_ID], device=x_t.device)
        logits = self.embedding.logits(self.embedding(words))[(anchor_ids(anchors) == Vocab.PAD_ID).long()]
        for group, width in width_groups(anchors):
            times = t[group] if t.ndim == 1 else t[group, :width]  # shared, or one per position
            pred = self.denoiser(anchored[group, :width], times, **_rows_of(inputs, group, width))
            x0[group, :width] = pred.x0.to(x0.dtype)
            logits[group, :width] = pred.logits.to(logits.dtype)
        return Prediction(x0=anchor(x0, anchors, self.embedding), logits=logits)


def _rows_of(inputs: dict[str, Any], group: torch.Tensor, width: int) -> dict[str, Any]:
    """The inputs of the rows `group` (per-row tensors: cond, jump; self_cond cut to width)."""
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value[group]
            if key == "self_cond":
                value = value[:, :width]
        out[key] = value
    return out
