"""Online probing during pretraining (``callbacks=pretrain_online_probe``, on in ``experiment=ijepa``):
the heads learn from detached target-encoder tokens without touching the pretraining, report
``val/online_*_acc1`` every epoch, and resume exactly."""

from __future__ import annotations

import pytest
import torch

from selfsup.callbacks.online_probe import OnlineProbe
from selfsup.training.checkpoint import read_checkpoint
from tests.helpers import run_command, summary_of
from tests.probing_helpers import make_imagefolder, run_in_process

# experiment=ijepa on a tiny labelled ImageFolder: 64 px, patch 8 (8x8 tokens), width 64 (EP_32 needs D % 32 == 0)
TINY_PRETRAIN = [
    "experiment=ijepa", "data=imagefolder", "backbone.embed_dim=64", "backbone.depth=2", "backbone.num_heads=4",
    "predictor.predictor_embed_dim=32", "predictor.depth=1", "data.batch_size=8", "data.num_workers=0",
    "data.persistent_workers=false", "logger=none", "trainer.enable_progress_bar=false",
    "callbacks.model_checkpoint.export_backbones=false",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("online") / "images", classes=3, per_class=8, size=72)


def online_state(run_dir):
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    states = [v for k, v in ckpt["callbacks"].items() if k.startswith("OnlineProbe")]
    assert len(states) == 1, list(ckpt["callbacks"])
    return ckpt, states[0]


def test_online_probe_reports_accuracy_and_leaves_pretraining_unchanged(images, tmp_path):
    common = [*TINY_PRETRAIN, f"data.root={images}", "trainer.max_epochs=2"]
    with_probe = run_in_process([*common, "callbacks=pretrain_online_probe"], tmp_path, "with")
    without = run_in_process([*common, "callbacks=pretrain"], tmp_path, "without")
    for name in ("linear", "ep"):
        assert 0 <= with_probe[f"val/online_{name}_acc1"] <= 100 and f"val/online_{name}_acc5" in with_probe
        assert f"val/online_{name}_acc1" not in without
    a, state = online_state(tmp_path / "with")
    b = read_checkpoint(tmp_path / "without" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 6
    for key, value in b["state_dict"].items():  # no gradient and no RNG draw of the heads reaches the pretraining
        assert torch.equal(value, a["state_dict"][key]), key
    assert "ep.0.cls_token" in state["heads"] and "linear.2.weight" in state["heads"]
    assert state["optimizer"]["state"], "the heads' optimiser has stepped"


@pytest.mark.slow
def test_online_probe_resumes_exactly(images, tmp_path):
    common = [*TINY_PRETRAIN, f"data.root={images}", "callbacks=pretrain_online_probe"]
    run_in_process([*common, "trainer.max_epochs=2"], tmp_path, "straight")
    run_in_process([*common, "trainer.max_epochs=1"], tmp_path, "resumed")
    run_in_process([*common, "trainer.max_epochs=2", f"resume={tmp_path}/resumed/checkpoints/last.ckpt"], tmp_path, "resumed")
    (_, a), (_, b) = online_state(tmp_path / "straight"), online_state(tmp_path / "resumed")
    for key, value in a["heads"].items():
        assert torch.equal(value, b["heads"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_online_probe_heads_learn_from_detached_tokens():
    """The heads train on the tokens they are given, with their own optimiser; the tokens get no gradient."""
    from functools import partial

    from selfsup.probes.ep import EfficientProbing
    from selfsup.probes.linear import TokenPool

    callback = OnlineProbe({"linear": partial(TokenPool, dim=None), "ep": partial(EfficientProbing, dim=None, num_queries=4)},
                           partial(torch.optim.AdamW, lr=1e-2), seed=0)

    class Module:  # what setup / on_train_batch_end read from the pretraining module and trainer
        device = torch.device("cpu")
        logged: dict = {}

        def log_dict(self, metrics, **kwargs):
            self.logged.update(metrics)

    encoder = torch.nn.Module()
    encoder.embed_dim = 16
    encoder.patch_embed = type("P", (), {"dynamic_feat_size": staticmethod(lambda hw: (hw[0] // 4, hw[1] // 4))})()
    module = Module()
    module.objective = type("O", (), {"target_encoder": encoder})()
    trainer = type("T", (), {"datamodule": type("D", (), {"image_size": 16, "num_classes": 2})(), "world_size": 1})()
    callback.setup(trainer, module, "fit")
    callback.on_fit_start(trainer, module)
    torch.manual_seed(0)
    labels = torch.arange(32) % 2
    tokens = torch.randn(32, 16, 16) + labels[:, None, None] * 0.5  # class 1 is brighter everywhere
    tokens.requires_grad_(True)
    output = type("Out", (), {"target_tokens": tokens})()
    for step in range(30):
        callback.on_train_batch_end(trainer, module, {"output": output}, {"labels": labels}, step)
    assert tokens.grad is None
    assert module.logged["train/online_linear_loss"] < 0.3 and module.logged["train/online_ep_loss"] < 0.3


def test_readme_pretraining_with_online_probes(tmp_path):
    proc = run_command("python tools/train.py experiment=ijepa callbacks=pretrain_online_probe", tmp_path, ["debug=fast"])
    line = summary_of(proc.stdout)
    assert "val/online_ep_acc1=" in line and "val/online_linear_acc1=" in line
