"""Panoptic quality for 2D (PQ, IoU > 0.5) and panoptic reconstruction quality for 3D (PRQ, IoU > 0.25).

PRQ as Dahnert et al. 2021 define it and NVPanoptix3D reports it: each thing instance is a segment and each
stuff class present one segment per sample; a ground-truth segment matches a not-yet-matched predicted segment
of the same class with IoU strictly above the threshold (the highest such IoU is taken); counts and IoU sums
accumulate per class over the whole set; per class PRQ = sum IoU / (TP + FP/2 + FN/2), RSQ = sum IoU / TP,
RRQ = TP / (TP + FP/2 + FN/2); overall, things and stuff values are means over classes with ground truth.
Before the IoU, every 3D segment's voxels are dilated by their 26-neighbourhood and cut to the frustum, in the
ground truth and the prediction alike (`thickened_segments`): that is what the reference evaluation scripts do
(Dahnert et al.'s tools/evaluate_net.py, BUOL's and NVPanoptix3D's evaluators), so a surface one voxel off still
overlaps. Matterport volumes are first max-pooled to 128^3 (kernel 3, stride 2, padding 1), as theirs are.
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
        """One sample as label arrays (every element in at most one segment)."""
        gt = segments(np.asarray(gt_sem).ravel(), np.asarray(gt_inst).ravel(), self.is_thing, self.ignore)
        pred = segments(np.asarray(pred_sem).ravel(), np.asarray(pred_inst).ravel(), self.is_thing, self.ignore)
        gt_ids, gt_area = np.unique(gt[gt > 0], return_counts=True)
        pr_ids, pr_area = np.unique(pred[pred > 0], return_counts=True)
        both = (gt > 0) & (pred > 0)
        pair, inter = np.unique(np.stack([gt[both], pred[both]], 1), axis=0, return_counts=True) \
            if both.any() else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
        self._score(dict(zip(gt_ids.tolist(), gt_area.tolist())), dict(zip(pr_ids.tolist(), pr_area.tolist())),
                    zip(pair.tolist(), inter.tolist()))

    def add_masks(self, gt: list[SegmentMask], pred: list[SegmentMask]) -> None:
        """One sample as segment masks that may overlap (thickened surfaces share voxels with their neighbours)."""
        overlaps = (((g.key, p.key), g.intersection(p)) for g in gt for p in pred
                    if g.key // _SEGMENT_STRIDE == p.key // _SEGMENT_STRIDE)
        self._score({g.key: g.area for g in gt}, {p.key: p.area for p in pred}, overlaps)

    def _score(self, gt_area_of: dict, pr_area_of: dict, overlaps) -> None:
        """Matching and counts of one sample: areas per segment key, ((gt key, pred key), shared elements)."""
        gt_ids = sorted(gt_area_of)
        candidates: dict[int, list[tuple[float, int]]] = {}
        for (g, p), n in overlaps:
            if n == 0 or g // _SEGMENT_STRIDE != p // _SEGMENT_STRIDE:  # same class only
                continue
            iou = n / (gt_area_of[g] + pr_area_of[p] - n)
            if iou > self.iou_threshold:
                candidates.setdefault(g, []).append((iou, p))
        matched_pred: set[int] = set()
        for g in gt_ids:
            score = self.scores.setdefault(g // _SEGMENT_STRIDE, ClassScore())
            options = sorted((c for c in candidates.get(g, []) if c[1] not in matched_pred), reverse=True)
            if options:
                iou, p = options[0]
                matched_pred.add(p)
                score.tp += 1
                score.iou_sum += iou
            else:
                score.fn += 1
        for p in pr_area_of:
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


def class_counts(scores: dict[int, ClassScore], num_classes: int) -> np.ndarray:
    """num_classes x 4 (tp, fp, fn, iou_sum): an accumulator's scores as an array, so that the counts of samples
    can be summed in any combination (a bootstrap over frames)."""
    out = np.zeros((num_classes, 4))
    for c, s in scores.items():
        out[c] = s.tp, s.fp, s.fn, s.iou_sum
    return out


def quality_of_counts(counts: np.ndarray) -> np.ndarray:
    """... x classes x 4 summed counts -> ... overall quality (PQ / PRQ): the mean of sum IoU / (TP + FP/2 + FN/2)
    over the classes with ground truth (TP + FN > 0), as PanopticAccumulator.result computes it."""
    tp, fp, fn, iou = np.moveaxis(counts, -1, 0)
    present = tp + fn > 0
    per_class = np.where(present, iou / np.maximum(tp + 0.5 * fp + 0.5 * fn, 1e-12), 0.0)
    return per_class.sum(-1) / np.maximum(present.sum(-1), 1)


@dataclass
class SegmentMask:
    """A segment's voxels as a boolean box of the grid (origin: the box's first voxel)."""
    key: int
    origin: np.ndarray
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def intersection(self, other: "SegmentMask") -> int:
        lo = np.maximum(self.origin, other.origin)
        hi = np.minimum(self.origin + self.mask.shape, other.origin + other.mask.shape)
        if (hi <= lo).any():
            return 0
        mine = tuple(slice(a, b) for a, b in zip(lo - self.origin, hi - self.origin))
        theirs = tuple(slice(a, b) for a, b in zip(lo - other.origin, hi - other.origin))
        return int((self.mask[mine] & other.mask[theirs]).sum())


def _dilated(mask: np.ndarray) -> np.ndarray:
    """3 x 3 x 3 dilation as three separable passes (the 26-neighbourhood is their product)."""
    for axis in range(3):
        out = mask.copy()
        later = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        earlier = tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))
        out[later] |= mask[earlier]
        out[earlier] |= mask[later]
        mask = out
    return mask


def _pooled(index: np.ndarray, segment: np.ndarray, factor: int, dims) -> tuple[np.ndarray, np.ndarray]:
    """Voxels of max_pool3d(kernel factor + 1, stride factor, padding 1): output o covers inputs
    factor * o - 1 ... factor * o + factor - 1, so an input voxel lands in one or two outputs per axis."""
    first = (index + 1) // factor - 1                     # lowest output that can cover it
    out_idx, out_seg = [], []
    for offset in np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3):
        o = first + offset
        ok = ((factor * o - 1 <= index) & (index <= factor * o + factor - 1) & (o >= 0) & (o < dims)).all(1)
        out_idx.append(o[ok])
        out_seg.append(segment[ok])
    return np.concatenate(out_idx), np.concatenate(out_seg)


def thickened_segments(index, segment, dims, inside=None, factor: int = 1) -> list[SegmentMask]:
    """The reference evaluation's segment masks: voxels (index N x 3 of a dims grid, segment key N, 0 = none)
    max-pooled by `factor` (1 = not), dilated by their 26-neighbourhood and cut to `inside` (the frustum mask at
    the pooled resolution, optional). Each segment is a box around its voxels, so the work follows its size."""
    index, segment = np.asarray(index, np.int64).reshape(-1, 3), np.asarray(segment, np.int64)
    keep = segment > 0
    index, segment = index[keep], segment[keep]
    dims = np.asarray(dims, np.int64)
    if factor > 1:
        dims = dims // factor
        index, segment = _pooled(index, segment, factor, dims)
    order = np.argsort(segment, kind="stable")
    keys, starts = np.unique(segment[order], return_index=True)
    masks = []
    for key, voxels in zip(keys.tolist(), np.split(index[order], starts[1:])):
        lo = np.maximum(voxels.min(0) - 1, 0)
        hi = np.minimum(voxels.max(0) + 2, dims)
        box = np.zeros(hi - lo, bool)
        box[tuple((voxels - lo).T)] = True
        box = _dilated(box)
        if inside is not None:
            box &= np.asarray(inside)[tuple(slice(a, b) for a, b in zip(lo, hi))]
        masks.append(SegmentMask(key, lo, box))
    return masks
