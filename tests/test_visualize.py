"""Pictures: every tools/visualize.py command writes a PNG of the right size with real content;
the attention maps are the encoder's own; a query probe plugs in; the official sampler's edge bias
shows in the frequency maps."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from selfsup.masks.multiblock import MultiBlockMaskSampler
from selfsup.models.vit import JEPAViT
from selfsup.training.export import save_encoder
from selfsup.viz.attention import EncoderAttention, QueryProbeAttention, last_block_attention
from selfsup.viz.canvas import TITLE_HEIGHT
from selfsup.viz.figures import attention_figure
from selfsup.viz.masks import mask_frequency
from tests.helpers import run_command

PANEL = 128
ARCH = dict(img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3)  # a small CPU-sized encoder


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _panel(picture: np.ndarray, row: int, col: int) -> np.ndarray:
    top = row * (PANEL + TITLE_HEIGHT) + TITLE_HEIGHT
    return picture[top : top + PANEL, col * PANEL : (col + 1) * PANEL].astype(np.float32)


def _assert_nontrivial(picture: np.ndarray, rows: int, cols: int) -> None:
    assert picture.shape == (rows * (PANEL + TITLE_HEIGHT), cols * PANEL, 3)
    for r in range(rows):
        for c in range(cols):
            assert _panel(picture, r, c).std() > 3.0, (r, c)  # every panel has structure, none is flat


def _trained_like_encoder(tmp_path):
    torch.manual_seed(0)
    encoder = JEPAViT(**ARCH)
    with torch.no_grad():
        for p in encoder.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "last.target_encoder.safetensors"
    save_encoder(encoder, path, which="target_encoder")
    return path


def test_masks_command(tmp_path):
    out = tmp_path / "masks.png"
    run_command("python tools/visualize.py masks out=masks.png", tmp_path, [f"out={out}", "draws=200"])
    picture = _png(out)
    _assert_nontrivial(picture, rows=4 + 1, cols=4)  # 4 images + the frequency row; 2 draws x 2 samplers


def test_attention_command(tmp_path):
    out = tmp_path / "attention.png"
    ckpt = _trained_like_encoder(tmp_path)
    run_command("python tools/visualize.py attention checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt out=attention.png",
                tmp_path, [f"checkpoint={ckpt}", f"out={out}"])
    _assert_nontrivial(_png(out), rows=4, cols=1 + 4)  # image, mean of heads, 3 heads


def test_pca_command_compares_checkpoint_and_random_init(tmp_path):
    out = tmp_path / "pca.png"
    ckpt = _trained_like_encoder(tmp_path)
    run_command("python tools/visualize.py pca checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt out=pca.png",
                tmp_path, [f"checkpoint={ckpt}", f"out={out}"])
    picture = _png(out)
    _assert_nontrivial(picture, rows=4, cols=3)
    assert np.abs(_panel(picture, 0, 1) - _panel(picture, 0, 2)).mean() > 1.0  # checkpoint != random init


def test_last_block_attention_is_what_the_block_computes():
    torch.manual_seed(0)
    encoder = JEPAViT(**ARCH).eval()
    images = torch.randn(2, 3, 64, 64)
    attn = last_block_attention(encoder, images)
    assert attn.shape == (2, 3, 64, 64) and torch.allclose(attn.sum(-1), torch.ones(2, 3, 64))
    block = encoder.blocks[-1].attn
    captured = {}
    handles = [block.register_forward_pre_hook(lambda m, a: captured.__setitem__("x", a[0])),
               block.register_forward_hook(lambda m, a, o: captured.__setitem__("out", o))]
    with torch.no_grad():
        encoder.forward_tokens(images)
        v = block.qkv(captured["x"]).reshape(2, 64, 3, 3, 64).permute(2, 0, 3, 1, 4)[2]
        out = block.proj((attn @ v).transpose(1, 2).reshape(2, 64, 192))
    for h in handles:
        h.remove()
    assert torch.allclose(out, captured["out"], atol=1e-5)  # the maps reproduce the block's output


class TinyQueryProbe(torch.nn.Module):
    """A probe with learned queries over the tokens (EP-style keys = raw tokens, scale D^-0.5)."""

    def __init__(self, dim: int, queries: int) -> None:
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(queries, dim))

    def attention_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        return (self.queries @ tokens.transpose(1, 2) * tokens.shape[-1] ** -0.5).softmax(dim=-1)


def test_a_query_probe_plugs_into_the_attention_picture():
    torch.manual_seed(0)
    encoder = JEPAViT(**ARCH).eval()
    images = torch.randn(2, 3, 64, 64)
    probe = TinyQueryProbe(192, queries=3)
    maps, titles = QueryProbeAttention(encoder, probe).attention_maps(images)
    assert maps.shape == (2, 3, 64) and titles == ["query 0", "query 1", "query 2"]
    pictures = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    sources = {"encoder": EncoderAttention(encoder), "probe": QueryProbeAttention(encoder, probe)}
    picture = attention_figure(images, pictures, sources, (8, 8), PANEL)
    assert picture.shape == (2 * (PANEL + TITLE_HEIGHT), (1 + 4 + 3) * PANEL, 3)


def test_frequency_maps_show_the_official_edge_bias():
    official = MultiBlockMaskSampler(mode="official", input_size=64, patch_size=8, min_keep=4)
    corrected = MultiBlockMaskSampler(mode="corrected", input_size=64, patch_size=8, min_keep=4)
    _, target_off = mask_frequency(official, draws=256)
    _, target_cor = mask_frequency(corrected, draws=256)
    assert target_off[-1, :].max() == 0 and target_off[:, -1].max() == 0  # never a target
    assert target_cor[-1, :].min() > 0 and target_cor[:, -1].min() > 0
