"""Representation health: the metrics equal a direct numpy computation, a collapsed encoder is
flagged, a healthy one is not, and every pretraining run logs health/* to its logger and console."""

from __future__ import annotations

import csv
import math

import numpy as np
import torch

from selfsup.callbacks.health import health_metrics
from selfsup.eval.health import cosine, loss_per_block, normalized_std, rankme
from selfsup.masks.multiblock import MultiBlockMaskSampler
from selfsup.models.predictor import JEPAPredictor
from selfsup.models.vit import JEPAViT
from selfsup.objectives.ijepa import IJEPA
from tests.helpers import run_command, summary_of


def numpy_rankme(z: np.ndarray) -> float:
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def test_rankme_and_std_equal_numpy():
    rng = np.random.default_rng(0)
    for z in (rng.normal(size=(64, 16)), rng.normal(size=(10, 32)) @ np.diag(np.linspace(0.01, 3, 32)), rng.normal(size=(50, 3)) @ rng.normal(size=(3, 20))):
        t = torch.from_numpy(z).float()
        assert math.isclose(rankme(t), numpy_rankme(z.astype(np.float32).astype(np.float64)), rel_tol=1e-6)
        zn = z / np.linalg.norm(z, axis=1, keepdims=True)
        assert math.isclose(normalized_std(t), float(zn.std(axis=0, ddof=1).mean()), rel_tol=1e-5)
    # rank-3 data: RankMe <= 3; isotropic data: close to min(n, d)
    assert rankme(torch.randn(50, 3) @ torch.randn(3, 20)) <= 3.0 + 1e-4
    assert rankme(torch.randn(4096, 16)) > 15.5


def test_cosine_and_loss_per_block():
    pred, targ = torch.randn(4 * 6, 5, 8), torch.randn(4 * 6, 5, 8)
    assert math.isclose(cosine(pred, pred), 1.0, rel_tol=1e-6)
    blocks = loss_per_block(pred, targ, npred=4, kind="smooth_l1")
    direct = [torch.nn.functional.smooth_l1_loss(pred[6 * k : 6 * (k + 1)], targ[6 * k : 6 * (k + 1)]).item() for k in range(4)]
    assert np.allclose(blocks, direct) and math.isclose(np.mean(blocks), torch.nn.functional.smooth_l1_loss(pred, targ).item(), rel_tol=1e-5)


def _step_metrics(objective: IJEPA) -> dict[str, float]:
    torch.manual_seed(0)
    images = torch.randn(16, 3, 32, 32)
    masks_enc, masks_pred = MultiBlockMaskSampler(input_size=32, patch_size=8, min_keep=1)(16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = objective(images, masks_enc, masks_pred)
    pooled = out.target_tokens.mean(1)
    return health_metrics(pooled, out.target_tokens, out.prediction, out.target, len(masks_pred), "smooth_l1", 0.1, 2.0)


def _objective() -> IJEPA:
    torch.manual_seed(0)
    encoder = JEPAViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    return IJEPA(encoder, JEPAPredictor(embed_dim=32, predictor_embed_dim=16, depth=1, num_heads=2, img_size=32, patch_size=8))


def test_constant_output_encoder_is_flagged_and_a_random_one_is_not():
    healthy = _step_metrics(_objective())
    assert healthy["health/collapsed"] == 0.0 and healthy["health/rankme"] > 3
    collapsed = _objective()
    with torch.no_grad():  # the final LayerNorm maps everything to its bias: a constant encoder
        collapsed.target_encoder.norm.weight.zero_()
        collapsed.target_encoder.norm.bias.normal_()
    m = _step_metrics(collapsed)
    assert m["health/collapsed"] == 1.0
    assert m["health/feature_std"] < 1e-6 and m["health/rankme"] < 1.01 and m["health/token_rankme"] < 1.01
    assert set(m) >= {f"health/loss_block{k}" for k in range(4)} | {"health/pred_target_cosine", "health/token_std"}


def test_pretraining_logs_health_and_pictures_to_every_logger_and_the_console(tmp_path):
    proc = run_command("python tools/train.py experiment=dmt_jepa callbacks.pictures.every_n_epochs=1", tmp_path,
                       ["debug=fast", "run_name=h", "trainer.log_every_n_steps=2", "logger=many"])
    line = summary_of(proc.stdout)
    assert "health/rankme=" in line and "health/collapsed=0" in line
    with open(tmp_path / "dmt_jepa" / "h" / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    logged = [r for r in rows if r.get("health/rankme")]
    assert [int(r["step"]) for r in logged] == [1]  # after optimiser step 2 (Lightning's step index is 1)
    for r in logged:
        assert 1.0 < float(r["health/rankme"]) <= 64 and 0.0 < float(r["health/ema_momentum"]) <= 1.0
        assert float(r["health/feature_std"]) > 0 and -1 <= float(r["health/pred_target_cosine"]) <= 1
        assert all(r[f"health/loss_block{k}"] for k in range(4))

    run_dir = tmp_path / "dmt_jepa" / "h"
    for kind in ("masks", "attention", "pca"):  # PNGs in the run dir (what a CSV-only run has) ...
        assert (run_dir / "pictures" / kind / "epoch000.png").stat().st_size > 1000
    events = b"".join(p.read_bytes() for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert b"health/rankme" in events and all(f"pictures/{k}".encode() in events for k in ("masks", "attention", "pca"))
    media = list(run_dir.glob("wandb/offline-run-*/files/media/images/pictures/*.png"))
    assert len(media) == 3, media  # ... and images in TensorBoard and wandb
