"""The depth head and the depth the 3D stage lifts: mirror averaging, the refiner, the image guide, the depth
loss's terms, the layout."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers import spec_file

from nvpanoptix3d.cli import load_config
from nvpanoptix3d.data import collate, get_dataset
from nvpanoptix3d.engine.module import PanopticModule


def test_flip_average_makes_the_depth_mirror_equivariant(tmp_path):
    """The mean of the depth and the mirrored image's depth mirrored back is exactly mirror-equivariant; a random
    depth head alone is not, so a flip on the wrong axis or a missing flip back fails here. Training sees the
    plain depth."""
    cfg = load_config(str(spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}"])
    assert cfg.postprocess.flip_average
    torch.manual_seed(0)
    model = PanopticModule(cfg).model.eval()
    images = collate([get_dataset(cfg.dataset, "train")[i] for i in (0, 1)]).images
    with torch.no_grad():
        averaged = model.forward_2d(images).depth
        assert torch.allclose(model.forward_2d(images.flip(-1)).depth, averaged.flip(-1), atol=1e-5)
        model.flip_average = False
        plain = model.forward_2d(images).depth
        of_mirror = model.forward_2d(images.flip(-1)).depth.flip(-1)
        assert not torch.allclose(plain, of_mirror, atol=1e-3)
        assert torch.allclose(averaged, 0.5 * (plain + of_mirror), atol=1e-5)
        model.train()
        trained_on = model.forward_2d(images).depth
        model.flip_average = True
        assert torch.equal(model.forward_2d(images).depth, trained_on)


def _grown_from_a_head_without(tmp_path, key: str, value: int, part: str):
    """A model with model.depth_head.<key>=value that loaded the 2D stage of one built with <key>=0: every stored
    tensor fits and the added part gets none. Returns (the base config, the trained model, the grown one)."""
    from nvpanoptix3d.model.network import PanopticReconstruction
    base = load_config(str(spec_file(tmp_path, [f"model.depth_head.{key}=0"])), [f"results_dir={tmp_path}"])
    wider = load_config(str(spec_file(tmp_path, [f"model.depth_head.{key}={value}"])), [f"results_dir={tmp_path}"])
    torch.manual_seed(0)
    trained, grown = PanopticReconstruction(base).eval(), PanopticReconstruction(wider).eval()
    result = grown.load_stage(trained.state_dict(), "2d")
    assert not result.skipped and not any(f".{part}." in n for n in result.loaded)
    return base, trained, grown


def test_a_layout_refiner_added_to_a_trained_depth_head_starts_from_its_depth(tmp_path):
    """model.depth_head.refine_layers: weights trained without the refiner load into a model with one (the refiner
    gets nothing) and give the same depth until it trains; its correction then moves depth, within the range."""
    base, trained, grown = _grown_from_a_head_without(tmp_path, "refine_layers", 2, "refiner")
    images = torch.rand(2, 3, 240, 320)
    with torch.no_grad():
        assert torch.equal(trained.forward_2d(images).depth, grown.forward_2d(images).depth)
        for p in grown.head2d.depth_head.refiner.delta.parameters():
            p.fill_(5.0)                       # a correction far past the range must still give depths inside it
        depth = grown.forward_2d(images).depth
    assert not torch.allclose(depth, trained.forward_2d(images).depth)
    assert depth.min() >= base.dataset.depth_min and depth.max() <= base.dataset.depth_max * (1 + 1e-5)


def test_an_image_guide_added_to_a_trained_depth_head_starts_from_its_depth_at_stride_2(tmp_path):
    """model.depth_head.guide_channels: weights trained without the guide load into a model with one and give
    the stride-4 logit bilinearly upsampled to stride 2 until the guide trains; then its correction moves the
    depth within the range, the depth loss reaches its image stem, and the 3D stage lifts the finer depth."""
    import math as m

    from torch.nn import functional as F

    from nvpanoptix3d.model.losses import depth_loss
    base, trained, grown = _grown_from_a_head_without(tmp_path, "guide_channels", 8, "guide")
    trained.flip_average = grown.flip_average = False
    images = torch.rand(2, 3, 240, 320)
    log_min, log_max = m.log(base.dataset.depth_min), m.log(base.dataset.depth_max)
    with torch.no_grad():
        coarse = trained.forward_2d(images).depth
        fine = grown.forward_2d(images).depth
        assert coarse.shape[-2:] == (60, 80) and fine.shape[-2:] == (120, 160)
        logit = torch.logit((coarse.log() - log_min) / (log_max - log_min))
        up = F.interpolate(logit[:, None], size=(120, 160), mode="bilinear", align_corners=False)[:, 0]
        assert torch.allclose(fine, torch.exp(log_min + (log_max - log_min) * torch.sigmoid(up)), rtol=1e-4)
        for p in grown.head2d.depth_head.guide.delta.parameters():
            p.fill_(5.0)
        moved = grown.forward_2d(images).depth
    assert not torch.allclose(moved, fine)
    assert moved.min() >= base.dataset.depth_min and moved.max() <= base.dataset.depth_max * (1 + 1e-5)

    grown.train()
    loss = depth_loss(grown.forward_2d(images).depth, torch.full((2, 240, 320), 2.0))
    loss.backward()
    assert grown.head2d.depth_head.guide.stem[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        out = grown(images)
    assert out.out3d is not None and out.out3d.fine_logits.shape[0] == 2


@pytest.mark.parametrize("size_in, size_out", [((60, 80), (8, 10)), ((60, 80), (15, 20)), ((7, 9), (3, 4))])
def test_the_refiners_exportable_pooling_equals_adaptive_average_pooling(size_in, size_out):
    from torch.nn import functional as F

    from nvpanoptix3d.model.head2d import adaptive_mean
    x = torch.rand(2, 1, *size_in)
    assert torch.allclose(adaptive_mean(x, size_out), F.adaptive_avg_pool2d(x, size_out), atol=1e-6)


@pytest.mark.parametrize("key, built", [("depth_head.refine_layers", lambda m: m.head2d.depth_head.refiner),
                                         ("depth_head.guide_channels", lambda m: m.head2d.depth_head.guide)])
def test_a_checkpoint_stored_before_an_added_part_existed_loads_without_it(tmp_path, key, built):
    """A stored model section without an added architecture key (predictor.ADDED_KEYS) was trained without that
    part: evaluate and inference must build none (the spec's default would ask for tensors the file lacks)."""
    from nvpanoptix3d.engine.checkpoint import save_safetensors
    from nvpanoptix3d.engine.predictor import load_for_action
    from nvpanoptix3d.model.network import PanopticReconstruction
    section, leaf = key.split(".")
    old = load_config(str(spec_file(tmp_path, [f"model.{key}=0"])), [f"results_dir={tmp_path}"])
    stored = dataclasses.asdict(old.model)
    del stored[section][leaf]
    path = tmp_path / "old.safetensors"
    save_safetensors(PanopticReconstruction(old).state_dict(), path, stored)
    # a spec that asks for the part
    spec = load_config(str(spec_file(tmp_path, [f"model.{key}=2"])), [f"results_dir={tmp_path}"])
    assert getattr(getattr(spec.model, section), leaf) > 0
    module = load_for_action(spec, str(path), "evaluate.checkpoint", log=lambda *_: None)
    assert built(module.model) is None


def test_log_depth_gradient_loss_hand_computed():
    """depth_head.gradient_weight: a prediction off by a constant factor costs nothing; a step of log 2 between
    columns 1 and 2 of a 4 x 4 image costs log 2 x (4/24 at stride 1 + 2/4 at stride 2) / 4 scales; pixels
    without truth (depth 0) are never read."""

    from nvpanoptix3d.model.losses import depth_loss, log_gradient_loss
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    assert float(log_gradient_loss(torch.full((1, 4, 4), math.log(1.5)), valid)) == 0.0
    step = torch.zeros(1, 4, 4)
    step[..., 2:] = math.log(2)
    assert math.isclose(float(log_gradient_loss(step, valid)), math.log(2) / 6, rel_tol=1e-6)
    gt = torch.full((1, 4, 4), 2.0)
    pred = gt * torch.exp(step)
    gt_hole = gt.clone()
    gt_hole[0, 3, 3] = 0.0
    hole = float(depth_loss(pred, gt_hole, 1.0))
    pred[0, 3, 3] = 100.0                                   # where there is no truth: must not matter
    assert math.isclose(float(depth_loss(pred, gt_hole, 1.0)), hole, rel_tol=1e-6)
    assert float(depth_loss(pred, gt_hole, 1.0)) > float(depth_loss(pred, gt_hole, 0.0))


def test_image_scale_loss_hand_computed():
    """depth_head.scale_weight: image 0 is 2x too far everywhere, image 1 right on half its pixels and 4x too near
    on the other half, image 2 has no truth: ((log 2)^2 + (log 4 / 2)^2) / 2 = (log 2)^2; a per-pixel wobble
    with zero mean per image costs nothing."""

    from nvpanoptix3d.model.losses import depth_loss, image_scale_loss
    log_ratio = torch.zeros(3, 2, 2)
    log_ratio[0] = math.log(2)
    log_ratio[1, 0] = -math.log(4)
    valid = torch.ones(3, 2, 2, dtype=torch.bool)
    valid[2] = False
    log_ratio[2] = 7.0                                      # no truth: must not count
    assert math.isclose(float(image_scale_loss(log_ratio, valid)), math.log(2) ** 2, rel_tol=1e-6)
    wobble = torch.tensor([[[0.1, -0.1], [-0.2, 0.2]]])
    assert abs(float(image_scale_loss(wobble, torch.ones(1, 2, 2, dtype=torch.bool)))) < 1e-12
    gt = torch.full((1, 4, 4), 2.0)
    assert float(depth_loss(gt * 1.5, gt, 0.0, 1.0)) > float(depth_loss(gt * 1.5, gt, 0.0, 0.0))


def test_segment_balanced_depth_loss_hand_computed():
    """model.depth_head.segment_balance: at 1 a two-pixel chair weighs what a six-pixel wall does, at 0 each pixel
    alike; void pixels form one segment; the weights are normalised, so a uniform error costs the same."""
    from nvpanoptix3d.model.losses import depth_loss, segment_balance_weight
    semantic = torch.tensor([[[1, 1, 9, 9], [9, 9, 9, 9]]])        # a chair (class 1, instance 4) and a wall (9)
    instance = torch.tensor([[[4, 4, 0, 0], [0, 0, 0, 0]]])
    gt = torch.full((1, 2, 4), 2.0)
    pred = gt.clone()
    pred[0, 0, 0] = 2.0 * math.e ** 0.3                         # one chair pixel off by 0.3 in log depth
    w1 = segment_balance_weight(semantic, instance, 1.0)
    assert torch.allclose(w1, torch.tensor([[[1 / 2, 1 / 2, 1 / 6, 1 / 6], [1 / 6] * 4]]))
    assert torch.equal(segment_balance_weight(semantic, instance, 0.0), torch.ones(1, 2, 4))
    plain, balanced = float(depth_loss(pred, gt)), float(depth_loss(pred, gt, pixel_weight=w1))
    variance = 0.5 * torch.tensor([0.3] + [0.0] * 7).var(unbiased=False).item()
    assert math.isclose(plain, 0.3 / 8 + variance, rel_tol=1e-5)
    # normalised weights: chair pixels 0.5 / mean(1/6 ...) -> 0.5 / (2/8) = 2, so the pixel costs 2 x 0.3 / 8
    assert math.isclose(balanced, 2 * 0.3 / 8 + variance, rel_tol=1e-5)
    assert math.isclose(float(depth_loss(gt * 1.1, gt, pixel_weight=w1)), float(depth_loss(gt * 1.1, gt)),
                        rel_tol=1e-5)
    void = segment_balance_weight(torch.tensor([[[0, 0, 9, 9]]]), torch.zeros(1, 1, 4, dtype=torch.long), 1.0)
    assert torch.allclose(void, torch.full((1, 1, 4), 0.5))


def test_absolute_depth_term_hand_computed():
    """model.depth_head.absolute_weight: the mean error in metres over pixels with truth, so the same 10% costs a
    wall at 5 m five times what it costs a chair at 1 m, where the log terms charge both alike."""
    from nvpanoptix3d.model.losses import depth_loss
    gt = torch.tensor([[[1.0, 5.0], [2.0, 0.0]]])                 # the 0 has no truth
    pred = torch.tensor([[[1.1, 5.0], [2.0, 9.0]]])
    assert math.isclose(float(depth_loss(pred, gt, absolute_weight=2.0) - depth_loss(pred, gt)), 2.0 * 0.1 / 3,
                        rel_tol=1e-5)
    near, far = gt.clone(), gt.clone()
    near[0, 0, 0], far[0, 0, 1] = 1.1, 5.5                       # 10% off, at 1 m and at 5 m
    log_near, log_far = float(depth_loss(near, gt)), float(depth_loss(far, gt))
    assert math.isclose(log_near, log_far, rel_tol=1e-5)
    extra_near = float(depth_loss(near, gt, absolute_weight=1.0)) - log_near
    extra_far = float(depth_loss(far, gt, absolute_weight=1.0)) - log_far
    assert math.isclose(extra_far, 5 * extra_near, rel_tol=1e-4)


def test_the_spec_chooses_the_weightless_depth_steps_whatever_the_checkpoint_stored(tmp_path):
    """postprocess.layout_planes has no weights: evaluate / inference take the spec's choice, not the one an
    earlier version stored with the checkpoint's architecture (then model.depth_head.layout_planes)."""
    from nvpanoptix3d.engine.checkpoint import save_safetensors
    from nvpanoptix3d.engine.predictor import load_for_action
    from nvpanoptix3d.labels import FLOOR, WALL
    from nvpanoptix3d.model.layout import ManhattanLayout
    from nvpanoptix3d.model.network import PanopticReconstruction
    stored = load_config(str(spec_file(tmp_path)), [f"results_dir={tmp_path}"])
    path = tmp_path / "weights.safetensors"
    legacy = dataclasses.asdict(stored.model)
    legacy["depth_head"].update(layout_planes="walls_floor", flip_average=True)
    save_safetensors(PanopticReconstruction(stored).state_dict(), path, legacy)
    for choice, expected in (("off", None), ("walls", (WALL,)), ("walls_floor", (FLOOR, WALL))):
        spec = load_config(str(spec_file(tmp_path, [f"postprocess.layout_planes={choice}"])),
                           [f"results_dir={tmp_path}"])
        layout = load_for_action(spec, str(path), "evaluate.checkpoint", log=lambda *_: None).model.layout
        if expected is None:
            assert layout is None
        else:
            assert isinstance(layout, ManhattanLayout) and layout.settings.replace == expected


def test_layout_fits_out_of_training_only(tmp_path):
    """The layout fit would cost the 3D training step 2.6x its time on the GPU: training skips it; validation and
    inference (eval mode) fit it when layout_planes is on."""
    from nvpanoptix3d.model.network import PanopticReconstruction
    cfg = load_config(str(spec_file(tmp_path)), [f"results_dir={tmp_path}"])
    model = PanopticReconstruction(cfg)
    calls = []
    fit = model.layout

    def counting(depth, *rest):
        calls.append(model.training)
        return fit(depth, *rest)
    model.layout = counting
    images = collate([get_dataset(cfg.dataset, "train", True)[0]]).images
    with torch.no_grad():
        model.train()(images)
        model.eval()(images)
    assert calls == [False]
