"""The VGGT backbone: released-checkpoint names and shapes, loading such a checkpoint, the 2D RoPE."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from nvpanoptix3d.config import ModelConfig, SpecError
from nvpanoptix3d.model.backbone import get_backbone
from nvpanoptix3d.model.vggt import Rope2D, VGGTBackbone

OURS_ONLY = ("neck.", "levels.", "stem4.")  # our neck: not in a released checkpoint


def _released_format(backbone: VGGTBackbone) -> dict:
    """What a released VGGT checkpoint holds: the aggregator's tensors under `aggregator.`, plus heads."""
    state = {f"aggregator.{k}": v.clone() for k, v in backbone.state_dict().items() if not k.startswith(OURS_ONLY)}
    state["depth_head.projects.0.weight"] = torch.randn(8, 8)
    state["camera_head.trunk.0.attn.qkv.weight"] = torch.randn(24, 8)
    return state


def test_parameter_names_and_shapes_are_those_of_the_released_aggregator():
    c = 64
    names = {k: tuple(v.shape) for k, v in VGGTBackbone(c, 2, 1).state_dict().items()}
    expected = {"camera_token": (1, 2, 1, c), "register_token": (1, 2, 4, c),
                "patch_embed.patch_embed.proj.weight": (c, 3, 14, 14), "patch_embed.cls_token": (1, 1, c),
                "patch_embed.register_tokens": (1, 4, c), "patch_embed.pos_embed": (1, 1 + 37 * 37, c),
                "patch_embed.mask_token": (1, c), "patch_embed.blocks.1.ls1.gamma": (c,),
                "patch_embed.blocks.0.attn.qkv.weight": (3 * c, c), "patch_embed.blocks.0.mlp.fc2.weight": (c, 4 * c),
                "patch_embed.norm.weight": (c,), "frame_blocks.1.attn.q_norm.weight": (c,),
                "global_blocks.0.attn.k_norm.bias": (c,), "global_blocks.1.attn.proj.weight": (c, c),
                "frame_blocks.0.ls2.gamma": (c,), "global_blocks.1.norm2.bias": (c,)}
    for name, shape in expected.items():
        assert names.get(name) == shape, name


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_a_released_format_checkpoint_loads_into_the_backbone(tmp_path, fmt):
    torch.manual_seed(0)
    source = VGGTBackbone(64, 2, 1).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))  # no tensor keeps its initial value
    state = _released_format(source)
    path = tmp_path / f"model.{fmt}"
    save_file(state, str(path)) if fmt == "safetensors" else torch.save(state, path)
    cfg = dataclasses.replace(ModelConfig(), backbone_type="vggt", embed_dim=64, depth=2,
                              pretrained_backbone_path=str(path))
    loaded = get_backbone(cfg).eval()
    for name, value in loaded.state_dict().items():
        if not name.startswith(OURS_ONLY) and name in source.state_dict():
            assert torch.equal(value, source.state_dict()[name]), name
    image = torch.rand(1, 3, 240, 320)
    with torch.no_grad():  # the aggregator's tokens are the source's: same patch tokens out of the DINOv2 part
        x = (image - loaded.mean) / loaded.std
        x = torch.nn.functional.interpolate(x, size=(238, 322), mode="bilinear", align_corners=False)
        assert torch.allclose(loaded.patch_embed(x), source.patch_embed(x))
    assert [f.shape[-2:] for f in loaded(image)] == [(60, 80), (30, 40), (15, 20), (8, 10)]


def test_a_checkpoint_that_fits_nothing_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"aggregator.frame_blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, str(path))
    cfg = dataclasses.replace(ModelConfig(), backbone_type="vggt", embed_dim=64, depth=1,
                              pretrained_backbone_path=str(path))
    with pytest.raises(SpecError, match="model.pretrained_backbone_path: no tensor"):
        get_backbone(cfg)


def test_rope_keeps_norms_and_scores_depend_on_relative_position_only():
    rope = Rope2D()
    q, k = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16)

    def score(pq, pk):
        return (rope(q, torch.tensor([[pq]])) * rope(k, torch.tensor([[pk]]))).sum(-1)

    assert torch.allclose(rope(q, torch.tensor([[[3, 5]]])).norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    assert torch.allclose(score([2, 7], [1, 3]), score([5, 9], [4, 5]), atol=1e-4)   # same offset (1, 4)
    assert not torch.allclose(score([2, 7], [1, 3]), score([2, 7], [1, 4]), atol=1e-3)
    assert torch.equal(rope(q, torch.zeros(1, 1, 2, dtype=torch.long)), q)      # position 0: no rotation


def test_position_table_is_resized_as_dinov2_does_and_exports_to_onnx(tmp_path):
    """DINOv2 resizes its 37 x 37 position table with antialiased bicubic interpolation, which ONNX lacks: ours
    is the same map as two constant matrix products."""
    import onnxruntime as ort
    from torch.nn import functional as F

    from nvpanoptix3d.model.vggt import POS_GRID, DinoPatchEmbed
    embed = DinoPatchEmbed(16, 1, 1).eval()
    table = embed._position(17, 23)[0, 1:]
    grid = embed.pos_embed[:, 1:].reshape(1, POS_GRID, POS_GRID, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(17, 23), mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(-1, 16)
    assert torch.allclose(table, want, atol=1e-6)
    image = torch.rand(1, 3, 238, 322)
    with torch.no_grad():
        expected = embed(image)
    torch.onnx.export(embed, (image,), str(tmp_path / "embed.onnx"), input_names=["image"], opset_version=17,
                      dynamo=False)
    got = ort.InferenceSession(str(tmp_path / "embed.onnx")).run(None, {"image": image.numpy()})[0]
    assert abs(got - expected.numpy()).max() < 1e-4


def test_widths_the_rotary_embedding_cannot_split_are_refused_naming_the_key():
    # 200 = 1 head of 200: fine
    get_backbone(dataclasses.replace(ModelConfig(), backbone_type="vggt", embed_dim=200, depth=1))
    with pytest.raises(SpecError, match="model.embed_dim: 50 leaves 50 channels"):
        get_backbone(dataclasses.replace(ModelConfig(), backbone_type="vggt", embed_dim=50, depth=1))
