"""Accumulates 2D (PQ, depth) and 3D (PRQ, mIoU, occupancy IoU) metrics over an evaluation set."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from ..config import DataError
from ..labels import CEILING, NAMES, NUM_CLASSES, is_thing
from .panoptic import ClassScore, PanopticAccumulator, segments, thickened_segments

IS_THING = np.array([is_thing(c) for c in range(NUM_CLASSES)])


def aligned_labels(gt_index, gt_sem, gt_inst, pred_index, pred_sem, pred_inst, side: int = 256):
    """Labels of ground truth and prediction on the union of their occupied voxels (free voxels carry no
    segment, so PRQ over this union equals PRQ over the whole volume)."""
    gk = (gt_index[:, 0] * side + gt_index[:, 1]) * side + gt_index[:, 2]
    pk = (pred_index[:, 0] * side + pred_index[:, 1]) * side + pred_index[:, 2]
    union, inverse = torch.cat([gk, pk]).unique(return_inverse=True)
    out = [torch.zeros(len(union), dtype=torch.long, device=gk.device) for _ in range(4)]
    gi, pi = inverse[:len(gk)], inverse[len(gk):]
    out[0][gi], out[1][gi] = gt_sem.long(), gt_inst.long()
    out[2][pi], out[3][pi] = pred_sem.long(), pred_inst.long()
    return [t.cpu().numpy() for t in out]


@dataclass
class MetricSet:
    ignore_3d: set = field(default_factory=lambda: {CEILING})
    # PRQ's segment masks as the reference evaluation builds them: the frustum mask (grid-shaped bool) they are
    # cut to after thickening, and the max-pooling factor before it (dataset.downsample_factor: Matterport 2)
    frustum_mask: np.ndarray | None = None
    pool_factor: int = 1
    dims: tuple = (256, 256, 256)
    pq: PanopticAccumulator = None
    prq: PanopticAccumulator = None
    # depth as sums over valid pixels: abs_rel, squared error, delta < 1.25, abs_rel after aligning each image's
    # median to the truth (what is left once the global scale error is removed), pixels within surface_tolerance,
    # pixel count
    depth_sums: np.ndarray = field(default_factory=lambda: np.zeros(6))
    # metres: the offset at which a plane one voxel thick, thickened by a voxel on each side as PRQ thickens
    # segments, stops matching its truth ((3 - d) / (3 + d) > 0.25 for d < 1.8 voxels of 3 cm). AbsRel weighs
    # a near chair's error as a far wall's; the voxel grid does not
    surface_tolerance: float = 0.054
    occ_inter: int = 0
    occ_union: int = 0
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64))
    frames_3d: int = 0
    # the KPI is PRQ when the model has its 3D stage, else 2D PQ; a split that lacks that truth is an error
    require_3d: bool = False

    def __post_init__(self):
        if self.frustum_mask is not None:
            mask = torch.as_tensor(self.frustum_mask).bool()
            self.dims = tuple(mask.shape)
            if self.pool_factor > 1:  # the reference's nearest-neighbour resize of the mask
                mask = F.interpolate(mask[None, None].float(), size=[d // self.pool_factor for d in self.dims],
                                     mode="nearest")[0, 0].bool()
            self.frustum_mask = mask.cpu().numpy()
        self.pq = PanopticAccumulator(IS_THING, 0.5, set(), list(NAMES))
        self.prq = PanopticAccumulator(IS_THING, 0.25, set(self.ignore_3d), list(NAMES))

    def add_2d(self, gt_sem, gt_inst, pred_sem, pred_inst, gt_depth, pred_depth) -> None:
        self.pq.add(gt_sem.cpu().numpy(), gt_inst.cpu().numpy(), pred_sem.cpu().numpy(), pred_inst.cpu().numpy())
        valid = (gt_depth > 0) & (pred_depth > 0)
        if valid.any():
            g, p = gt_depth[valid].double(), pred_depth[valid].double()
            scaled = p * (g.median() / p.median())
            self.depth_sums += [float(((p - g).abs() / g).sum()), float(((p - g) ** 2).sum()),
                                float((torch.maximum(p / g, g / p) < 1.25).sum()),
                                float(((scaled - g).abs() / g).sum()),
                                float(((p - g).abs() < self.surface_tolerance).sum()), float(valid.sum())]

    def add_3d(self, gt_index, gt_sem, gt_inst, pred_index, pred_sem, pred_inst) -> None:
        thick = [thickened_segments(index.cpu().numpy(), segments(sem.cpu().numpy(), inst.cpu().numpy(), IS_THING,
                                                                 self.ignore_3d),
                                    self.dims, self.frustum_mask, self.pool_factor)
                 for index, sem, inst in ((gt_index, gt_sem, gt_inst), (pred_index, pred_sem, pred_inst))]
        self.prq.add_masks(*thick)
        g_sem, _, p_sem, _ = aligned_labels(gt_index, gt_sem, gt_inst, pred_index, pred_sem, pred_inst)
        self.occ_inter += int(((g_sem > 0) & (p_sem > 0)).sum())
        self.occ_union += len(g_sem)
        keep = (g_sem < NUM_CLASSES) & (p_sem < NUM_CLASSES)
        self.confusion += np.bincount(g_sem[keep] * NUM_CLASSES + p_sem[keep],
                                      minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, NUM_CLASSES)
        self.frames_3d += 1

    def summary(self) -> dict:
        out = {}
        if self.pq.scores:
            pq = self.pq.result().as_dict("pq")
            out.update({k: v for k, v in pq.items() if k != "per_class"})
            out["pq_per_class"] = pq["per_class"]
        if self.depth_sums[-1]:
            abs_rel, sq, delta1, abs_rel_scaled, in_tolerance, n = self.depth_sums
            out.update(depth_abs_rel=abs_rel / n, depth_rmse=float(np.sqrt(sq / n)), depth_delta1=delta1 / n,
                       depth_abs_rel_scaled=abs_rel_scaled / n, depth_in_tolerance=in_tolerance / n)
        if self.frames_3d:
            prq = self.prq.result().as_dict("prq")
            out.update({k: v for k, v in prq.items() if k != "per_class"})
            out["prq_per_class"] = prq["per_class"]
            out["occupancy_iou"] = self.occ_inter / max(self.occ_union, 1)
            cm = self.confusion
            ious = []
            for c in range(1, NUM_CLASSES):
                if c in self.ignore_3d:
                    continue
                union = cm[c].sum() + cm[:, c].sum() - cm[c, c]
                if cm[c].sum() > 0:
                    ious.append(cm[c, c] / union)
            out["semantic_miou"] = float(np.mean(ious)) if ious else 0.0
        kpi = "prq" if self.require_3d else "pq"
        if kpi not in out:
            raise DataError(f"dataset: no frame had {'3D' if self.require_3d else '2D'} truth, so {kpi.upper()}, "
                            "the KPI, cannot be computed; check the split's files")
        out["kpi"] = out[kpi]
        return out

    # everything summary() reads, as sums: DDP ranks each evaluate a shard and all-reduce this vector
    def state_tensor(self) -> torch.Tensor:
        rows = []
        for acc in (self.pq, self.prq):
            for c in range(NUM_CLASSES):
                s = acc.scores.get(c)
                rows += [s.tp, s.fp, s.fn, s.iou_sum] if s else [0, 0, 0, 0]
        rows += [*self.depth_sums, self.occ_inter, self.occ_union, self.frames_3d]
        return torch.tensor(rows + self.confusion.ravel().tolist(), dtype=torch.float64)

    def load_state_tensor(self, t: torch.Tensor) -> None:
        values = t.tolist()
        for acc in (self.pq, self.prq):
            acc.scores = {}
            for c in range(NUM_CLASSES):
                tp, fp, fn, iou = values[:4]
                values = values[4:]
                if tp or fp or fn:
                    acc.scores[c] = ClassScore(int(tp), int(fp), int(fn), iou)
        k = len(self.depth_sums)
        self.depth_sums = np.array(values[:k])
        self.occ_inter, self.occ_union, self.frames_3d = (int(v) for v in values[k:k + 3])
        self.confusion = np.array(values[k + 3:], dtype=np.int64).reshape(NUM_CLASSES, NUM_CLASSES)
