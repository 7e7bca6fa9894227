"""Shipped weights and ONNX: int8 storage, and both stages exported and checked with onnxruntime."""
from __future__ import annotations

import dataclasses

import torch
from helpers import spec_file

from nvpanoptix3d.cli import load_config


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
    cfg = load_config(str(spec_file(tmp_path)), [f"results_dir={tmp_path}"])
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
    cfg = load_config(str(spec_file(tmp_path)), [f"results_dir={tmp_path}"])
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
    cfg = load_config(str(spec_file(tmp_path, ["model.depth_head.guide_channels=8", "dataset.enable_3d=false"])),
                      [f"results_dir={tmp_path}"])
    torch.manual_seed(0)
    model = PanopticReconstruction(cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.head2d.depth_head.guide.delta.weight, std=0.1)
        image = torch.rand(1, 3, 240, 320)
        assert model.forward_2d(image).depth.shape[-2:] == (120, 160)
    diff = _export(Stage2D(model), (image,), tmp_path / "2d.onnx", ["image"], OUT_2D, cfg.export.opset_version)
    assert diff < 1e-3
