"""Training on the CPU: learning, bit-identical resume, DDP over two processes, staged starts, the 3D losses."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from helpers import EXAMPLE, REPO, spec_file

from nvpanoptix3d.cli import load_config
from nvpanoptix3d.data import collate, get_dataset
from nvpanoptix3d.engine.module import PanopticModule


@pytest.mark.slow
def test_loss_falls_when_overfitting_one_batch(tmp_path):
    torch.manual_seed(0)
    cfg = load_config(str(spec_file(tmp_path)), ["results_dir=" + str(tmp_path / "r"), "dataset.augment=false"])
    module = PanopticModule(cfg)
    batch = collate([get_dataset(cfg.dataset, "train")[i] for i in range(2)])
    opt = torch.optim.AdamW(module.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        loss = _step(module, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert min(losses[-3:]) < 0.75 * losses[0], losses


def test_any_width_the_schema_allows_builds_and_runs(tmp_path):
    # AutoML samples any integer in the bounds; a 3D width of 25 once crashed GroupNorm (50 channels, 4 groups)
    cfg = load_config(str(spec_file(tmp_path)), ["results_dir=" + str(tmp_path / "r"), "model.frustum3d.feature_dim=25",
                                                  "model.sem_seg_head.hidden_dim=36"])
    module = PanopticModule(cfg)
    batch = collate([get_dataset(cfg.dataset, "train")[0]])
    assert torch.isfinite(_step(module, batch))


def _step(module, batch):
    from nvpanoptix3d.model.losses import compute_losses, occupancy_grids
    g64, g128 = occupancy_grids(batch, (256, 256, 256))
    out = module.model(batch.images, g64, g128)
    return sum(compute_losses(out, batch, module.cfg, g64, g128, module.model.stage3d.label).values())


def _train(tmp_path, name, extra):
    spec = spec_file(tmp_path, ["dataset.augment=false", "train.checkpoint_interval=1", "train.validation_interval=5"])
    cmd = [sys.executable, "-m", "nvpanoptix3d", "train", "-e", str(spec), f"results_dir={tmp_path / name}", *extra]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    blob = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return blob["state_dict"]


@pytest.mark.slow
def test_resume_continues_bit_identically(tmp_path):
    # with the mirror on: which frames a step mirrors must not depend on where the run was resumed
    straight = _train(tmp_path, "straight", ["train.num_epochs=2", "dataset.mirror=0.5"])
    _train(tmp_path, "first", ["train.num_epochs=1", "dataset.mirror=0.5"])
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = _train(tmp_path, "resumed", ["train.num_epochs=2", "dataset.mirror=0.5",
                                          f"train.resume_training_checkpoint_path={first}"])
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    events = [json.loads(line) for line in (tmp_path / "straight" / "status.json").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "checkpoint"] == [1, 2]
    assert all("losses" in e and "images_per_s" in e for e in events if e["event"] == "epoch")


@pytest.mark.slow
def test_ddp_over_two_cpu_processes_records_once_and_validates_each_frame_once(tmp_path):
    """The multi-GPU path on gloo: sharded training and validation, metric sums all-reduced, one status record
    per event. The ranks' merged validation must equal a one-process evaluation of the saved checkpoint."""
    from nvpanoptix3d.engine.train import CPU_PROCESSES_ENV
    two_frames = EXAMPLE / "meta" / "train.json"   # one validation frame per process
    spec = spec_file(tmp_path, [f"dataset.val.json_path={two_frames}", "dataset.val.batch_size=1"])
    env = {**os.environ, CPU_PROCESSES_ENV: "2"}
    run = subprocess.run([sys.executable, "-m", "nvpanoptix3d", "train", "-e", str(spec),
                          f"results_dir={tmp_path / 'ddp'}"], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    events = [json.loads(line) for line in (tmp_path / "ddp" / "status.json").read_text().splitlines()]
    assert [e["devices"] for e in events if e["event"] == "start"] == [2]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1]
    epoch = next(e for e in events if e["event"] == "epoch")
    one = subprocess.run([sys.executable, "-m", "nvpanoptix3d", "evaluate", "-e", str(spec),
                          f"results_dir={tmp_path / 'eval'}", "evaluate.split=val",
                          f"evaluate.checkpoint={tmp_path / 'ddp' / 'checkpoints' / 'last.ckpt'}"],
                         capture_output=True, text=True, cwd=REPO)
    assert one.returncode == 0, one.stderr[-3000:]
    alone = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("pq", "depth_abs_rel", "depth_rmse", "prq", "occupancy_iou", "semantic_miou"):
        assert epoch[key] == pytest.approx(alone[key], rel=1e-5, abs=1e-9), key
    # fewer validation frames than processes would leave one process without a shard: refused up front
    short = subprocess.run([sys.executable, "-m", "nvpanoptix3d", "train", "-e", str(spec),
                            f"results_dir={tmp_path / 'short'}",
                            f"dataset.val.json_path={EXAMPLE / 'meta' / 'val.json'}"],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert short.returncode == 2 and "dataset.val: 1 frame(s) for 2 training processes" in short.stderr


@pytest.mark.slow
def test_cli_contract_exit_codes(tmp_path):
    spec = spec_file(tmp_path)
    bad = subprocess.run([sys.executable, "-m", "nvpanoptix3d", "train", "-e", str(spec), "train.num_gpuz=1",
                          f"results_dir={tmp_path / 'x'}"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "train.num_gpuz: unknown key" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "nvpanoptix3d", "evaluate", "-e", str(spec),
                              f"results_dir={tmp_path / 'y'}", "dataset.frustum_mask_path=/nope.npz"],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and "ensure meta/frustum_mask.npz is present" in missing.stderr.lower()
    assert json.loads((tmp_path / "y" / "status.json").read_text().splitlines()[-1])["event"] == "failed"


@pytest.mark.slow
def test_fine_tuning_takes_the_backbone_of_checkpoint_2d(tmp_path):
    """A spec that names another backbone than the 2D checkpoint's would load none of its backbone tensors."""
    _train(tmp_path, "parent", [])
    parent = tmp_path / "parent" / "checkpoints" / "last.ckpt"
    child = _train(tmp_path, "child", ["model.backbone_type=vggt", "model.embed_dim=32", "model.depth=1",
                                       f"train.checkpoint_2d={parent}"])
    assert any(k.startswith("model.backbone.net.") for k in child)  # transformers' ResNet, as the parent
    init = [json.loads(line) for line in (tmp_path / "child" / "status.json").read_text().splitlines()
            if json.loads(line)["event"] == "init"]
    assert init[0]["stage"] == "2d" and init[0]["loaded"] > 0 and init[0]["skipped"] == 0


@pytest.mark.slow
def test_a_2d_only_run_ships_with_the_3d_stage_of_other_weights(tmp_path):
    """scripts/gpu_train.sh STAGE=2d: the 2D checkpoint's tensors plus the 3D stage of the weights it came from."""
    from nvpanoptix3d.engine.checkpoint import load_state_dict
    flat = _train(tmp_path, "flat", ["dataset.enable_3d=false"])
    full = _train(tmp_path, "full", [])
    assert not any(k.startswith("model.stage3d.") for k in flat)
    out = tmp_path / "merged.safetensors"
    script = [sys.executable, "scripts/export_weights.py"]
    subprocess.run([*script, str(tmp_path / "flat/checkpoints/last.ckpt"), str(out),
                    "--stage3d-from", str(tmp_path / "full/checkpoints/last.ckpt")], check=True, cwd=REPO)
    merged = load_state_dict(out)
    assert set(merged) == {k[len("model."):] for k in full}
    from safetensors.torch import load_file
    assert sum(v.dtype == torch.int8 for v in load_file(str(out)).values()) > 10   # the export's default storage
    for key, value in merged.items():
        original = (flat if not key.startswith("stage3d.") else full)["model." + key]
        if not original.is_floating_point():
            assert torch.equal(value, original)
        else:  # int8 matrices: within half a step (absmax / 127) and fp16's rounding of the original
            step = original.abs().max() / 127 if value.numel() >= 4096 and value.ndim >= 2 else 0.0
            assert (value.float() - original).abs().max() <= step / 2 + 1e-3 * original.abs().max() + 1e-6, key
    refused = subprocess.run([*script, str(tmp_path / "full/checkpoints/last.ckpt"), str(tmp_path / "x.safetensors"),
                              "--stage3d-from", str(out)], capture_output=True, text=True, cwd=REPO)
    assert refused.returncode != 0 and "has its own 3D stage" in refused.stderr
    # --average (a model soup): the tensor-wise mean; a copy of the checkpoint shifted by one averages to +0.5
    blob = torch.load(tmp_path / "full/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    blob["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    torch.save(blob, tmp_path / "shifted.ckpt")
    soup = tmp_path / "soup.safetensors"
    subprocess.run([*script, str(tmp_path / "full/checkpoints/last.ckpt"), str(soup), "--fp16", "--average",
                    str(tmp_path / "shifted.ckpt")], check=True, cwd=REPO)
    averaged = load_state_dict(soup)
    assert averaged.keys() == merged.keys()
    for key, value in averaged.items():
        first = full["model." + key]
        expected = first + 0.5 if first.is_floating_point() else first  # counters stay the checkpoint's
        assert torch.allclose(value.float(), expected.float(), rtol=1e-3, atol=1e-3), key
    other = subprocess.run([*script, str(tmp_path / "full/checkpoints/last.ckpt"), str(tmp_path / "y.safetensors"),
                            "--average", str(tmp_path / "flat/checkpoints/last.ckpt")],
                           capture_output=True, text=True, cwd=REPO)
    assert other.returncode != 0 and "another architecture" in other.stderr


def test_training_labels_only_the_voxels_its_losses_read(tmp_path):
    """Training runs the 3D label heads on truly occupied candidates only: losses and gradients must be those
    of labelling every candidate densely (the export path)."""
    from nvpanoptix3d.model.losses import compute_losses, occupancy_grids
    cfg = load_config(str(spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}"])
    torch.manual_seed(0)
    module = PanopticModule(cfg).train()
    dataset = get_dataset(cfg.dataset, "train")
    batch = collate([dataset[0], dataset[1]])
    g64, g128 = occupancy_grids(batch, tuple(cfg.model.frustum3d.grid_dimensions))

    def losses_and_grads(dense: bool):
        module.zero_grad()
        out = module.model(batch.images, g64, g128)
        stage, o = module.model.stage3d, out.out3d
        label = stage.label
        if dense:
            sem, query = stage._heads(o.fine_features, stage.lifter.features_at(o.fine_index, 1, o.pixels),
                                      o.query_embed)
            label = lambda _, rows: (sem[rows], query[rows])  # noqa: E731
        losses = compute_losses(out, batch, cfg, g64, g128, label)
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in module.model.stage3d.named_parameters() if p.grad is not None}
        return {k: float(v) for k, v in losses.items()}, grads

    sparse_losses, sparse_grads = losses_and_grads(False)
    dense_losses, dense_grads = losses_and_grads(True)
    assert sparse_losses["sem3d"] > 0 and sparse_losses["inst3d"] > 0
    assert sparse_losses == pytest.approx(dense_losses, rel=1e-5)
    assert sparse_grads.keys() == dense_grads.keys() and any(n.startswith("semantic.") for n in sparse_grads)
    for name in dense_grads:
        assert torch.allclose(sparse_grads[name], dense_grads[name], rtol=1e-4, atol=1e-6), name


def test_hidden_voxels_label_losses_weighted_by_occluded_label_weight(tmp_path):
    """model.frustum3d.occluded_label_weight: training marks the candidates at least 4 voxels behind the lifted depth
    (as Lifter.behind_depth measures it), and their semantic cross-entropy weighs W against 1 in the mean."""
    from types import SimpleNamespace

    from torch.nn import functional as F

    from nvpanoptix3d.model.losses import _label_losses, label_weights, occupancy_grids
    # random weights: with this seed and no image guide, the fine level has occupied candidates of several segments
    cfg = load_config(str(spec_file(tmp_path, ["model.depth_head.guide_channels=0"])),
                      [f"results_dir={tmp_path / 'r'}"])
    torch.manual_seed(0)
    module = PanopticModule(cfg).train()
    batch = collate([get_dataset(cfg.dataset, "train")[0]])
    g64, g128 = occupancy_grids(batch, tuple(cfg.model.frustum3d.grid_dimensions))
    out = module.model(batch.images, g64, g128)
    stage = module.model.stage3d
    grid, behind = stage.lifter.behind_depth(out.out3d.fine_index, 1, module.model.lifting_depth(out.out2d))
    in_image = (grid.abs() <= 1).all(-1)[..., 0]
    hidden = out.out3d.fine_hidden
    assert hidden.any() and (~hidden).any()
    clear = (behind - 4).abs() > 1e-3                                  # away from float rounding at the border
    assert torch.equal(hidden[clear], (in_image & (behind >= 4))[clear])
    # on the real batch the weighting leaves the occupancy terms and changes the label ones
    from nvpanoptix3d.model.losses import compute_losses
    plain = compute_losses(out, batch, cfg, g64, g128, stage.label)
    f3 = dataclasses.replace(cfg.model.frustum3d, occluded_label_weight=3.0)
    both = compute_losses(out, batch, dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, frustum3d=f3)),
                          g64, g128, stage.label)
    assert all(plain[k] == both[k] for k in ("occ64", "occ128", "occ256"))
    for key in ("sem3d", "inst3d"):
        assert torch.isfinite(both[key]) and not math.isclose(float(plain[key]), float(both[key]), rel_tol=1e-4), key

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    occ = torch.tensor([[True, True, True, False]])
    sem = torch.tensor([[0, 0, 2, 1]])
    o = SimpleNamespace(fine_logits=torch.zeros(1, 4), fine_hidden=torch.tensor([[False, True, False, True]]))
    label = lambda *_: (logits, torch.zeros(3, 1))  # noqa: E731
    none = SimpleNamespace(query=torch.zeros(0, dtype=torch.long))
    ce = F.cross_entropy(logits, torch.tensor([0, 0, 2]), reduction="none")
    plain, _ = _label_losses(o, occ, sem, sem, none, label)
    f3 = dataclasses.replace(cfg.model.frustum3d, occluded_label_weight=3.0)
    weighted, _ = _label_losses(o, occ, sem, sem, none, label, label_weights(o, f3))
    assert math.isclose(float(plain), float(ce.mean()), rel_tol=1e-6)
    assert math.isclose(float(weighted), float((ce[0] + 3 * ce[1] + ce[2]) / 5), rel_tol=1e-6)


def test_set_losses_of_stacked_decoder_layers_equal_each_layer_alone(tmp_path):
    """The eleven decoder layers' set losses run as one stacked pass: each layer's terms must be what that layer
    alone gives, and the class term torch's weighted cross-entropy mean."""
    from torch.nn import functional as F

    from nvpanoptix3d.model.losses import match, set_losses
    cfg = load_config(str(spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}", "dataset.enable_3d=false"])
    torch.manual_seed(0)
    module = PanopticModule(cfg).train()
    dataset = get_dataset(cfg.dataset, "train")
    batch = collate([dataset[0], dataset[1]])
    out = module.model(batch.images)
    matches = match(out, batch, cfg)
    o = out.out2d
    layers = [*o.aux, (o.class_logits, o.mask_logits)]
    assert len(layers) > 1 and len(matches.query) > 0
    stacked = set_losses(torch.stack([c for c, _ in layers]), torch.stack([m for _, m in layers]), matches, cfg)
    mf = cfg.model.mask_former
    for i, (cls, masks) in enumerate(layers):
        alone = set_losses(cls[None], masks[None], matches, cfg)
        for term in ("class", "mask", "dice"):
            assert float(stacked[term][i]) == pytest.approx(float(alone[term][0]), rel=1e-5), (term, i)
        target = torch.zeros(cls.shape[:2], dtype=torch.long)
        target[matches.image, matches.query] = matches.segments.classes[matches.segment]
        weight = torch.ones(cls.shape[-1])
        weight[0] = mf.no_object_weight
        reference = F.cross_entropy(cls.transpose(1, 2), target, weight=weight)
        assert float(stacked["class"][i]) == pytest.approx(mf.class_weight * float(reference), rel=1e-5)


@pytest.mark.slow
def test_freeze_2d_trains_the_3d_stage_alone(tmp_path):
    _train(tmp_path, "parent", [])
    parent_path = tmp_path / "parent" / "checkpoints" / "last.ckpt"
    parent = torch.load(parent_path, map_location="cpu", weights_only=False)["state_dict"]
    child = _train(tmp_path, "child", ["train.freeze_2d=true", f"train.checkpoint_2d={parent_path}",
                                       f"train.checkpoint_3d={parent_path}"])
    two_d = [k for k in parent if k.startswith(("model.backbone.", "model.head2d."))]
    assert any("running_mean" in k for k in two_d)  # batch-norm statistics must not move either
    for key in two_d:
        assert torch.equal(parent[key], child[key]), key
    assert any(not torch.equal(parent[k], child[k]) for k in parent if k.startswith("model.stage3d."))


def test_mirror_flips_the_chosen_frames_with_their_truth(tmp_path):
    """dataset.mirror: a mirrored frame keeps its labels and depth on the pixels they belong to, and its 3D truth
    projects onto the mirrored pixels; the other frames and the loader's batch stay as they were."""
    cfg = load_config(str(spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}"])
    data = get_dataset(cfg.dataset, "train")
    asymmetric = next(s for s in data if not torch.equal(s.semantic2d, s.semantic2d.flip(-1)))
    batch = collate([asymmetric, data[0]])
    before = batch.images.clone(), batch.occupied[0].clone()
    with pytest.raises(ValueError, match="mirror_x"):
        batch.mirrored(torch.tensor([True, False]))
    grid = PanopticModule(cfg).model.stage3d.grid
    out = batch.mirrored(torch.tensor([True, False]), grid.mirror_x_index, grid.dims[0])
    assert torch.equal(batch.images, before[0]) and torch.equal(batch.occupied[0], before[1])
    for key in ("images", "depths", "semantic2d", "instance2d"):
        original, mirrored = getattr(batch, key), getattr(out, key)
        assert not torch.equal(original[0], original[0].flip(-1)), key  # the check below could not fail otherwise
        assert torch.equal(mirrored[0], original[0].flip(-1)) and torch.equal(mirrored[1], original[1]), key
    # the depth at the left-most pixels of the mirrored frame is the original right-most column's
    assert torch.equal(out.depths[0, :, 0], batch.depths[0, :, -1])
    assert torch.equal(out.occupied[1], batch.occupied[1]) and torch.equal(out.semantic3d[1], batch.semantic3d[1])
    # every truth voxel kept its labels and lands where the mirrored image sees it: pixel u -> width - 1 - u, within
    # the grid's 0.22-voxel asymmetry; depth (z) and height (y) unchanged
    assert len(out.occupied[0]) == len(batch.occupied[0]) and torch.equal(out.semantic3d[0], batch.semantic3d[0])
    k = grid.intrinsics
    def pixel_u(index):  # noqa: E306
        p = grid.grid_to_camera(index)
        return p[:, 0] / p[:, 2] * k.fx + k.cx, p[:, 2]
    u, z = pixel_u(batch.occupied[0])
    u_mirrored, z_mirrored = pixel_u(out.occupied[0])
    assert torch.equal(z, z_mirrored) and torch.equal(out.occupied[0][:, 1], batch.occupied[0][:, 1])
    tolerance = 0.25 * grid.voxel_size * k.fx / z
    assert ((u_mirrored - (k.width - 1 - u)).abs() <= tolerance).all()


def test_given_depth_frames_lift_the_true_depth_where_it_has_a_value_the_predicted_elsewhere(tmp_path):
    """lifting_depth: a frame `use_given` picks takes the true depth at every pixel with one (0: none there keeps the
    prediction); a frame it does not pick keeps the prediction everywhere."""
    from nvpanoptix3d.model.network import PanopticReconstruction
    cfg = load_config(str(spec_file(tmp_path, [])), [f"results_dir={tmp_path}"])
    model = PanopticReconstruction(cfg).eval()
    batch = collate([get_dataset(cfg.dataset, "train", True)[i] for i in range(2)])
    with torch.no_grad():
        out2d = model.forward_2d(batch.images)
        predicted = model.lifting_depth(out2d)
        h, w = predicted.shape[-2:]
        truth = torch.full((2, h, w), 2.5)
        truth[:, 0, :3] = 0.0
        lifted = model.lifting_depth(out2d, truth, torch.tensor([True, False]))
    assert torch.equal(lifted[0, 1:], truth[0, 1:]) and torch.equal(lifted[0, 0, 3:], truth[0, 0, 3:])
    assert torch.equal(lifted[0, 0, :3], predicted[0, 0, :3]) and not torch.equal(predicted[0, 0, :3], truth[0, 0, :3])
    assert torch.equal(lifted[1], predicted[1])
    assert torch.equal(model.lifting_depth(out2d, None, torch.tensor([True, True])), predicted)
