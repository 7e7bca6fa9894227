"""PRQ / PQ against hand-computed cases on tiny volumes."""
from __future__ import annotations

import numpy as np
import pytest

from nvpanoptix3d.engine.evaluation import IS_THING, MetricSet
from nvpanoptix3d.labels import CEILING, FLOOR, WALL
from nvpanoptix3d.metrics import PanopticAccumulator

CHAIR, TABLE = 3, 5


def prq(*pairs, ignore=(CEILING,)):
    acc = PanopticAccumulator(IS_THING, 0.25, set(ignore))
    for gt, pred in pairs:
        acc.add(gt[0], gt[1], pred[0], pred[1])
    return acc.result()


def vol(n=20):
    return np.zeros(n, np.int64), np.zeros(n, np.int64)


def put(v, sl, label, inst=0):
    v[0][sl], v[1][sl] = label, inst


def test_perfect_prediction():
    gt = vol()
    put(gt, slice(0, 5), CHAIR, 1)
    put(gt, slice(5, 10), WALL)
    r = prq((gt, (gt[0].copy(), gt[1] * 7)))  # instance ids need not agree, only segments
    assert r.quality == pytest.approx(1.0) and r.segmentation == 1.0 and r.recognition == 1.0


def test_split_instance():
    gt, pred = vol(), vol()
    put(gt, slice(0, 10), CHAIR, 1)
    put(pred, slice(0, 6), CHAIR, 1)   # IoU 0.6 -> TP
    put(pred, slice(6, 10), CHAIR, 2)  # IoU 0.4 but gt already matched -> FP
    r = prq((gt, pred))
    # chair: sum IoU 0.6 / (1 + 0.5 * 1 FP) = 0.4
    assert r.per_class["3"]["quality"] == pytest.approx(0.6 / 1.5)
    assert r.recognition == pytest.approx(1 / 1.5) and r.segmentation == pytest.approx(0.6)


def test_merged_instances():
    gt, pred = vol(), vol()
    put(gt, slice(0, 6), CHAIR, 1)
    put(gt, slice(6, 10), CHAIR, 2)
    put(pred, slice(0, 10), CHAIR, 1)  # IoU with gt1 = 0.6, gt2 = 0.4
    r = prq((gt, pred))
    # gt1 TP (0.6); gt2 finds the prediction taken -> FN; chair = 0.6 / (1 + 0.5) = 0.4
    assert r.quality == pytest.approx(0.4)


def test_missed_stuff_and_false_stuff():
    gt, pred = vol(), vol()
    put(gt, slice(0, 10), FLOOR)
    put(pred, slice(10, 20), WALL)
    r = prq((gt, pred))
    # floor: FN only -> 0; wall has no ground truth -> not averaged
    assert r.quality == 0.0 and set(r.per_class) == {"11"}


def test_iou_threshold_is_strictly_above_a_quarter():
    gt, exact, above = vol(100), vol(100), vol(100)
    put(gt, slice(0, 40), TABLE, 1)
    put(exact, slice(24, 64), TABLE, 1)   # overlap 16: IoU 16 / 64 = 0.25 exactly -> no match
    put(above, slice(23, 63), TABLE, 1)   # overlap 17: IoU 17 / 63 > 0.25 -> match
    r = prq((gt, exact))
    assert r.per_class["5"]["tp"] == 0 and r.per_class["5"]["fp"] == 1 and r.per_class["5"]["fn"] == 1
    r = prq((gt, above))
    assert r.per_class["5"]["tp"] == 1 and r.quality == pytest.approx(17 / 63)


def test_ceiling_ignored_on_front3d_counted_elsewhere():
    gt, pred = vol(), vol()
    put(gt, slice(0, 10), CEILING)
    assert prq((gt, pred)).per_class == {}
    assert prq((gt, pred), ignore=()).per_class["12"]["fn"] == 1


def test_counts_accumulate_over_the_set_not_per_scene():
    a_gt, a_pred = vol(), vol()
    put(a_gt, slice(0, 10), CHAIR, 1)
    put(a_pred, slice(0, 10), CHAIR, 1)            # TP IoU 1
    b_gt, b_pred = vol(), vol()
    put(b_gt, slice(0, 10), CHAIR, 1)               # FN
    r = prq((a_gt, a_pred), (b_gt, b_pred))
    assert r.quality == pytest.approx(1.0 / (1 + 0.5))  # not the mean of per-scene 1.0 and 0.0


def test_metric_set_on_sparse_volumes_equals_dense():
    import torch
    rng = np.random.default_rng(0)
    side = 8
    gt_sem = rng.integers(0, 13, (side, side, side))
    gt_inst = np.where(IS_THING[gt_sem], rng.integers(1, 3, gt_sem.shape), 0)
    pred_sem = np.where(rng.random(gt_sem.shape) < 0.8, gt_sem, rng.integers(0, 13, gt_sem.shape))
    pred_inst = np.where(IS_THING[pred_sem], gt_inst.clip(min=1), 0)
    m = MetricSet()
    to_sparse = lambda sem, inst: (torch.from_numpy(np.argwhere(sem > 0)), torch.from_numpy(sem[sem > 0]),  # noqa
                                   torch.from_numpy(inst[sem > 0]))
    m.add_3d(*to_sparse(gt_sem, gt_inst), *to_sparse(pred_sem, pred_inst))
    dense = prq(((gt_sem.ravel(), gt_inst.ravel()), (pred_sem.ravel(), pred_inst.ravel())))
    assert m.summary()["prq"] == pytest.approx(dense.quality)


def test_depth_metrics_hand_computed():
    import torch
    m = MetricSet()
    sem = torch.zeros(1, 4, dtype=torch.long)
    gt = torch.tensor([[1.0, 2.0, 4.0, 5.0]])
    m.add_2d(sem, sem, sem, sem, gt, torch.tensor([[1.1, 2.0, 2.0, 5.0]]))
    r = m.summary()
    assert r["depth_abs_rel"] == pytest.approx((0.1 + 0.5) / 4)
    assert r["depth_rmse"] == pytest.approx(np.sqrt((0.01 + 4.0) / 4))
    assert r["depth_delta1"] == pytest.approx(3 / 4)   # the ratio-2 pixel fails delta < 1.25
    # a prediction off by a global factor: every plain metric fails, the scale-aligned AbsRel is exact
    m = MetricSet()
    m.add_2d(sem, sem, sem, sem, gt, 2 * gt)
    r = m.summary()
    assert r["depth_abs_rel"] == pytest.approx(1.0) and r["depth_delta1"] == 0.0
    assert r["depth_abs_rel_scaled"] == pytest.approx(0.0)


def test_metric_state_of_shards_sums_to_the_whole_set():
    """DDP: each rank evaluates a shard and the ranks all-reduce state_tensor(); the summary must be the one
    of the whole set."""
    import torch
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(4):
        sem = torch.from_numpy(rng.integers(0, 13, (6, 8)))
        inst = torch.where(torch.from_numpy(IS_THING)[sem], torch.from_numpy(rng.integers(1, 3, (6, 8))), 0)
        depth = torch.from_numpy(rng.uniform(0.5, 5.0, (6, 8)))
        idx = torch.from_numpy(rng.integers(0, 16, (40, 3)))
        idx = idx.unique(dim=0)
        vs = torch.from_numpy(rng.integers(1, 13, len(idx)))
        vi = torch.where(torch.from_numpy(IS_THING)[vs], 1, 0)
        frames.append((sem, inst, depth, idx, vs, vi))

    def evaluate(subset):
        m = MetricSet()
        for sem, inst, depth, idx, vs, vi in subset:
            m.add_2d(sem, inst, sem.roll(1, 0), inst, depth, depth * 1.1 + 0.05)
            m.add_3d(idx, vs, vi, idx[::2], vs[::2].roll(1), vi[::2])
        return m

    whole = evaluate(frames).summary()
    merged = MetricSet()
    merged.load_state_tensor(evaluate(frames[:2]).state_tensor() + evaluate(frames[2:]).state_tensor())
    got = merged.summary()
    assert set(got) == set(whole)
    for key, value in whole.items():
        if not isinstance(value, dict):
            assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["prq_per_class"] == whole["prq_per_class"]
