"""The probing commands of the README, run verbatim on a tiny ImageFolder and a tiny backbone
(the appended overrides point them at it and shorten the runs)."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.training.checkpoint import read_checkpoint
from tests.helpers import make_official_checkpoint, run_command, summary_of
from tests.probing_helpers import TINY, make_backbone, make_imagefolder
from selfsup.training.export import load_encoder

QUIET = ["logger=none", "trainer.enable_progress_bar=false", "data.num_workers=0", "data.persistent_workers=false", "data.batch_size=8"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_readme")
    data = make_imagefolder(root / "images")
    backbone = make_backbone(root / "backbone.safetensors")
    # one of our Lightning checkpoints: the target encoder under objective.target_encoder.*
    weights, _ = load_encoder(backbone)
    ckpt = root / "last.ckpt"
    torch.save({"state_dict": {f"objective.target_encoder.{k}": v for k, v in weights.items()}, "pytorch-lightning_version": "2.6.6"}, ckpt)
    return data, backbone, ckpt


def extra(tiny, *more: str, checkpoint: str = "ckpt") -> list[str]:
    data, backbone, ckpt = tiny
    path = ckpt if checkpoint == "ckpt" else backbone
    return ["data=imagefolder", f"data.root={data}", *TINY, *QUIET, f"backbone.checkpoint={path}", "trainer.max_epochs=2", *more]


def best_and_last(proc) -> str:
    line = summary_of(proc.stdout)
    assert "val/best_acc1=" in line and "val/best_epoch=" in line and "val/acc1=" in line and "val/acc5=" in line, line
    return line


def test_readme_probe_ep_from_our_checkpoint(tiny, tmp_path):
    proc = run_command("python tools/train.py experiment=probe_ep backbone.checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt", tmp_path,
                       extra(tiny, "run_name=ep", "callbacks.attention_maps.num_images=2", "callbacks.attention_maps.max_queries=4"))
    best_and_last(proc)
    run = tmp_path / "probe_ep" / "ep"
    assert (run / "attention_maps" / "epoch001.png").stat().st_size > 1000
    assert list((run / "checkpoints").glob("best-epoch*.ckpt")) and (run / "probe_results.json").exists()


@pytest.mark.slow
def test_readme_probe_commands(tiny, tmp_path):
    best_and_last(run_command("python tools/train.py experiment=probe_ep probe=aim backbone.checkpoint=outputs/ijepa/myrun/checkpoints/last.target_encoder.safetensors",
                              tmp_path, extra(tiny, "callbacks=probe", checkpoint="safetensors")))
    best_and_last(run_command("python tools/train.py experiment=probe_vjepa backbone.checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt", tmp_path, extra(tiny)))
    grid = run_command("python tools/train.py experiment=probe_linear_grid backbone.checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt", tmp_path,
                       extra(tiny, "model.features.blocks=[-2,-1]", "model.heads.n_last_blocks=[1,2]", "run_name=grid"))
    best_and_last(grid)
    assert len(json.loads((tmp_path / "probe_linear_grid" / "grid" / "probe_results.json").read_text())["best"]) == 26
    knn = summary_of(run_command("python tools/train.py experiment=probe_knn backbone.checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt", tmp_path, extra(tiny)).stdout)
    assert all(f"val/knn_k{k}_acc1=" in knn for k in (10, 20, 100, 200)), knn
    low = run_command("python tools/train.py experiment=probe_ep data.lowshot.per_class=10 model.features.blocks=[3] backbone.checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt",
                      tmp_path, extra(tiny, "data.lowshot.per_class=2", "data.batch_size=6", "model.features.blocks=[0]", "callbacks=probe", "run_name=low"))
    assert "low-shot training subset: 6 of 24 images" in low.stdout + low.stderr
    assert read_checkpoint(tmp_path / "probe_ep" / "low" / "checkpoints" / "last.ckpt")["config"]["model"]["features"]["blocks"] == [0]


@pytest.mark.slow
def test_readme_random_init_commands(tiny, tmp_path):
    """The random-init column of the README's measured table: ``backbone.checkpoint=null``, no file read."""
    data, _, _ = tiny
    small = ["data=imagefolder", f"data.root={data}", *TINY, *QUIET, "trainer.max_epochs=2"]
    two_blocks = ["model.features.blocks=[-2,-1]", "model.heads.n_last_blocks=[1,2]"]  # the tiny ViT has 2
    for command, more in (("python tools/train.py experiment=probe_ep backbone.checkpoint=null", []),
                          ("python tools/train.py experiment=probe_vjepa backbone.checkpoint=null", []),
                          ("python tools/train.py experiment=probe_linear_grid backbone.checkpoint=null", two_blocks)):
        proc = run_command(command, tmp_path, [*small, *more])
        best_and_last(proc)
        assert "backbone: loaded" not in proc.stdout + proc.stderr
    knn = summary_of(run_command("python tools/train.py experiment=probe_knn backbone.checkpoint=null", tmp_path, small).stdout)
    assert "val/knn_k200_acc1=" in knn, knn


@pytest.mark.slow
def test_readme_in1k_command_with_an_official_ijepa_checkpoint(tiny, tmp_path):
    """``probe_ep_in1k`` as printed, shrunk to CPU size: the official ``.pth.tar`` (``module.``, target encoder) loads strictly."""
    data, _, _ = tiny
    official, _, target, _ = make_official_checkpoint(tmp_path)
    proc = run_command(
        "python tools/train.py experiment=probe_ep_in1k data.root=/datasets/imagenet backbone.checkpoint=IN1K-vit.h.14-300e.pth.tar", tmp_path,
        [f"data.root={data}", f"backbone.checkpoint={official}", "backbone.embed_dim=48", "backbone.depth=2", "backbone.num_heads=3",
         "backbone.patch_size=8", "data.image_size=32", "probe.num_queries=8", "trainer.accelerator=cpu", "trainer.devices=1",
         "trainer.precision=32", "trainer.max_epochs=1", "callbacks=probe", *QUIET],
    )
    best_and_last(proc)


@pytest.mark.slow
def test_readme_probe_heads_benchmark(tiny, tmp_path):
    small = ["--batch", "8", "--tokens", "16", "--dim", "64", "--classes", "10", "--repeats", "1"]
    timing = run_command("python tools/benchmark.py probe-heads", tmp_path, ["--probes", "linear,ep,ep_official,vjepa", *small])
    rows = {line.split()[0]: line.split() for line in timing.stdout.splitlines()[2:]}
    assert list(rows) == ["linear", "ep", "ep_official", "vjepa"] and rows["vjepa"][-1] == "1.0x", timing.stdout
    assert rows["ep"][1] == rows["ep_official"][1]  # the same parameters in either order
    proc = run_command("python tools/benchmark.py probe-heads --checkpoint outputs/ijepa/myrun/checkpoints/last.ckpt", tmp_path,
                       ["--probes", "linear,ep,vjepa", "--batch", "8", "--tokens", "16", "--dim", "64", "--classes", "10", "--repeats", "1",
                        "--checkpoint", str(tiny[2]), "--epochs", "1", "--output-dir", str(tmp_path),
                        *(f"--override={o}" for o in ["data=imagefolder", f"data.root={tiny[0]}", *TINY, *QUIET])])
    assert "vs vjepa" in proc.stdout and "top-1 (embedded)" in proc.stdout, proc.stdout
    rows = [line.split()[0] for line in proc.stdout.splitlines()[2:5]]
    assert rows == ["linear", "ep", "vjepa"], proc.stdout
    run = read_checkpoint(tmp_path / "probe_ep" / "ep" / "checkpoints" / "last.ckpt")
    assert (run["config"]["schedule"]["epochs"], run["config"]["trainer"]["max_epochs"]) == (1, 1)  # a whole schedule, not 1 epoch of 90


def test_probing_experiments_read_an_ijepa_recipe_checkpoint_without_architecture_overrides(tmp_path):
    """``experiment=ijepa`` and the probing experiments share ``backbone=vit_cpu``: a checkpoint of the
    pretraining recipe loads strictly into ``probe_ep`` and ``probe_knn`` with no backbone override."""
    run_command("python tools/train.py experiment=ijepa run_name=myrun", tmp_path,
                ["debug=fast", "data.num_workers=0", "data.persistent_workers=false"])
    ckpt = tmp_path / "ijepa" / "myrun" / "checkpoints" / "last.ckpt"
    fast = ["data.train_transform.augment=false", "trainer.max_epochs=1", "callbacks=probe", *QUIET,
            "data.lowshot.per_class=4", f"backbone.checkpoint={ckpt}"]
    best_and_last(run_command("python tools/train.py experiment=probe_ep backbone.checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt",
                              tmp_path, fast))
    knn = run_command("python tools/train.py experiment=probe_knn backbone.checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt",
                      tmp_path, [*QUIET, f"backbone.checkpoint={ckpt}", "data.lowshot.per_class=4"])
    assert "val/knn_k10_acc1=" in summary_of(knn.stdout)
