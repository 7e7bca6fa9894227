"""The export action: ONNX of the 2D stage and of the 3D stage, each checked against PyTorch with
onnxruntime; TensorRT engines when tensorrt is importable."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ExperimentConfig, SpecError
from .predictor import load_for_action
from .status import StatusWriter

OUT_2D = ["depth", "class_logits", "mask_logits", "mask_features", "query_embed"]
OUT_3D = ["fine_index", "fine_valid", "fine_logits", "semantic_logits", "query_logits"]


class Stage2D(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        o = self.model.forward_2d(image)
        return o.depth, o.class_logits, o.mask_logits, o.mask_features, o.query_embed


class Stage3D(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.stage3d = model.stage3d

    def forward(self, mask_features, depth, query_embed):
        o = self.stage3d(mask_features, depth, query_embed, label_all=True)
        return o.fine_index, o.fine_valid, o.fine_logits, o.semantic_logits, o.query_logits


def _elementwise_diff(got: list, want: tuple) -> float:
    return max(float(np.abs(g.astype(np.float64) - w.numpy().astype(np.float64)).max()) if g.size else 0.0
               for g, w in zip(got, want))


def _voxelwise_diff(got: list, want: tuple) -> float:
    """The 3D stage picks candidates by top-k: rounding can swap voxels at the k-th place, so compare the outputs
    voxel by voxel on the candidates both runtimes chose (export reports how many they share)."""
    def table(index, valid, *values):
        index, valid = np.asarray(index)[0], np.asarray(valid)[0].astype(bool)
        keys = (index[:, 0] * 65536 + index[:, 1] * 256 + index[:, 2])[valid]
        return dict(zip(keys.tolist(), np.concatenate([np.asarray(v)[0][valid].reshape(valid.sum(), -1)
                                                       for v in values], 1)))
    a = table(*got)
    b = table(*(w.numpy() for w in want))
    common = set(a) & set(b)
    _voxelwise_diff.shared = len(common) / max(len(b), 1)
    return max((float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in common), default=0.0)


def _export(module: nn.Module, inputs: tuple, path: Path, names_in: list[str], names_out: list[str],
            opset: int, compare=_elementwise_diff) -> float:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX form
    with torch.no_grad():
        want = module(*inputs)
    # tracing can run the module in training mode (BatchNorm statistics move): export a copy
    torch.onnx.export(copy.deepcopy(module), inputs, str(tmp), input_names=names_in, output_names=names_out,
                      opset_version=opset, dynamo=False)
    import onnxruntime as ort
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(names_in, inputs)})
    diff = compare(got, want)
    tmp.replace(path)
    return diff


NO_TENSORRT = "tensorrt is not installed here: ONNX files written, no TensorRT engine built"


def _tensorrt(onnx_path: Path, engine_path: str, data_type: str, workspace_mb: int) -> str | None:
    """Build the engine; None when tensorrt is not installed."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {parser.get_error(0)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if data_type == "FP16":
        config.set_flag(trt.BuilderFlag.FP16)
    engine = builder.build_serialized_network(network, config)
    Path(engine_path).write_bytes(bytes(engine))
    return f"TensorRT {data_type} engine written to {engine_path}"


@torch.no_grad()
def run_export(cfg: ExperimentConfig) -> dict:
    status = StatusWriter(cfg.results_dir)
    ex = cfg.export
    module = load_for_action(cfg, ex.checkpoint, "export.checkpoint", max_voxels=ex.max_voxels)
    model = module.model.float().cpu().eval()
    width, height = module.cfg.dataset.target_size
    results = Path(cfg.results_dir)
    path2d = Path(ex.onnx_file_2d or results / "nvpanoptix3d_2d.onnx")
    image = torch.rand(1, 3, height, width)
    diff2d = _export(Stage2D(model), (image,), path2d, ["image"], OUT_2D, ex.opset_version)
    print(f"[export] 2D stage -> {path2d}: max abs difference to PyTorch {diff2d:.3e}")
    result = {"onnx_file_2d": str(path2d), "max_abs_diff_2d": diff2d}
    if model.stage3d is not None:
        o = model.forward_2d(image)
        depth = o.depth  # the 3D file takes the depth the 3D stage lifts
        path3d = Path(ex.onnx_file_3d or results / "nvpanoptix3d_3d.onnx")
        diff3d = _export(Stage3D(model), (o.mask_features, depth, o.query_embed), path3d,
                         ["mask_features", "depth", "query_embed"], OUT_3D, ex.opset_version, _voxelwise_diff)
        shared = _voxelwise_diff.shared
        print(f"[export] 3D stage -> {path3d}: max abs difference to PyTorch {diff3d:.3e} on the "
              f"{shared:.1%} of candidate voxels both runtimes picked")
        result.update({"onnx_file_3d": str(path3d), "max_abs_diff_3d": diff3d, "shared_candidates_3d": shared})
    engine = ex.trt.engine_file_2d or str(results / "nvpanoptix3d_2d.engine")
    message = _tensorrt(path2d, engine, ex.trt.data_type, ex.trt.workspace_size_mb)
    if message is None:
        if ex.trt.engine_file_2d:  # asked for by name: an export without it did less than asked
            raise SpecError("export.trt.engine_file_2d: a TensorRT engine was asked for but tensorrt is not installed "
                            "here; install tensorrt, or leave export.trt.engine_file_2d empty for ONNX only")
        message = NO_TENSORRT
        status.warn(message)
    else:
        print(f"[export] {message}")
    result["tensorrt"] = message
    status.write("done", action="export", **result)
    return result
