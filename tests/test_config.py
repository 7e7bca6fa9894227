"""Spec keys and their rules: round trips, errors naming the key, the defaults being the shipped model."""
from __future__ import annotations

import dataclasses

import pytest
import yaml
from helpers import REPO

from nvpanoptix3d.cli import apply_overrides, load_config
from nvpanoptix3d.config import ExperimentConfig, SpecError, from_dict, to_dict, validate_semantics


def test_every_key_round_trips_yaml_dataclass_yaml():
    for action in ("train", "evaluate", "inference", "export"):
        template = yaml.safe_load((REPO / "references" / f"spec_template_{action}.yaml").read_text())
        cfg = from_dict(ExperimentConfig, template)
        again = to_dict(cfg)
        assert {k: again[k] for k in template} == template
        assert from_dict(ExperimentConfig, yaml.safe_load(yaml.safe_dump(again))) == cfg


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
    cfg = from_dict(ExperimentConfig, {"dataset": {"name": "matterport", "downsample_factor": 1}})
    with pytest.raises(SpecError, match="use 0 \\(derived\\), or 2 for Matterport3D"):
        validate_semantics(cfg)
    assert from_dict(ExperimentConfig, {"dataset": {"name": "matterport"}}).dataset.downsample == 2   # derived
    assert ExperimentConfig().dataset.downsample == 1


def test_freeze_2d_refused_where_it_would_train_nothing():
    cfg = from_dict(ExperimentConfig, {"train": {"freeze_2d": True, "checkpoint_2d": "w.safetensors"},
                                       "dataset": {"enable_3d": False}})
    with pytest.raises(SpecError, match="nothing is left to train"):
        validate_semantics(cfg)
    cfg = from_dict(ExperimentConfig, {"train": {"freeze_2d": True}})
    with pytest.raises(SpecError, match="set train.checkpoint_2d"):
        validate_semantics(cfg)


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


def test_a_retired_key_loads_at_its_old_default_and_is_one_line_when_set():
    """Specs and stored checkpoints from before an option was removed still load; asking for it is refused."""
    old = {"model": {"frustum3d": {"context_layers": 0, "instance_within_class": False}}}
    assert from_dict(ExperimentConfig, old) == ExperimentConfig()
    with pytest.raises(SpecError, match="model.frustum3d.context_layers: measured without gain and removed"):
        from_dict(ExperimentConfig, {"model": {"frustum3d": {"context_layers": 2}}})
    with pytest.raises(SpecError, match="model.depth_head.segment_upsample: measured without gain"):
        apply_overrides({}, ["model.depth_head.segment_upsample=true"])


def test_a_test_time_key_that_moved_to_postprocess_is_one_line_naming_its_new_place():
    """In a spec: refused with where it went (engine and SDK). In a stored checkpoint's model section: dropped,
    since the spec's postprocess decides."""
    from nvpanoptix3d.engine.checkpoint import _architecture
    with pytest.raises(SpecError, match="model.frustum3d.occupancy_threshold: moved to postprocess.occupancy_thr"):
        from_dict(ExperimentConfig, {"model": {"frustum3d": {"occupancy_threshold": 0.3}}})
    with pytest.raises(SpecError, match="model.depth_head.flip_average: moved to postprocess.flip_average"):
        apply_overrides({}, ["model.depth_head.flip_average=false"])
    stored = dataclasses.asdict(ExperimentConfig().model)
    stored["mask_former"]["overlap_threshold"] = 0.1
    assert from_dict(ExperimentConfig, {"model": _architecture(stored)}) == ExperimentConfig()
    from tao_skill_bank.errors import SkillBankError
    from tao_skill_bank.skill import load_skill
    from tao_skill_bank.spec import resolve_spec
    skill = load_skill(REPO / "skills" / "tao-train-nvpanoptix3d")
    with pytest.raises(SkillBankError, match="override model.mask_former.object_mask_threshold: moved to "
                                             "postprocess.object_mask_threshold; write it there"):
        resolve_spec(skill, "inference", {"model.mask_former.object_mask_threshold": "0.4"})
    assert resolve_spec(skill, "inference", {"postprocess.object_mask_threshold": "0.4"})["postprocess"][
        "object_mask_threshold"] == 0.4
