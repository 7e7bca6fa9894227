"""Panoptic quality for 2D (PQ, IoU > 0.5) and panoptic reconstruction quality for 3D (PRQ, IoU > 0.25).

PRQ as Dahnert et al. 2021 define it and NVPanoptix3D reports it: each thing instance is a segment and each
stuff class present one segment per sample; a ground-truth segment matches a not-yet-matched predicted segment
of the same class with IoU strictly above the threshold (the highest such IoU is taken); counts and IoU sums
accumulate per class over the whole set; per class PRQ = sum IoU / (TP + FP/2 + FN/2), RSQ = sum IoU / TP,
RRQ = TP / (TP + FP/2 + FN/2); overall, things and stuff values are means over classes with ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_SEGMENT_STRIDE = 1 << 20


@dataclass
class ClassScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    @property
    def quality(self) -> float:      # PQ / PRQ
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        return self.iou_sum / denom if denom else 0.0

    @property
    def segmentation(self) -> float:  # SQ / RSQ
        return self.iou_sum / self.tp if self.tp else 0.0

    @property
    def recognition(self) -> float:   # RQ / RRQ
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        return self.tp / denom if denom else 0.0


@dataclass
class PanopticResult:
    quality: float
    segmentation: float
    recognition: float
    things: dict
    stuff: dict
    per_class: dict

    def as_dict(self, prefix: str) -> dict:
        """prefix 'prq' gives prq, rsq, rrq; 'pq' gives pq, sq, rq (and _things / _stuff variants)."""
        names = ("prq", "rsq", "rrq") if prefix == "prq" else ("pq", "sq", "rq")
        out = dict(zip(names, (self.quality, self.segmentation, self.recognition)))
        for group, values in (("things", self.things), ("stuff", self.stuff)):
            out.update({f"{n}_{group}": values[k] for n, k in zip(names, ("quality", "segmentation", "recognition"))})
        out["per_class"] = self.per_class
        return out


def segments(semantic: np.ndarray, instance: np.ndarray, is_thing: np.ndarray, ignore: set[int]) -> np.ndarray:
    """Per-element segment key (0 = none): things keyed by class and instance, stuff by class alone."""
    sem = semantic.astype(np.int64)
    valid = (sem > 0) & ~np.isin(sem, list(ignore)) & (sem < len(is_thing))
    thing = is_thing[np.where(valid, sem, 0)]
    inst = np.where(thing, instance.astype(np.int64), 0)
    return np.where(valid, sem * _SEGMENT_STRIDE + inst + 1, 0)


@dataclass
class PanopticAccumulator:
    is_thing: np.ndarray                    # bool per class id
    iou_threshold: float                    # 0.5 for PQ, 0.25 for PRQ (strictly greater)
    ignore: set[int] = field(default_factory=set)
    names: list[str] | None = None
    scores: dict[int, ClassScore] = field(default_factory=dict)

    def add(self, gt_sem, gt_inst, pred_sem, pred_inst) -> None:
        gt = segments(np.asarray(gt_sem).ravel(), np.asarray(gt_inst).ravel(), self.is_thing, self.ignore)
        pred = segments(np.asarray(pred_sem).ravel(), np.asarray(pred_inst).ravel(), self.is_thing, self.ignore)
        gt_ids, gt_area = np.unique(gt[gt > 0], return_counts=True)
        pr_ids, pr_area = np.unique(pred[pred > 0], return_counts=True)
        both = (gt > 0) & (pred > 0)
        pair, inter = np.unique(np.stack([gt[both], pred[both]], 1), axis=0, return_counts=True) \
            if both.any() else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
        gt_area_of = dict(zip(gt_ids.tolist(), gt_area.tolist()))
        pr_area_of = dict(zip(pr_ids.tolist(), pr_area.tolist()))
        candidates: dict[int, list[tuple[float, int]]] = {}
        for (g, p), n in zip(pair.tolist(), inter.tolist()):
            if g // _SEGMENT_STRIDE != p // _SEGMENT_STRIDE:  # same class only
                continue
            iou = n / (gt_area_of[g] + pr_area_of[p] - n)
            if iou > self.iou_threshold:
                candidates.setdefault(g, []).append((iou, p))
        matched_pred: set[int] = set()
        for g in gt_ids.tolist():
            score = self.scores.setdefault(g // _SEGMENT_STRIDE, ClassScore())
            options = sorted((c for c in candidates.get(g, []) if c[1] not in matched_pred), reverse=True)
            if options:
                iou, p = options[0]
                matched_pred.add(p)
                score.tp += 1
                score.iou_sum += iou
            else:
                score.fn += 1
        for p in pr_ids.tolist():
            if p not in matched_pred:
                self.scores.setdefault(p // _SEGMENT_STRIDE, ClassScore()).fp += 1

    def result(self) -> PanopticResult:
        present = {c: s for c, s in self.scores.items() if s.tp + s.fn > 0}

        def mean(classes) -> dict:
            vals = [present[c] for c in classes]
            if not vals:
                return {"quality": 0.0, "segmentation": 0.0, "recognition": 0.0}
            return {"quality": float(np.mean([v.quality for v in vals])),
                    "segmentation": float(np.mean([v.segmentation for v in vals])),
                    "recognition": float(np.mean([v.recognition for v in vals]))}

        overall = mean(present)
        name = (lambda c: self.names[c]) if self.names else str
        per_class = {name(c): {"quality": s.quality, "segmentation": s.segmentation, "recognition": s.recognition,
                               "tp": s.tp, "fp": s.fp, "fn": s.fn} for c, s in sorted(present.items())}
        return PanopticResult(overall["quality"], overall["segmentation"], overall["recognition"],
                              mean([c for c in present if self.is_thing[c]]),
                              mean([c for c in present if not self.is_thing[c]]), per_class)
