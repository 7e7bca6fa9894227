"""Typed action configs of the engine: the single definition of every spec key.

The skill bank generates its JSON schemas and spec templates from these dataclasses
(`python -m tao_skill_bank.schema_gen`), so each leaf carries its bounds, options and AutoML metadata.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tao_skill_bank.safe_yaml import clip


def param(default: Any, description: str, *, minimum: float | None = None, maximum: float | None = None,
          options: list | None = None, option_weights: list[float] | None = None, automl: bool = False,
          popular: bool = False, math_cond: str | None = None, depends_on: str | None = None) -> Any:
    """A spec leaf with the metadata the schema generator and the AutoML search read.

    math_cond: a Python expression over dotted keys that every launched trial must satisfy
    (e.g. "train.optim.milestones[0] < train.num_epochs"); depends_on: "key=value" gating a search.
    """
    meta = {"description": description, "minimum": minimum, "maximum": maximum, "options": options,
            "option_weights": option_weights, "automl": automl, "popular": popular,
            "math_cond": math_cond, "depends_on": depends_on}
    meta = {k: v for k, v in meta.items() if v is not None}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: list(d) if isinstance(d, list) else dict(d), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, description: str, searched: bool = True) -> Any:
    """searched=False: AutoML never searches this section's leaves (e.g. evaluation batch sizes, which cannot
    change what training learns) even where its dataclass marks them automl."""
    return field(default_factory=cls, metadata={"description": description, "searched": searched})


# ---------------------------------------------------------------- model
@dataclass
class SemSegHeadConfig:
    num_classes: int = param(13, "Semantic classes including void (0); 3D-FRONT uses 13.", minimum=2, maximum=256)
    hidden_dim: int = param(64, "Channels of the pixel decoder.", minimum=8, maximum=1024)


@dataclass
class MaskFormerConfig:
    num_object_queries: int = param(100, "Object queries of the Mask2Former-style head.", minimum=4, maximum=300,
                                    automl=True, popular=True)
    dec_layers: int = param(10, "Transformer decoder layers of the query head.", minimum=1, maximum=12,
                            automl=True, popular=True)
    hidden_dim: int = param(128, "Query and mask embedding width.", minimum=16, maximum=1024)
    nheads: int = param(8, "Attention heads in the query decoder.", minimum=1, maximum=32)
    class_weight: float = param(2.0, "Weight of the query classification loss.", minimum=0.0, maximum=100.0,
                                automl=True)
    mask_weight: float = param(5.0, "Weight of the mask BCE loss.", minimum=0.0, maximum=100.0, automl=True)
    dice_weight: float = param(5.0, "Weight of the mask dice loss.", minimum=0.0, maximum=100.0, automl=True)
    no_object_weight: float = param(0.1, "Classification weight of the no-object class.", minimum=0.0, maximum=1.0)


@dataclass
class DepthHeadConfig:
    # beside the query head's set losses the backbone learns depth far faster at 10 than at 1
    weight: float = param(10.0, "Weight of the depth loss (scale-invariant log + L1).", minimum=0.0, maximum=100.0,
                          automl=True)
    gradient_weight: float = param(0.5, "Weight of multi-scale log-depth gradient matching inside the depth loss "
                                   "(sharp depth edges, flat planes).", minimum=0.0, maximum=10.0)
    # what a Manhattan layout leaves on the walls is each image's scale; the pixel-wise terms barely see it
    scale_weight: float = param(5.0, "Weight of the per-image scale term inside the depth loss: the squared "
                                "mean log depth ratio of each image.", minimum=0.0, maximum=100.0)
    # the voxel grid sees errors in metres, not in log depth
    absolute_weight: float = param(1.0, "Weight of an L1 term in metres inside the depth loss (errors as the "
                                   "voxel grid sees them; the other terms are in log depth).", minimum=0.0,
                                   maximum=100.0)
    # PRQ counts segments and a chair covers a hundredth of a wall's pixels: without it the walls decide
    segment_balance: float = param(1.0, "Exponent p of the depth loss's per-segment weighting: each pixel's log and "
                                   "metre terms weigh (1 / area of its 2D segment)^p, normalised to a mean of 1; 0: "
                                   "every pixel alike, 1: every segment alike.", minimum=0.0, maximum=1.0)
    # walls carry most of the depth error: planes that a local pyramid does not place
    refine_layers: int = param(4, "Self-attention layers of the depth head's refiner over the stride-16 "
                               "map (context of the whole room); 0: no refiner.", minimum=0, maximum=8)
    # at stride 4 thin things take their background's depth
    guide_channels: int = param(16, "Channels of the depth head's image guide, which takes the depth from stride 4 "
                                "to stride 2 with a small convolution stack over the image itself; it starts from "
                                "the stride-4 depth bilinearly upsampled, so a trained head grows it in place. 0: "
                                "depth at stride 4.", minimum=0, maximum=128)


@dataclass
class Frustum3DConfig:
    truncation: float = param(3.0, "TSDF truncation in voxels.", minimum=1.0, maximum=10.0)
    iso_value: float = param(1.0, "Distance (voxels) under which a voxel counts as occupied; Matterport uses 2.0.",
                             minimum=0.1, maximum=5.0)
    voxel_size: float = param(0.03, "Edge of a frustum voxel in metres.", minimum=0.005, maximum=0.2)
    grid_dimensions: list = param([256, 256, 256], "Frustum volume size in voxels (x, y, z).")
    feature_dim: int = param(16, "Channels of the lifted 3D features.", minimum=4, maximum=256, automl=True)
    panoptic_weight: float = param(25.0, "Weight of the 3D semantic and instance losses.", minimum=0.0,
                                   maximum=1000.0, automl=True, popular=True)
    completion_weights: list = param([50.0, 25.0, 10.0],
                                     "Occupancy completion loss weights at 64^3, 128^3 and 256^3.")
    surface_weight: float = param(5.0, "Extra loss weight of occupied voxels in the dense 64^3 level (they are "
                                  "about 2% of it).", minimum=0.0, maximum=100.0)
    occluded_label_weight: float = param(1.0, "Weight of the 3D semantic and instance losses at occupied voxels "
                                         "at least 4 voxels behind the lifted depth (hidden behind what the camera "
                                         "sees), against 1 at the others; 1: every voxel alike.", minimum=0.0,
                                         maximum=100.0)
    # the share the shipped 3D stage was last trained with (from scratch it started at 0.5)
    gt_depth_ratio: float = param(0.1, "Share of training frames lifted into 3D with ground-truth depth.",
                                  minimum=0.0, maximum=1.0, automl=True)
    max_voxels: int = param(400000, "Most candidate voxels at 256^3 in training and inference (export uses "
                            "export.max_voxels).", minimum=512, maximum=20_000_000)


@dataclass
class ModelConfig:
    # the shipped weights' backbone: it learns depth from scratch far faster than the VGGT-style transformer
    backbone_type: str = param("resnet18", "Image backbone: resnet18 (the shipped weights) / resnet_tiny / resnet34 "
                               "(transformers ResNet), or vggt (VGGT's aggregator; loads a released VGGT checkpoint "
                               "through pretrained_backbone_path).",
                               options=["vggt", "resnet_tiny", "resnet18", "resnet34"],
                               option_weights=[0.2, 0.5, 0.2, 0.1],
                               automl=False, popular=True)
    mode: str = param("panoptic", "Prediction mode.", options=["panoptic", "instance", "semantic"])
    pretrained_backbone_path: str = param("", "Optional backbone weights (safetensors or .pt).")
    embed_dim: int = param(128, "Backbone feature width (vggt: token width, 64 per head; VGGT-1B: 1024).",
                           minimum=16, maximum=1024)
    depth: int = param(6, "Backbone depth (vggt: DINOv2 blocks and frame / global block pairs; VGGT-1B: 24).",
                       minimum=1, maximum=24)
    sem_seg_head: SemSegHeadConfig = section(SemSegHeadConfig, "Pixel decoder and semantic head.")
    mask_former: MaskFormerConfig = section(MaskFormerConfig, "Mask2Former-style query head.")
    depth_head: DepthHeadConfig = section(DepthHeadConfig, "Depth head (0.4-6 m).")
    frustum3d: Frustum3DConfig = section(Frustum3DConfig, "3D frustum stage.")


@dataclass
class PostprocessConfig:
    """What evaluate and inference do with the network's outputs; no weights depend on these."""
    # training lifts the depth head's own depth: a per-frame fit would slow the 3D training step 2.6x
    layout_planes: str = param("walls_floor", "Replace the depth of wall pixels (walls) or of wall "
                               "and floor pixels (walls_floor) by a fitted Manhattan layout (a floor plane, vertical "
                               "walls at right angles) before the 3D stage lifts it; off: lift the depth head's "
                               "depth.", options=["off", "walls", "walls_floor"])
    flip_average: bool = param(True, "Average the depth with the depth of the mirrored image, "
                               "mirrored back (one more pass of the backbone and depth head; the camera's "
                               "principal point is the image's centre, so the mirror image is a view of a "
                               "mirrored room with the same intrinsics).")
    object_mask_threshold: float = param(0.5, "Score below which a query is dropped at inference.",
                                         minimum=0.0, maximum=1.0)
    overlap_threshold: float = param(0.8, "Visible fraction a query mask must keep to form a segment.",
                                     minimum=0.0, maximum=1.0)
    # the 3D stage is under-confident when lifted with predicted depth: 0.2 is best on validation frames
    occupancy_threshold: float = param(0.2, "Probability above which a voxel is occupied.", minimum=0.01,
                                       maximum=0.99)
    # segments under 1500 voxels are mostly false positives (RRQ up, RSQ unchanged on validation frames)
    min_segment_voxels: int = param(1500, "Segments (a thing's instance, a stuff class) with fewer occupied voxels "
                                    "are dropped from the output; 0 keeps every segment.", minimum=0,
                                    maximum=1_000_000)
    # a voxel's class decided alone is noisy at segment borders
    semantic_smoothing_radius: int = param(2, "Each occupied voxel's 3D class probabilities are averaged over the "
                                           "occupied voxels within this many voxels (a cube) before its class is "
                                           "chosen; 0: each voxel alone.", minimum=0, maximum=4)


# ---------------------------------------------------------------- dataset
@dataclass
class SplitConfig:
    json_path: str = param("", "Split list (meta/<split>.json): scene_id, image_id, height, width.")
    base_dir: str = param("", "Folder holding <scene_id>/<frame files>.")
    batch_size: int = param(1, "Frames per GPU per step.", minimum=1, maximum=256, automl=True)
    num_workers: int = param(2, "Data loader workers.", minimum=0, maximum=64)


@dataclass
class SyntheticConfig:
    seed: int = param(1000, "Base seed of on-the-fly synthetic scenes; val uses seed+1, test seed+2 (held out).",
                      minimum=0, maximum=2**31 - 1)
    train_scenes: int = param(20000, "Scenes in the synthetic training split.", minimum=1, maximum=10_000_000)
    eval_scenes: int = param(100, "Scenes in the synthetic val and test splits.", minimum=1, maximum=100_000)
    frames_per_scene: int = param(4, "Camera views per synthetic scene.", minimum=1, maximum=100)
    render_device: str = param("cpu", "Where the data loader's workers render and voxelize (one H100 machine: "
                               "86 frames/s with 15 workers on cuda, 43 on cpu).", options=["cpu", "cuda"])


@dataclass
class DatasetConfig:
    name: str = param("front3d", "Data layout.", options=["front3d", "matterport", "synthetic"])
    label_map: str = param("", "meta/colormap.json: categories with id, trainId, name, color, isthing.")
    frustum_mask_path: str = param("", "meta/frustum_mask.npz (key mask, 256^3 bool).")
    downsample_factor: int = param(0, "Image downsample factor; 0: the data set's own (2 for Matterport, 1 for "
                                   "3D-FRONT and synthetic).", minimum=0, maximum=8)
    target_size: list = param([320, 240], "Image size (width, height) fed to the network.")
    depth_min: float = param(0.4, "Minimum depth (m).", minimum=0.0, maximum=10.0)
    depth_max: float = param(6.0, "Maximum depth (m).", minimum=0.5, maximum=100.0,
                             math_cond="dataset.depth_min < dataset.depth_max")
    enable_3d: bool = param(True, "Train and run the 3D frustum stage.")
    depth_source: str = param("auto", "Depth the 3D stage lifts out of training: sensor (the input's depth files: "
                              "a posed folder's sensor depth, a data set's depth maps), multiview (plane-sweep "
                              "stereo over a posed folder's frames; pixels it is not sure of take the prediction "
                              "fitted to its scale), predicted (the depth head), auto (for posed folders: sensor "
                              "where they carry depth, else multiview; predicted for single images). Pixels without "
                              "a sensor value take the prediction.", options=["auto", "sensor", "multiview",
                                                                              "predicted"])
    contiguous_id: bool = param(False, "Map category ids to contiguous train ids.")
    augment: bool = param(True, "Colour jitter during training.", automl=True)
    # the depth of a frame and of its mirror image disagree without it
    mirror: float = param(0.5, "Share of training frames mirrored left-right (image, depth and 2D labels; the "
                          "principal point is the image's centre, so a mirrored frame is a view of a mirrored room), "
                          "and their 3D truth (the 256^3 grid is not centred on the optical axis: mirrored voxels "
                          "land 0.22 voxel off, well inside PRQ's one-voxel tolerance).",
                          minimum=0.0, maximum=1.0, automl=True)
    synthetic: SyntheticConfig = section(SyntheticConfig, "On-the-fly scenes (dataset.name=synthetic).")
    train: SplitConfig = section(SplitConfig, "Training split.")
    val: SplitConfig = section(SplitConfig, "Validation split.", searched=False)
    test: SplitConfig = section(SplitConfig, "Test split.", searched=False)

    @property
    def downsample(self) -> int:
        """downsample_factor, derived from the data set's name when 0."""
        return self.downsample_factor or (2 if self.name == "matterport" else 1)


# ---------------------------------------------------------------- train
@dataclass
class OptimConfig:
    lr: float = param(2e-4, "Base learning rate (AdamW).", minimum=1e-6, maximum=1e-1, automl=True, popular=True)
    backbone_multiplier: float = param(0.1, "Learning-rate multiplier of the backbone.", minimum=0.0,
                                       maximum=1.0, automl=True)
    weight_decay: float = param(0.05, "AdamW weight decay.", minimum=0.0, maximum=1.0, automl=True)
    lr_scheduler: str = param("MultiStep", "Learning-rate schedule.", options=["MultiStep", "Warmuppoly"],
                              option_weights=[0.5, 0.5], automl=True)
    milestones: list = param([88, 96], "MultiStep milestones (epochs).",
                             depends_on="train.optim.lr_scheduler=MultiStep")
    gamma: float = param(0.1, "MultiStep decay factor.", minimum=0.0, maximum=1.0,
                         depends_on="train.optim.lr_scheduler=MultiStep")
    warmup_iters: int = param(10, "Warmuppoly linear warm-up steps.", minimum=0, maximum=100000,
                              depends_on="train.optim.lr_scheduler=Warmuppoly")
    max_steps: int = param(-1, "Stop after this many optimiser steps (-1: run all epochs).", minimum=-1,
                           maximum=10_000_000)


@dataclass
class TrainConfig:
    num_epochs: int = param(100, "Training epochs.", minimum=1, maximum=10000, popular=True)
    num_gpus: int = param(1, "GPUs per node (0: CPU).", minimum=0, maximum=64)
    allow_cpu_fallback: bool = param(False, "Train on the CPU when train.num_gpus asks for GPUs and none is "
                                     "visible (a warning in status.json); false: that is an error.")
    gpu_ids: list = param([0], "GPU indices used on this node.")
    num_nodes: int = param(1, "Nodes (multi-node through WORLD_SIZE / NODE_RANK / MASTER_ADDR).", minimum=1,
                           maximum=1024)
    seed: int = param(1234, "Random seed.", minimum=0, maximum=2**31 - 1)
    precision: str = param("fp16", "Numerical precision.", options=["fp16", "bf16", "fp32"])
    distributed_strategy: str = param("ddp", "Multi-GPU strategy: ddp (the engine has no sharded strategy).",
                                      options=["ddp"])
    activation_checkpoint: bool = param(True, "Recompute activations in the backward pass to save memory.")
    clip_grad_norm: float = param(0.1, "Gradient clipping norm (0: off).", minimum=0.0, maximum=100.0,
                                  automl=True)
    checkpoint_interval: int = param(1, "Epochs between checkpoints.", minimum=1, maximum=10000)
    validation_interval: int = param(1, "Epochs between validations (KPIs in status.json).", minimum=1,
                                     maximum=10000)
    max_time_minutes: float = param(-1.0, "Stop training after this many minutes (-1: no limit).", minimum=-1.0,
                                    maximum=1e6)
    checkpoint_2d: str = param("", "2D-stage weights for staged initialisation.")
    checkpoint_3d: str = param("", "3D-stage weights for staged initialisation.")
    freeze_2d: bool = param(False, "Train the 3D stage alone: the 2D stage (backbone, heads, depth) keeps the "
                            "weights of train.checkpoint_2d.")
    resume_training_checkpoint_path: str = param("", "Checkpoint to resume training from.")
    optim: OptimConfig = section(OptimConfig, "Optimiser and schedule.")


# ---------------------------------------------------------------- other actions
@dataclass
class EvaluateConfig:
    checkpoint: str = param("", "Model checkpoint to evaluate.")
    split: str = param("val", "Split to evaluate.", options=["val", "test"])
    max_frames: int = param(-1, "Evaluate at most this many frames (-1: all).", minimum=-1, maximum=10_000_000)
    scenes_dir: str = param("", "A posed walk-through with its scene ground truth (scene_truth.npz), or a folder of "
                            "them: each is reconstructed and scored as a fused scene (F-score@5cm, scene PRQ, IDs "
                            "per object) instead of the split's frames.")


@dataclass
class InferenceConfig:
    checkpoint: str = param("", "Model checkpoint.")
    images_dir: str = param("", "Folder of RGB images (any size; other files are skipped) or an images.tar.gz.")
    horizontal_fov_deg: float = param(0.0, "Horizontal field of view of the photos' camera in degrees; each photo "
                                      "is scaled to the model's focal length, then centre-cropped or padded. 0: "
                                      "unknown, taken as the model's own 60 degrees.", minimum=0.0, maximum=170.0)
    mode: str = param("panoptic", "Output labels.", options=["panoptic", "instance", "semantic"])
    save_mesh: bool = param(True, "Write a .ply mesh per image.")
    save_previews: bool = param(True, "Write a PNG preview and a 3D scene page (HTML) per image.")


@dataclass
class TrtConfig:
    data_type: str = param("FP16", "TensorRT precision.", options=["FP32", "FP16"])
    engine_file_2d: str = param("", "TensorRT engine of the 2D stage (empty: next to the ONNX file).")
    workspace_size_mb: int = param(4096, "TensorRT workspace (MiB).", minimum=64, maximum=1_000_000)


@dataclass
class ExportConfig:
    checkpoint: str = param("", "Model checkpoint to export.")
    onnx_file_2d: str = param("", "ONNX file of the 2D stage.")
    onnx_file_3d: str = param("", "ONNX file of the 3D stage.")
    opset_version: int = param(17, "ONNX opset.", minimum=13, maximum=21)
    max_voxels: int = param(700000, "Most voxels fed to the 3D stage's fine level.", minimum=1000,
                            maximum=20_000_000)
    trt: TrtConfig = section(TrtConfig, "TensorRT engine build (when tensorrt is importable).")


@dataclass
class ExperimentConfig:
    results_dir: str = param("", "Where the job writes status.json, checkpoints and outputs.")
    encryption_key: str = param("", "Kept for TAO compatibility; checkpoints are not encrypted.")
    model: ModelConfig = section(ModelConfig, "Network.")
    dataset: DatasetConfig = section(DatasetConfig, "Data.")
    train: TrainConfig = section(TrainConfig, "Training.")
    evaluate: EvaluateConfig = section(EvaluateConfig, "Evaluation.")
    inference: InferenceConfig = section(InferenceConfig, "Inference.")
    export: ExportConfig = section(ExportConfig, "Export.")
    postprocess: PostprocessConfig = section(PostprocessConfig, "Test-time settings of evaluate and inference: "
                                             "depth averaging and layout, thresholds, smallest segment, smoothing.")


ACTIONS = ("train", "evaluate", "inference", "export")
# Which top-level sections each action's schema and template carry.
ACTION_SECTIONS = {
    "train": ("results_dir", "encryption_key", "model", "dataset", "train", "postprocess"),
    "evaluate": ("results_dir", "encryption_key", "model", "dataset", "evaluate", "postprocess"),
    "inference": ("results_dir", "encryption_key", "model", "dataset", "inference", "postprocess"),
    "export": ("results_dir", "encryption_key", "model", "dataset", "export", "postprocess"),
}


_MEASURED = "measured without gain and removed (nvpanoptix3d/weights/TRAINING_LOG.md)"
# keys earlier versions had: the value that meant "off" (accepted and ignored, so old specs and checkpoints load)
# and what became of the key
RETIRED_KEYS = {
    "model.depth_head.layout_in_training": (False, "removed: the layout fit runs out of training only"),
    "model.depth_head.segment_upsample": (False, _MEASURED),
    "model.frustum3d.context_layers": (0, _MEASURED),
    "model.frustum3d.label_context_layers": (0, _MEASURED),
    "model.frustum3d.label_hidden": (0, "removed: the 3D label heads have 4 x feature_dim hidden units"),
    "model.frustum3d.instance_within_class": (False, _MEASURED),
    "model.frustum3d.query_class_weight": (0.0, _MEASURED),
    "model.frustum3d.segment_balance": (0.0, _MEASURED),
    "model.mask_former.test_topk": (100, "removed: never read; every query above "
                                         "postprocess.object_mask_threshold is kept"),
}
# test-time keys that left the model section for postprocess
MOVED_KEYS = {f"model.{section}.{key}": f"postprocess.{key}" for section, keys in (
    ("depth_head", ("layout_planes", "flip_average")),
    ("mask_former", ("object_mask_threshold", "overlap_threshold")),
    ("frustum3d", ("occupancy_threshold", "min_segment_voxels", "semantic_smoothing_radius"))) for key in keys}


class SpecError(ValueError):
    """A spec problem, always naming the dotted key and how to fix it."""


class DataError(SpecError):
    """A data file problem, naming the file, its frame and what is wrong."""


def _leaf_type(f: dataclasses.Field) -> type:
    d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return type(d)


def leaf_type(dotted: str) -> type | None:
    """The type of a dotted spec key's default (None for a section); an unknown key is a SpecError."""
    cls, parts = ExperimentConfig, dotted.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            if dotted in RETIRED_KEYS:
                raise SpecError(f"{dotted}: {RETIRED_KEYS[dotted][1]}; drop the override")
            _refuse_moved(dotted)
            raise SpecError(f"{dotted}: unknown key {part!r}; valid keys there: {', '.join(sorted(fields))}")
        if not _is_section(fields[part]):
            return _leaf_type(fields[part]) if i == len(parts) - 1 else None
        cls = fields[part].default_factory
    return None


def from_dict(cls: type, data: dict | None, path: str = "") -> Any:
    """Build nested dataclasses from a dict, rejecting unknown keys and wrong types with the key path."""
    data = data or {}
    if not isinstance(data, dict):
        raise SpecError(f"{path or 'spec'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else key
        if _retired(dotted, value):
            continue
        _refuse_moved(dotted)
        if key not in fields:
            raise SpecError(f"{dotted}: unknown key; valid keys here: {', '.join(sorted(fields))}")
        f = fields[key]
        if _is_section(f):
            kwargs[key] = from_dict(_section_type(cls, key), value, dotted)
        else:
            kwargs[key] = _coerce(f, value, dotted)
    return cls(**kwargs)


def _refuse_moved(dotted: str) -> None:
    if dotted in MOVED_KEYS:
        raise SpecError(f"{dotted}: moved to {MOVED_KEYS[dotted]}; write it there")


def _retired(dotted: str, value: Any) -> bool:
    """True for a retired key at its "off" value (skipped); an error for one set to anything else."""
    if dotted not in RETIRED_KEYS:
        return False
    off, what = RETIRED_KEYS[dotted]
    if value != off:
        raise SpecError(f"{dotted}: {what}; delete it from the spec (or use the version that trained with it)")
    return True


def _is_section(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING and \
        dataclasses.is_dataclass(f.default_factory)


def _section_type(cls: type, key: str) -> type:
    return next(f.default_factory for f in dataclasses.fields(cls) if f.name == key)


def _coerce(f: dataclasses.Field, value: Any, dotted: str) -> Any:
    want = _leaf_type(f)
    meta = f.metadata
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is bool and not isinstance(value, bool):
        raise SpecError(f"{dotted}: expected true/false, got {clip(value)}")
    if want is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpecError(f"{dotted}: expected an integer, got {clip(value)}")
    if want in (str, float, list) and not isinstance(value, want):
        if not (want is str and value is None):
            raise SpecError(f"{dotted}: expected {want.__name__}, got {clip(value)}")
        value = ""
    if "minimum" in meta and value < meta["minimum"]:
        raise SpecError(f"{dotted}: {clip(value)} is below the minimum {meta['minimum']}")
    if "maximum" in meta and value > meta["maximum"]:
        raise SpecError(f"{dotted}: {clip(value)} is above the maximum {meta['maximum']}")
    if "options" in meta and value not in meta["options"]:
        raise SpecError(f"{dotted}: {clip(value)} is not one of {meta['options']}")
    return value


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


# cross-key rules the schema's types cannot express, as {require: expression over dotted keys, error}; the schema
# generator copies them into each action's schema (x_rules), so the skill bank checks them before a job exists
RULES = [
    {"require": "not (train.freeze_2d and not dataset.enable_3d)",
     "error": "train.freeze_2d: with dataset.enable_3d=false nothing is left to train; set dataset.enable_3d=true "
              "or train.freeze_2d=false"},
    {"require": "not train.freeze_2d or train.checkpoint_2d or train.resume_training_checkpoint_path",
     "error": "train.freeze_2d: a frozen 2D stage of random weights gives the 3D stage nothing to lift; set "
              "train.checkpoint_2d to trained weights"},
    {"require": "dataset.depth_min < dataset.depth_max", "error": "dataset.depth_min: must be below dataset.depth_max"},
    {"require": "dataset.downsample_factor in (0, 2 if dataset.name == 'matterport' else 1)",
     "error": "dataset.downsample_factor: does not match dataset.name; use 0 (derived), or 2 for Matterport3D, "
              "1 for Front3D / synthetic datasets"},
    {"require": "len(model.frustum3d.completion_weights) == 3",
     "error": "model.frustum3d.completion_weights: give three weights (64^3, 128^3, 256^3)"},
    {"require": "len(dataset.target_size) == 2", "error": "dataset.target_size: give [width, height]"},
]


def validate_semantics(cfg: ExperimentConfig) -> None:
    """The RULES, on a built config."""
    from tao_skill_bank.conditions import broken_rule
    error = broken_rule(RULES, to_dict(cfg))
    if error:
        raise SpecError(error)
