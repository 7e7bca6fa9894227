"""Engine behaviour on the CPU: spec round trips and errors, learning, bit-identical resume, CLI contract."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import EXAMPLE, REPO, TINY_OVERRIDES, TINY_TRAIN

from nvpanoptix3d.cli import apply_overrides, load_config
from nvpanoptix3d.config import ExperimentConfig, SpecError, from_dict, to_dict, validate_semantics
from nvpanoptix3d.data import collate, get_dataset
from nvpanoptix3d.engine.module import PanopticModule


def _data_overrides(root=EXAMPLE):
    meta, data = root / "meta", root / "data"
    return [f"dataset.label_map={meta / 'colormap.json'}", f"dataset.frustum_mask_path={meta / 'frustum_mask.npz'}",
            *(f"dataset.{s}.json_path={meta / (s + '.json')}" for s in ("train", "val", "test")),
            *(f"dataset.{s}.base_dir={data}" for s in ("train", "val", "test"))]


def _spec_file(tmp_path, extra=()):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(apply_overrides({}, [*_data_overrides(), *TINY_OVERRIDES, *TINY_TRAIN, *extra])))
    return path


def test_every_key_round_trips_yaml_dataclass_yaml():
    for action in ("train", "evaluate", "inference", "export"):
        template = yaml.safe_load((REPO / "references" / f"spec_template_{action}.yaml").read_text())
        cfg = from_dict(ExperimentConfig, template)
        again = to_dict(cfg)
        assert {k: again[k] for k in template} == template
        assert from_dict(ExperimentConfig, yaml.safe_load(yaml.safe_dump(again))) == cfg


def test_flip_average_makes_the_depth_mirror_equivariant(tmp_path):
    """The mean of the depth and the mirrored image's depth mirrored back is exactly mirror-equivariant; a random
    depth head alone is not, so a flip on the wrong axis or a missing flip back fails here. Training sees the
    plain depth."""
    cfg = load_config(str(_spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}"])
    assert cfg.model.depth_head.flip_average
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


def test_mirror_flips_the_chosen_frames_with_their_truth(tmp_path):
    """dataset.mirror: a mirrored frame keeps its labels and depth on the pixels they belong to, and its 3D truth
    projects onto the mirrored pixels; the other frames and the loader's batch stay as they were."""
    cfg = load_config(str(_spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}"])
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


def test_shipped_training_recipe_loads():
    """scripts/specs/gpu_synthetic.yaml only runs on the GPU machine: a bad key there would cost a device call."""
    cfg = load_config(str(REPO / "scripts" / "specs" / "gpu_synthetic.yaml"), ["results_dir=/tmp/unused"])
    assert cfg.model.backbone_type == "resnet18" and cfg.model.depth_head.scale_weight == 5.0
    assert cfg.model.depth_head.absolute_weight == 1.0


@pytest.mark.parametrize("spec, fragment", [
    ({"train": {"optim": {"lrr": 1}}}, "train.optim.lrr: unknown key"),
    ({"model": {"mask_former": {"dec_layers": 0}}}, "model.mask_former.dec_layers: 0 is below"),
    ({"dataset": {"enable_3d": "yes"}}, "dataset.enable_3d: expected true/false"),
    ({"train": {"precision": "fp8"}}, "train.precision: 'fp8' is not one of"),
])
def test_bad_keys_name_their_path(spec, fragment):
    with pytest.raises(SpecError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        from_dict(ExperimentConfig, spec)


def test_fsdp_and_downsample_mismatch_refused_with_the_reason():
    with pytest.raises(SpecError, match=r"train.distributed_strategy: 'fsdp' is not one of \['ddp'\]"):
        from_dict(ExperimentConfig, {"train": {"distributed_strategy": "fsdp"}})
    cfg = from_dict(ExperimentConfig, {"dataset": {"name": "matterport"}})
    with pytest.raises(SpecError, match="downsample_factor=2 for Matterport3D"):
        validate_semantics(cfg)


@pytest.mark.slow
def test_loss_falls_when_overfitting_one_batch(tmp_path):
    torch.manual_seed(0)
    cfg = load_config(str(_spec_file(tmp_path)), ["results_dir=" + str(tmp_path / "r"), "dataset.augment=false"])
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
    cfg = load_config(str(_spec_file(tmp_path)), ["results_dir=" + str(tmp_path / "r"), "model.frustum3d.feature_dim=25",
                                                  "model.sem_seg_head.hidden_dim=36"])
    module = PanopticModule(cfg)
    batch = collate([get_dataset(cfg.dataset, "train")[0]])
    assert torch.isfinite(_step(module, batch))


def _step(module, batch):
    from nvpanoptix3d.model.losses import compute_losses, occupancy_grids
    g64, g128 = occupancy_grids(batch, (256, 256, 256))
    out = module.model(batch.images, g64, g128)
    return sum(compute_losses(out, batch, module.cfg, g64, g128).values())


def _train(tmp_path, name, extra):
    spec = _spec_file(tmp_path, ["dataset.augment=false", "train.checkpoint_interval=1", "train.validation_interval=5"])
    cmd = [sys.executable, "-m", "nvpanoptix3d", "train", "-e", str(spec), f"results_dir={tmp_path / name}", *extra]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    blob = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return blob["state_dict"]


@pytest.mark.slow
def test_resume_continues_bit_identically(tmp_path):
    # with the mirror on: which frames a step mirrors must not depend on where the run was resumed
    straight = _train(tmp_path, "straight", ["train.num_epochs=2", "dataset.mirror=0.5"])
    _train(tmp_path, "first", ["train.num_epochs=1", "dataset.mirror=0.5"])
    resumed = _train(tmp_path, "resumed", ["train.num_epochs=2", "dataset.mirror=0.5",
                                          f"train.resume_training_checkpoint_path={tmp_path / 'first/checkpoints/last.ckpt'}"])
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
    spec = _spec_file(tmp_path, [f"dataset.val.json_path={two_frames}", "dataset.val.batch_size=1"])
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
                            f"results_dir={tmp_path / 'short'}", f"dataset.val.json_path={EXAMPLE / 'meta' / 'val.json'}"],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert short.returncode == 2 and "dataset.val: 1 frame(s) for 2 training processes" in short.stderr


@pytest.mark.slow
def test_cli_contract_exit_codes(tmp_path):
    spec = _spec_file(tmp_path)
    bad = subprocess.run([sys.executable, "-m", "nvpanoptix3d", "train", "-e", str(spec), "train.num_gpuz=1",
                          f"results_dir={tmp_path / 'x'}"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "train.num_gpuz: unknown key" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "nvpanoptix3d", "evaluate", "-e", str(spec),
                              f"results_dir={tmp_path / 'y'}", "dataset.frustum_mask_path=/nope.npz"],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and "ensure meta/frustum_mask.npz is present" in missing.stderr.lower()
    assert json.loads((tmp_path / "y" / "status.json").read_text().splitlines()[-1])["event"] == "failed"


def test_the_defaults_build_exactly_the_shipped_model():
    """A spec with no overrides is the shipped recipe: every tensor of the shipped weights loads into the default
    model and the default model has no tensor the weights lack."""
    from nvpanoptix3d.engine.checkpoint import checkpoint_config, load_state_dict
    from nvpanoptix3d.model.network import PanopticReconstruction
    shipped = REPO / "nvpanoptix3d" / "weights" / "nvpanoptix3d_synthetic.safetensors"
    model = PanopticReconstruction(ExperimentConfig())
    state = load_state_dict(shipped)
    loaded2d, skipped2d = dataclasses.astuple(model.load_stage(state, "2d"))
    loaded3d, skipped3d = dataclasses.astuple(model.load_stage(state, "3d"))
    assert not skipped2d and not skipped3d and all(n.startswith("stage3d.") for n in loaded3d)
    assert set(loaded2d) | set(loaded3d) == set(model.state_dict())
    # the stored architecture, its retired keys at their off values dropped, is the default one
    stored = from_dict(ExperimentConfig, {"model": checkpoint_config(shipped)}).model
    assert stored == ExperimentConfig().model


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


def test_inference_labels_only_occupied_voxels_with_the_same_result(tmp_path):
    """Out of training the 3D label heads run on voxels above the occupancy threshold only: the panoptic
    volume must be the one labelling every candidate gives."""
    from nvpanoptix3d.model.postprocess import panoptic_3d
    cfg = load_config(str(_spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}"])
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
    cfg3 = dataclasses.replace(cfg.model.frustum3d, occupancy_threshold=threshold)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, frustum3d=cfg3))
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
    lower = dataclasses.replace(cfg3, occupancy_threshold=threshold / 2)
    with pytest.raises(ValueError, match="occupancy_threshold"):
        panoptic_3d(out2d, sparse, 0, dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, frustum3d=lower)))


def test_reducing_2d_features_before_sampling_equals_reducing_after(tmp_path):
    """The 3D stage samples 2D features already reduced to its width (8x fewer channels): sampling is linear
    with zero padding, so it must equal reducing the sampled features, outside the image included."""
    from torch.nn import functional as F
    cfg = load_config(str(_spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}"])
    torch.manual_seed(0)
    stage = PanopticModule(cfg).model.stage3d
    pixels, depth = torch.randn(2, 32, 60, 80), torch.rand(2, 60, 80) * 5 + 0.5
    index = torch.randint(0, 256, (2, 5000, 3))
    outside = stage.lifter(index, 1, pixels, depth)[..., -1] == 0
    assert outside.any() and (~outside).any()
    after = stage.reduce(stage.lifter(index, 1, pixels, depth)[..., :-3])
    before = stage.lifter(index, 1, F.conv2d(pixels, stage.reduce.weight[:, :, None, None]), depth)[..., :-3]
    assert torch.allclose(before + stage.reduce.bias, after, atol=1e-5)


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
    cfg = load_config(str(_spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}"])
    torch.manual_seed(0)
    module = PanopticModule(cfg).train()
    dataset = get_dataset(cfg.dataset, "train")
    batch = collate([dataset[0], dataset[1]])
    g64, g128 = occupancy_grids(batch, tuple(cfg.model.frustum3d.grid_dimensions))

    def losses_and_grads(dense: bool):
        module.zero_grad()
        out = module.model(batch.images, g64, g128)
        if dense:
            fine_index, fine_feat, pixels, query_embed = out.out3d.label.args
            stage = module.model.stage3d
            sem, query = stage._heads(fine_feat, stage.lifter.features_at(fine_index, 1, pixels), query_embed)
            out.out3d.label = lambda rows: (sem[rows], query[rows])
        losses = compute_losses(out, batch, cfg, g64, g128)
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
    cfg = load_config(str(_spec_file(tmp_path, ["model.depth_head.guide_channels=0"])),
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
    plain = compute_losses(out, batch, cfg, g64, g128)
    f3 = dataclasses.replace(cfg.model.frustum3d, occluded_label_weight=3.0)
    both = compute_losses(out, batch, dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, frustum3d=f3)),
                          g64, g128)
    assert all(plain[k] == both[k] for k in ("occ64", "occ128", "occ256"))
    for key in ("sem3d", "inst3d"):
        assert torch.isfinite(both[key]) and not math.isclose(float(plain[key]), float(both[key]), rel_tol=1e-4), key

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    occ = torch.tensor([[True, True, True, False]])
    sem = torch.tensor([[0, 0, 2, 1]])
    o = SimpleNamespace(fine_logits=torch.zeros(1, 4), fine_hidden=torch.tensor([[False, True, False, True]]),
                        label=lambda rows: (logits, torch.zeros(3, 1)))
    none = SimpleNamespace(query=torch.zeros(0, dtype=torch.long))
    ce = F.cross_entropy(logits, torch.tensor([0, 0, 2]), reduction="none")
    plain, _ = _label_losses(o, occ, sem, sem, none)
    f3 = dataclasses.replace(cfg.model.frustum3d, occluded_label_weight=3.0)
    weighted, _ = _label_losses(o, occ, sem, sem, none, label_weights(o, f3))
    assert math.isclose(float(plain), float(ce.mean()), rel_tol=1e-6)
    assert math.isclose(float(weighted), float((ce[0] + 3 * ce[1] + ce[2]) / 5), rel_tol=1e-6)


def test_set_losses_of_stacked_decoder_layers_equal_each_layer_alone(tmp_path):
    """The eleven decoder layers' set losses run as one stacked pass: each layer's terms must be what that layer
    alone gives, and the class term torch's weighted cross-entropy mean."""
    from torch.nn import functional as F

    from nvpanoptix3d.model.losses import match, set_losses
    cfg = load_config(str(_spec_file(tmp_path)), [f"results_dir={tmp_path / 'r'}", "dataset.enable_3d=false"])
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


def test_freeze_2d_refused_where_it_would_train_nothing():
    cfg = from_dict(ExperimentConfig, {"train": {"freeze_2d": True, "checkpoint_2d": "w.safetensors"},
                                       "dataset": {"enable_3d": False}})
    with pytest.raises(SpecError, match="nothing is left to train"):
        validate_semantics(cfg)
    cfg = from_dict(ExperimentConfig, {"train": {"freeze_2d": True}})
    with pytest.raises(SpecError, match="set train.checkpoint_2d"):
        validate_semantics(cfg)


def test_a_layout_refiner_added_to_a_trained_depth_head_starts_from_its_depth(tmp_path):
    """model.depth_head.refine_layers: weights trained without the refiner load into a model with one (the refiner
    gets nothing) and give the same depth until it trains; its correction then moves depth, within the range."""
    from nvpanoptix3d.model.network import PanopticReconstruction
    base = load_config(str(_spec_file(tmp_path, ["model.depth_head.refine_layers=0"])), [f"results_dir={tmp_path}"])
    refined = load_config(str(_spec_file(tmp_path, ["model.depth_head.refine_layers=2"])), [f"results_dir={tmp_path}"])
    torch.manual_seed(0)
    trained, grown = PanopticReconstruction(base).eval(), PanopticReconstruction(refined).eval()
    result = grown.load_stage(trained.state_dict(), "2d")
    assert not result.skipped and not any(".refiner." in n for n in result.loaded)
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
    from nvpanoptix3d.model.network import PanopticReconstruction
    base = load_config(str(_spec_file(tmp_path, ["model.depth_head.guide_channels=0"])), [f"results_dir={tmp_path}"])
    guided = load_config(str(_spec_file(tmp_path, ["model.depth_head.guide_channels=8"])), [f"results_dir={tmp_path}"])
    torch.manual_seed(0)
    trained, grown = PanopticReconstruction(base).eval(), PanopticReconstruction(guided).eval()
    result = grown.load_stage(trained.state_dict(), "2d")
    assert not result.skipped and not any(".guide." in n for n in result.loaded)
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
    old = load_config(str(_spec_file(tmp_path, [f"model.{key}=0"])), [f"results_dir={tmp_path}"])
    stored = dataclasses.asdict(old.model)
    del stored[section][leaf]
    path = tmp_path / "old.safetensors"
    save_safetensors(PanopticReconstruction(old).state_dict(), path, stored)
    # a spec that asks for the part
    spec = load_config(str(_spec_file(tmp_path, [f"model.{key}=2"])), [f"results_dir={tmp_path}"])
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
    """model.depth_head.layout_planes has no weights: evaluate / inference take the spec's choice, not the one
    stored with the checkpoint's architecture."""
    from nvpanoptix3d.engine.checkpoint import save_safetensors
    from nvpanoptix3d.engine.predictor import load_for_action
    from nvpanoptix3d.labels import FLOOR, WALL
    from nvpanoptix3d.model.layout import ManhattanLayout
    from nvpanoptix3d.model.network import PanopticReconstruction
    stored = load_config(str(_spec_file(tmp_path, ["model.depth_head.layout_planes=walls_floor"])),
                         [f"results_dir={tmp_path}"])
    path = tmp_path / "weights.safetensors"
    save_safetensors(PanopticReconstruction(stored).state_dict(), path, dataclasses.asdict(stored.model))
    for choice, expected in (("off", None), ("walls", (WALL,)), ("walls_floor", (FLOOR, WALL))):
        spec = load_config(str(_spec_file(tmp_path, [f"model.depth_head.layout_planes={choice}"])),
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
    cfg = load_config(str(_spec_file(tmp_path)), [f"results_dir={tmp_path}"])
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
    cfg = load_config(str(_spec_file(tmp_path, ["model.frustum3d.min_segment_voxels=0",
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
    f3 = dataclasses.replace(cfg.model.frustum3d, min_segment_voxels=size)
    kept = panoptic_3d(out.out2d, out.out3d, 0, dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                                                                 frustum3d=f3)))
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
                            query_logits=torch.zeros(1, 5, 1), labelled_above=0.0)
    no_object = torch.full((1, 1, NUM_CLASSES), -10.0)
    no_object[..., 0] = 10.0
    labels = {}
    for radius in (0, 1):
        cfg = load_config(str(_spec_file(tmp_path, ["model.frustum3d.min_segment_voxels=0",
                                                    f"model.frustum3d.semantic_smoothing_radius={radius}"])),
                          [f"results_dir={tmp_path / 'r'}"])
        labels[radius] = panoptic_3d(SimpleNamespace(class_logits=no_object), out3d, 0, cfg).semantic.tolist()
    assert labels[0] == [wall, wall, floor, wall, wall]
    assert labels[1] == [wall] * 5


def test_int8_storage_hand_computed():
    """Row [1, -2, 0.5] has scale 2 / 127: it stores [64, -127, 32] (63.5 rounds to even) and reads back
    [128 / 127, -2, 64 / 127]; small and 1-D tensors stay as given."""
    from nvpanoptix3d.engine.checkpoint import SCALE_SUFFIX, dequantize_int8, quantize_int8
    weight = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    bias = torch.tensor([0.25, 0.5])
    stored = quantize_int8({"w": weight, "b": bias, "steps": torch.tensor(3)}, min_numel=6)
    assert stored["w"].dtype == torch.int8 and stored["w"].tolist() == [[64, -127, 32], [0, 0, 0]]
    assert torch.allclose(stored["w" + SCALE_SUFFIX], torch.tensor([2 / 127, 1e-12 / 127]))
    assert stored["b"] is bias and stored["steps"].item() == 3
    back = dequantize_int8(stored)
    assert set(back) == {"w", "b", "steps"}
    assert torch.allclose(back["w"], torch.tensor([[128 / 127, -2.0, 64 / 127], [0.0, 0.0, 0.0]]))
    assert quantize_int8({"w": weight}, min_numel=7)["w"] is weight     # under min_numel: untouched


def test_int8_weights_load_back_within_half_a_step(tmp_path):
    """A model saved with int8 matrices loads through load_state_dict with every key, as floats, each element within
    half its slice's step of the original; an fp16 file (older shipped weights) loads as before."""
    from nvpanoptix3d.engine.checkpoint import load_state_dict, quantize_int8, save_safetensors
    from nvpanoptix3d.model.network import PanopticReconstruction
    cfg = load_config(str(_spec_file(tmp_path)), [f"results_dir={tmp_path}"])
    torch.manual_seed(0)
    state = PanopticReconstruction(cfg).state_dict()
    save_safetensors(quantize_int8(state), tmp_path / "q.safetensors", dataclasses.asdict(cfg.model))
    save_safetensors(state, tmp_path / "f.safetensors", dataclasses.asdict(cfg.model))
    back, plain = load_state_dict(tmp_path / "q.safetensors"), load_state_dict(tmp_path / "f.safetensors")
    assert set(back) == set(state) == set(plain)
    quantized = 0
    for name, original in state.items():
        assert torch.equal(plain[name], original)
        if original.is_floating_point() and original.ndim >= 2 and original.numel() >= 4096:
            quantized += 1
            step = original.flatten(1).abs().amax(1) / 127
            error = (back[name] - original).flatten(1).abs()
            assert (error <= step[:, None] / 2 + 1e-6).all(), name
        else:
            assert torch.equal(back[name], original), name
    assert quantized > 10


def test_the_3d_stage_exports_to_onnx(tmp_path):
    """The candidates' top-k and the parents' gather survive ONNX export: onnxruntime labels the candidates both
    runtimes picked as PyTorch does."""
    from nvpanoptix3d.engine.export import Stage3D, _export, _voxelwise_diff
    from nvpanoptix3d.model.network import PanopticReconstruction
    cfg = load_config(str(_spec_file(tmp_path)), [f"results_dir={tmp_path}"])
    torch.manual_seed(0)
    model = PanopticReconstruction(cfg).eval()
    with torch.no_grad():
        o = model.forward_2d(torch.rand(1, 3, 240, 320))
    diff = _export(Stage3D(model), (o.mask_features, o.depth, o.query_embed), tmp_path / "3d.onnx",
                   ["mask_features", "depth", "query_embed"], ["index", "valid", "logits", "semantic", "query"],
                   cfg.export.opset_version, _voxelwise_diff)
    assert diff < 1e-3 and _voxelwise_diff.shared > 0.9


def test_the_2d_stage_with_an_image_guide_exports_to_onnx(tmp_path):
    """The guide's stride-2 stem and upsampling survive ONNX export (its correction made nonzero, so it counts):
    onnxruntime's depth at stride 2 is PyTorch's."""
    from nvpanoptix3d.engine.export import OUT_2D, Stage2D, _export
    from nvpanoptix3d.model.network import PanopticReconstruction
    cfg = load_config(str(_spec_file(tmp_path, ["model.depth_head.guide_channels=8", "dataset.enable_3d=false"])),
                      [f"results_dir={tmp_path}"])
    torch.manual_seed(0)
    model = PanopticReconstruction(cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.head2d.depth_head.guide.delta.weight, std=0.1)
        image = torch.rand(1, 3, 240, 320)
        assert model.forward_2d(image).depth.shape[-2:] == (120, 160)
    diff = _export(Stage2D(model), (image,), tmp_path / "2d.onnx", ["image"], OUT_2D, cfg.export.opset_version)
    assert diff < 1e-3


def test_teacher_frames_lift_the_true_depth_where_it_has_a_value_the_predicted_elsewhere(tmp_path):
    """lifting_depth: a frame `teacher` picks takes the true depth at every pixel with one (0: none there keeps the
    prediction); a frame it does not pick keeps the prediction everywhere."""
    from nvpanoptix3d.model.network import PanopticReconstruction
    cfg = load_config(str(_spec_file(tmp_path, [])), [f"results_dir={tmp_path}"])
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
