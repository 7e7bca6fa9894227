"""PRQ / PQ against hand-computed cases on tiny volumes."""
from __future__ import annotations

import numpy as np
import pytest

from nvpanoptix3d.metrics.metric_set import IS_THING, MetricSet
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


def _sparse(sem, inst):
    import torch
    return torch.from_numpy(np.argwhere(sem > 0)), torch.from_numpy(sem[sem > 0]), torch.from_numpy(inst[sem > 0])


def _dense_reference_prq(gt, pred, inside, factor):
    """PRQ the slow, obvious way: one dense mask per segment, max-pooled and dilated with max_pool3d, cut to the
    frustum, then every gt / prediction IoU and the greedy matching."""
    import torch
    from torch.nn import functional as F

    def masks(sem, inst):
        out = {}
        for c in np.unique(sem[sem > 0]):
            for i in (np.unique(inst[sem == c]) if IS_THING[c] else [0]):
                m = torch.from_numpy((sem == c) & ((inst == i) | (not IS_THING[c])))[None, None].float()
                if factor > 1:
                    m = F.max_pool3d(m, factor + 1, factor, 1)
                m = F.max_pool3d(m, 3, 1, 1)[0, 0].bool() & inside
                out[(int(c), int(i))] = m
        return out

    g, p = masks(*gt), masks(*pred)
    scores = {}
    taken = set()
    for (c, i), gm in sorted(g.items()):
        s = scores.setdefault(c, [0, 0, 0, 0.0])
        best = max(((float((gm & pm).sum() / (gm | pm).sum()), k) for k, pm in p.items()
                    if k[0] == c and k not in taken), default=(0.0, None))
        if best[0] > 0.25:
            taken.add(best[1])
            s[0] += 1
            s[3] += best[0]
        else:
            s[2] += 1
    for k in p:
        if k not in taken:
            scores.setdefault(k[0], [0, 0, 0, 0.0])[1] += 1
    per_class = [iou / (tp + fp / 2 + fn / 2) for tp, fp, fn, iou in scores.values() if tp + fn]
    return float(np.mean(per_class))


@pytest.mark.parametrize("factor", [1, 2])
def test_metric_set_thickens_segments_as_the_reference_evaluation(factor):
    """Sparse, vectorised PRQ of MetricSet equals a dense per-segment computation of the reference's masks
    (dilated by the 26-neighbourhood, cut to the frustum; Matterport: max-pooled to half size first)."""
    import torch
    rng = np.random.default_rng(factor)
    side = 12
    gt_sem = np.where(rng.random((side,) * 3) < 0.15, rng.choice([CHAIR, TABLE, WALL, FLOOR, CEILING], (side,) * 3), 0)
    gt_inst = np.where(IS_THING[gt_sem], rng.integers(1, 3, gt_sem.shape), 0)
    shift = np.roll(gt_sem, 1, axis=0)  # a surface one voxel off, as a slightly wrong depth gives
    pred_sem = np.where(rng.random(gt_sem.shape) < 0.8, shift, 0)
    pred_inst = np.where(IS_THING[pred_sem], np.roll(gt_inst, 1, axis=0).clip(min=1), 0)
    inside = torch.ones((side,) * 3, dtype=torch.bool)
    inside[:, :, -3:] = False
    m = MetricSet(frustum_mask=inside, pool_factor=factor, require_3d=True)
    m.add_3d(*_sparse(gt_sem, gt_inst), *_sparse(pred_sem, pred_inst))
    small = inside[::factor, ::factor, ::factor]
    ignore_ceiling = lambda sem: np.where(sem == CEILING, 0, sem)  # noqa: E731
    expected = _dense_reference_prq((ignore_ceiling(gt_sem), gt_inst), (ignore_ceiling(pred_sem), pred_inst),
                                    small, factor)
    assert m.summary()["prq"] == pytest.approx(expected)
    assert 0.1 < expected < 0.99  # neither trivially perfect nor empty


def _plane(side, x):
    sem = np.zeros((side,) * 3, np.int64)
    sem[x, 2:-2, 2:-2] = WALL
    return sem


def test_thickening_tolerates_one_voxel_not_two():
    """A wall plane predicted one voxel off: thickened masks span x-1..x+1 and x..x+2, IoU 2/4 = 0.5, a match
    (unthickened it would be 0). Two voxels off: 1 shared layer of 5, IoU 0.2, not above 0.25."""
    side = 16
    gt = _plane(side, 6)
    results = {}
    for offset in (0, 1, 2):
        m = MetricSet(dims=(side,) * 3, require_3d=True)
        m.add_3d(*_sparse(gt, np.zeros_like(gt)), *_sparse(_plane(side, 6 + offset), np.zeros_like(gt)))
        results[offset] = m.summary()
    assert results[0]["prq"] == pytest.approx(1.0)
    assert results[1]["prq"] == pytest.approx(0.5) and results[1]["rrq"] == 1.0
    assert results[2]["prq"] == 0.0 and results[2]["prq_per_class"]["wall"]["fn"] == 1
    assert results[1]["occupancy_iou"] == 0.0  # occupancy IoU stays on the voxels themselves


def test_depth_metrics_hand_computed():
    import torch
    m = MetricSet()
    sem = torch.full((1, 4), WALL, dtype=torch.long)
    gt = torch.tensor([[1.0, 2.0, 4.0, 5.0]])
    m.add_2d(sem, sem, sem, sem, gt, torch.tensor([[1.1, 2.0, 2.0, 5.0]]))
    r = m.summary()
    assert r["depth_abs_rel"] == pytest.approx((0.1 + 0.5) / 4)
    assert r["depth_rmse"] == pytest.approx(np.sqrt((0.01 + 4.0) / 4))
    assert r["depth_delta1"] == pytest.approx(3 / 4)   # the ratio-2 pixel fails delta < 1.25
    assert r["depth_in_tolerance"] == pytest.approx(2 / 4)  # 10 cm and 2 m off fail the 5.4 cm tolerance
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


def _two_frame_counts():
    """Frame 1: a chair split in two (IoU 0.6 and 0.4: TP 0.6 + FP) and the floor found exactly; frame 2: the chair
    missed (FN) and a table predicted where none is (FP). Returns their PRQ counts and (truth, prediction) pairs."""
    from nvpanoptix3d.labels import NUM_CLASSES
    from nvpanoptix3d.metrics import class_counts
    gt1, pr1 = vol(), vol()
    put(gt1, slice(0, 10), CHAIR, 1), put(pr1, slice(0, 6), CHAIR, 1), put(pr1, slice(6, 10), CHAIR, 2)
    put(gt1, slice(10, 20), FLOOR), put(pr1, slice(10, 20), FLOOR)
    gt2, pr2 = vol(), vol()
    put(gt2, slice(0, 10), CHAIR, 1), put(pr2, slice(10, 15), TABLE, 1)
    frames = []
    for gt, pred in ((gt1, pr1), (gt2, pr2)):
        acc = PanopticAccumulator(IS_THING, 0.25, {CEILING})
        acc.add(gt[0], gt[1], pred[0], pred[1])
        frames.append(class_counts(acc.scores, NUM_CLASSES))
    counts = np.stack(frames)
    return counts, (gt1, pr1), (gt2, pr2)


def test_quality_of_summed_frame_counts_is_the_accumulators_prq():
    """The bootstrap's arithmetic (bench/ab_prq.py): per-frame counts, summed, give the set's PRQ
    (_two_frame_counts' frames)."""
    from nvpanoptix3d.metrics import quality_of_counts
    counts, (gt1, pr1), (gt2, pr2) = _two_frame_counts()
    assert counts[:, CHAIR].tolist() == [[1, 1, 0, 0.6], [0, 0, 1, 0.0]]
    # chair 0.6 / (1 + 0.5 + 0.5) = 0.3, floor 1.0; the table has no ground truth: not a class of the mean
    assert quality_of_counts(counts.sum(0)) == pytest.approx((0.3 + 1.0) / 2)
    assert quality_of_counts(counts.sum(0)) == pytest.approx(prq((gt1, pr1), (gt2, pr2)).quality)
    assert quality_of_counts(counts[[0, 0]].sum(0)) == pytest.approx(prq((gt1, pr1), (gt1, pr1)).quality)


def test_ab_prq_pools_the_frames_of_earlier_runs(tmp_path):
    """bench/ab_prq.py --pool: two runs' saved counts judged as one sample of their frames together. A saw both
    frames above, B saw frame 1 twice (B's PRQ is frame 1's alone)."""
    import subprocess
    import sys
    from pathlib import Path
    from nvpanoptix3d.metrics import quality_of_counts
    counts = _two_frame_counts()[0]
    np.savez(tmp_path / "run1.npz", a=counts[:1], b=counts[:1])
    np.savez(tmp_path / "run2.npz", a=counts[1:], b=counts[:1])
    script = Path(__file__).resolve().parents[1] / "bench" / "ab_prq.py"
    done = subprocess.run([sys.executable, str(script), "--pool", str(tmp_path / "run1.npz"),
                           str(tmp_path / "run2.npz"), "--samples", "200", "--views-per-scene", "1"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    want_a, want_b = quality_of_counts(counts.sum(0)), quality_of_counts(counts[[0, 0]].sum(0))
    assert f"frames=2 prq_a={want_a:.4f} prq_b={want_b:.4f} b_minus_a={want_b - want_a:+.4f}" in done.stdout


def test_ab_prq_resamples_whole_scenes_not_their_views_one_by_one():
    """Two scenes of two views each, both scenes alike (A: frames 1 and 2; B: frame 1 twice): every resample of whole
    scenes holds the same views, so the interval closes on the difference itself; resampling views one by one (the
    views of a room taken as independent) opens it. A count that cuts a scene is refused."""
    from nvpanoptix3d.metrics.paired import paired_interval
    counts = _two_frame_counts()[0]
    a, b = counts[[0, 1, 0, 1]], counts[[0, 0, 0, 0]]
    diff, low, high = paired_interval(a, b, 500, views_per_scene=2)
    assert low == pytest.approx(diff) and high == pytest.approx(diff)
    # B, frame 1 alone: the split chair 0.6 / (1 + 0.5) = 0.4, the floor 1.0; A: (0.3 + 1.0) / 2
    assert diff == pytest.approx((0.4 + 1.0) / 2 - (0.3 + 1.0) / 2)
    frame_diff, frame_low, frame_high = paired_interval(a, b, 500, views_per_scene=1)
    assert frame_diff == pytest.approx(diff) and frame_high - frame_low > 0.1
    with pytest.raises(SystemExit, match="not whole scenes"):
        paired_interval(a, b, 10, views_per_scene=3)
