"""Pictures: every tools/visualize.py command writes a PNG of the right size with real content;
the attention maps are the encoder's own; a query probe plugs in; a trained EP probe's checkpoint
draws its own query maps (softmax of its logits on its backbone's tokens) and other probe
checkpoints or missing files fail with what to do; the official sampler's edge bias shows in the
frequency maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.config import ConfigError
from selfsup.masks.multiblock import MultiBlockMaskSampler
from selfsup.models.from_file import encoder_from_file
from selfsup.models.vit import JEPAViT
from selfsup.probes.ep import EfficientProbing
from selfsup.probing.attention_maps import attention_maps_picture, query_maps
from selfsup.probing.trained import load_query_probe
from selfsup.training.checkpoint import CheckpointError, read_checkpoint
from selfsup.training.export import save_encoder
from selfsup.viz.attention import EncoderAttention, QueryProbeAttention, last_block_attention
from selfsup.viz.canvas import TITLE_HEIGHT
from selfsup.viz.commands import render
from selfsup.viz.figures import attention_figure
from selfsup.viz.masks import mask_frequency
from selfsup.viz.probe import probe_images, title_of
from tests.helpers import run_command
from tests.probing_helpers import TINY, make_backbone, make_imagefolder, run_in_process

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


def test_the_ep_probe_plugs_into_the_attention_picture():
    torch.manual_seed(0)
    encoder = JEPAViT(**ARCH).eval()
    probe = EfficientProbing(192, num_queries=3)
    maps, titles = QueryProbeAttention(encoder, probe).attention_maps(torch.randn(2, 3, 64, 64))
    assert maps.shape == (2, 3, 64) and titles == ["query 0", "query 1", "query 2"]


# ------------------------------------------------------------------ a trained probe's query maps
PROBE_RUN = ["data.batch_size=8", "logger=none", "trainer.enable_progress_bar=false", "data.num_workers=0",
             "data.persistent_workers=false", "callbacks=probe", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]


@pytest.fixture(scope="module")
def probe_runs(tmp_path_factory):
    """A tiny EP probe and a linear probe, two training steps each through the training entry point
    (``selfsup.run.run``, what tools/train.py runs): ``(backbone file, {name: last.ckpt})``."""
    root = tmp_path_factory.mktemp("viz_probe")
    data, backbone = make_imagefolder(root / "images"), make_backbone(root / "backbone.safetensors")
    common = ["experiment=probe_ep", "data=imagefolder", f"data.root={data}", *TINY, f"backbone.checkpoint={backbone}", *PROBE_RUN]
    for name, probe in (("ep", "ep"), ("linear", "linear")):
        run_in_process([*common, f"probe={probe}"], root, name)
    return backbone, {name: root / name / "checkpoints" / "last.ckpt" for name in ("ep", "linear")}


def _cell(picture: np.ndarray, row: int, col: int) -> np.ndarray:
    return picture[row * PANEL : (row + 1) * PANEL, col * PANEL : (col + 1) * PANEL].astype(np.float32)


def _own_softmax_maps(ckpt, backbone, images: torch.Tensor) -> torch.Tensor:
    """``[B, Q, N]`` recomputed from the files alone: softmax((cls_token * D^-0.5) @ x^T) with x the
    backbone's last-block patch tokens before the final norm (experiment=probe_ep), spec 3.7."""
    encoder = encoder_from_file(backbone).eval()
    queries = read_checkpoint(ckpt)["state_dict"]["heads.probe.0.cls_token"][0]  # [Q, D]
    with torch.no_grad():
        x = encoder.blocks(encoder.norm_pre(encoder._pos_embed(encoder.patch_embed(images))))
        logits = (queries * x.shape[-1] ** -0.5) @ x.transpose(1, 2)
    return logits


def test_attention_command_draws_an_ep_probe_checkpoints_query_maps(probe_runs, tmp_path):
    backbone, ckpts = probe_runs
    out = tmp_path / "ep_attention.png"
    run_command("python tools/visualize.py attention checkpoint=outputs/probe_ep/myprobe/checkpoints/last.ckpt out=ep_attention.png",
                tmp_path, [f"checkpoint={ckpts['ep']}", f"out={out}", "num_images=2", "max_queries=4"])
    picture = _png(out)
    assert picture.shape == (2 * PANEL, (2 + 4) * PANEL, 3)  # image, all queries, 4 query maps; 2 rows
    for row in range(2):
        cells = [_cell(picture, row, col) for col in range(6)]
        assert all(c.std() > 3.0 for c in cells), row
        for i in range(2, 6):
            for j in range(i + 1, 6):
                assert np.abs(cells[i] - cells[j]).mean() > 1.0, (row, i, j)  # the queries look at different places

    probe = load_query_probe(ckpts["ep"], read_checkpoint(ckpts["ep"]))
    images, shown = probe_images(probe, 2)
    logits = _own_softmax_maps(ckpts["ep"], backbone, images)
    spread = logits.max(dim=-1).values - logits.min(dim=-1).values
    assert spread.min() > 100 * 1e-5  # queries near their 0.02-scale init, yet far above the tolerance below
    maps = query_maps(probe.pool, probe.features(images)["tokens"], probe.spec(tuple(images.shape[-2:])))
    assert maps.shape == (2, 32, 4, 4)
    torch.testing.assert_close(maps.flatten(2).log(), logits.log_softmax(dim=-1), rtol=0, atol=1e-5)
    expected = attention_maps_picture(shown, logits.softmax(dim=-1).reshape(2, 32, 4, 4), 4, title_of(probe, ckpts["ep"]), PANEL)
    differ = np.abs(picture.astype(int) - expected.astype(int)) > 2
    assert differ.mean() < 1e-3  # the PNG shows these maps (pixels differ only where rounding flips)


def test_probe_checkpoint_without_query_maps_fails_listing_what_it_has(probe_runs, tmp_path):
    _, ckpts = probe_runs
    proc = run_command("python tools/visualize.py attention checkpoint=outputs/probe_ep/myprobe/checkpoints/last.ckpt out=ep_attention.png",
                       tmp_path, [f"checkpoint={ckpts['linear']}", f"out={tmp_path / 'x.png'}"], check=False)
    assert proc.returncode == 2 and not (tmp_path / "x.png").exists()
    assert "no query-based probe" in proc.stderr and "selfsup.probes.linear.TokenPool" in proc.stderr, proc.stderr
    assert "ep" in proc.stderr.split("Probes with attention maps:")[1] and "Traceback" not in proc.stderr


def test_probe_attention_names_missing_or_wrong_files(probe_runs, tmp_path):
    backbone, ckpts = probe_runs
    ep = f"checkpoint={ckpts['ep']}"
    with pytest.raises(CheckpointError, match="does not exist"):
        render("attention", [f"checkpoint={tmp_path / 'missing.ckpt'}"])
    with pytest.raises(CheckpointError, match=r"is .*gone.safetensors, which does not exist: pass backbone.checkpoint="):
        render("attention", [ep, f"backbone.checkpoint={tmp_path / 'gone.safetensors'}"])
    other = make_backbone(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(CheckpointError, match="other weights than the backbone"):
        render("attention", [ep, f"backbone.checkpoint={other}"])
    with pytest.raises(ConfigError, match="not a key of the config saved in"):
        render("attention", [ep, "bakbone.checkpoint=x"])
    with pytest.raises(ConfigError, match=f"'pca' needs an encoder: pass its backbone, checkpoint={backbone}"):
        render("pca", [ep])


def test_frequency_maps_show_the_official_edge_bias():
    official = MultiBlockMaskSampler(mode="official", input_size=64, patch_size=8, min_keep=4)
    corrected = MultiBlockMaskSampler(mode="corrected", input_size=64, patch_size=8, min_keep=4)
    _, target_off = mask_frequency(official, draws=256)
    _, target_cor = mask_frequency(corrected, draws=256)
    assert target_off[-1, :].max() == 0 and target_off[:, -1].max() == 0  # never a target
    assert target_cor[-1, :].min() > 0 and target_cor[:, -1].min() > 0
