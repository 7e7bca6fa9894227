"""From the 3D stage's voxels to panoptic labels: occupied voxels only, segment filtering, smoothing."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers import spec_file

from nvpanoptix3d.cli import load_config
from nvpanoptix3d.data import collate, get_dataset
from nvpanoptix3d.engine.module import PanopticModule


def test_inference_labels_only_occupied_voxels_with_the_same_result(tmp_path):
    """Out of training the 3D label heads run on voxels above the occupancy threshold only: the panoptic
    volume must be the one labelling every candidate gives."""
    from nvpanoptix3d.model.postprocess import panoptic_3d
    cfg = load_config(str(spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}"])
    torch.manual_seed(0)
    module = PanopticModule(cfg).eval()
    dataset = get_dataset(cfg.dataset, "train")
    images = collate([dataset[0], dataset[1]]).images
    stage = module.model.stage3d
    with torch.no_grad():
        out2d = module.model.forward_2d(images)
        args = (out2d.mask_features, out2d.depth, out2d.query_embed)
        every = stage(*args, label_all=True)
        prob = every.fine_logits.sigmoid()[every.fine_valid]
        threshold = float(prob.median())           # half the candidates are free space
        stage.label_above = threshold
        sparse = stage(*args)
    cfg = dataclasses.replace(cfg, postprocess=dataclasses.replace(cfg.postprocess, occupancy_threshold=threshold))
    occupied = every.fine_valid & (every.fine_logits.sigmoid() > threshold)
    assert 0 < int(occupied.sum()) < int(every.fine_valid.sum())
    assert torch.equal(sparse.fine_index, every.fine_index)
    for name in ("semantic_logits", "query_logits"):
        a, b = getattr(sparse, name), getattr(every, name)
        assert torch.allclose(a[occupied], b[occupied], atol=1e-5), name
        assert not a[~occupied].any(), name
    for i in range(2):
        p, q = panoptic_3d(out2d, sparse, i, cfg), panoptic_3d(out2d, every, i, cfg)
        assert torch.equal(p.index, q.index) and torch.equal(p.semantic, q.semantic)
        assert torch.equal(p.instance, q.instance)
    lower = dataclasses.replace(cfg.postprocess, occupancy_threshold=threshold / 2)
    with pytest.raises(ValueError, match="postprocess.occupancy_threshold"):
        panoptic_3d(out2d, sparse, 0, dataclasses.replace(cfg, postprocess=lower))


def test_reducing_2d_features_before_sampling_equals_reducing_after(tmp_path):
    """The 3D stage samples 2D features already reduced to its width (8x fewer channels): sampling is linear
    with zero padding, so it must equal reducing the sampled features, outside the image included."""
    from torch.nn import functional as F
    cfg = load_config(str(spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}"])
    torch.manual_seed(0)
    stage = PanopticModule(cfg).model.stage3d
    pixels, depth = torch.randn(2, 32, 60, 80), torch.rand(2, 60, 80) * 5 + 0.5
    index = torch.randint(0, 256, (2, 5000, 3))
    outside = stage.lifter(index, 1, pixels, depth)[..., -1] == 0
    assert outside.any() and (~outside).any()
    after = stage.reduce(stage.lifter(index, 1, pixels, depth)[..., :-3])
    before = stage.lifter(index, 1, F.conv2d(pixels, stage.reduce.weight[:, :, None, None]), depth)[..., :-3]
    assert torch.allclose(before + stage.reduce.bias, after, atol=1e-5)


def test_large_segments_hand_computed():
    """A stuff class (instance 0) and two instances of one thing class: 5, 3 and 1 voxels; the same instance id in
    another class is another segment."""
    from nvpanoptix3d.model.postprocess import large_segments
    semantic = torch.tensor([1, 1, 1, 1, 1, 5, 5, 5, 5, 6])
    instance = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    assert large_segments(semantic, instance, 3).tolist() == [True] * 8 + [False, False]
    assert large_segments(semantic, instance, 4).tolist() == [True] * 5 + [False] * 5
    assert large_segments(semantic, instance, 0).all() and large_segments(semantic[:0], instance[:0], 3).numel() == 0


def test_min_segment_voxels_drops_exactly_the_small_segments(tmp_path):
    from nvpanoptix3d.model.postprocess import panoptic_3d
    # random weights: with this seed and no image guide the panoptic volume has several segments
    cfg = load_config(str(spec_file(tmp_path, ["postprocess.min_segment_voxels=0",
                                                "model.depth_head.guide_channels=0"])),
                      [f"results_dir={tmp_path / 'r'}"])
    torch.manual_seed(0)
    module = PanopticModule(cfg).eval()
    images = collate([get_dataset(cfg.dataset, "train")[0]]).images
    with torch.no_grad():
        out = module.model(images)
    every = panoptic_3d(out.out2d, out.out3d, 0, cfg)
    keys, inverse, counts = torch.unique(every.semantic * 1000 + every.instance, return_inverse=True,
                                         return_counts=True)
    assert len(keys) >= 2
    size = int(counts.max())                        # only the largest segment stays
    pp = dataclasses.replace(cfg.postprocess, min_segment_voxels=size)
    kept = panoptic_3d(out.out2d, out.out3d, 0, dataclasses.replace(cfg, postprocess=pp))
    big = counts[inverse] >= size
    assert 0 < int(big.sum()) < len(big)
    assert torch.equal(kept.index, every.index[big]) and torch.equal(kept.semantic, every.semantic[big])
    assert torch.equal(kept.instance, every.instance[big])
    assert set(kept.scores) == set(every.scores) & set(kept.instance.tolist())


def test_neighbour_mean_hand_computed():
    """Three voxels in a row and one far away, radius 1: the ends average with the middle, the middle with both,
    the far one stays itself. Voxels (0, 1, 0) and (0, 0, 4) are 4 apart, but in a key over their unpadded box
    (0, 1, -1) would read (0, 0, 4): the padding keeps them apart."""
    from nvpanoptix3d.model.postprocess import neighbour_mean
    index = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 2], [5, 5, 5]])
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [4.0, 2.0], [7.0, 7.0]])
    mean = neighbour_mean(index, values, 1)
    assert torch.allclose(mean, torch.tensor([[0.5, 0.5], [5 / 3, 1.0], [2.0, 1.5], [7.0, 7.0]]))
    assert torch.equal(neighbour_mean(index, values, 0), values)
    assert torch.allclose(neighbour_mean(index, values, 2)[0], torch.tensor([5 / 3, 1.0]))
    apart = torch.tensor([[0, 1, 0], [0, 0, 4]])
    assert torch.equal(neighbour_mean(apart, values[:2], 1), values[:2])


def test_semantic_smoothing_in_the_3d_panoptic_fusion(tmp_path):
    """Five stuff voxels in a row, wall wall floor wall wall, the floor voxel only just floor (probability 0.52
    against 0.48): alone it stays floor; averaged with its neighbours (radius 1) it is wall, and the walls stay."""
    from types import SimpleNamespace

    from nvpanoptix3d.labels import NAMES, NUM_CLASSES
    from nvpanoptix3d.model.postprocess import panoptic_3d
    wall, floor = NAMES.index("wall"), NAMES.index("floor")
    semantic = torch.full((1, 5, NUM_CLASSES), -30.0)
    semantic[0, :, wall] = 5.0
    semantic[0, 2, wall], semantic[0, 2, floor] = 0.0, math.log(0.52 / 0.48)
    out3d = SimpleNamespace(fine_logits=torch.full((1, 5), 10.0), fine_valid=torch.ones(1, 5, dtype=torch.bool),
                            fine_index=torch.tensor([[[3, 3, k] for k in range(5)]]), semantic_logits=semantic,
                            query_logits=torch.zeros(1, 5, 1), label_above=0.0)
    no_object = torch.full((1, 1, NUM_CLASSES), -10.0)
    no_object[..., 0] = 10.0
    labels = {}
    for radius in (0, 1):
        cfg = load_config(str(spec_file(tmp_path, ["postprocess.min_segment_voxels=0",
                                                    f"postprocess.semantic_smoothing_radius={radius}"])),
                          [f"results_dir={tmp_path / 'r'}"])
        labels[radius] = panoptic_3d(SimpleNamespace(class_logits=no_object), out3d, 0, cfg).semantic.tolist()
    assert labels[0] == [wall, wall, floor, wall, wall]
    assert labels[1] == [wall] * 5
