"""DMT-JEPA as a user runs it: the README's lead command, both heads in checkpoints with their
optimiser state, a killed run resuming bit-for-bit, and the benchmark command."""

from __future__ import annotations

import re

import torch

from selfsup.run import find_resume_checkpoint
from selfsup.training.checkpoint import read_checkpoint
from tests.helpers import EVERY_STEP_CHECKPOINTS, kill_train_at_step, run_command, run_train, summary_of

HEAD_GROUPS = ["encoder", "predictor", "encoder_no_decay", "predictor_no_decay", "head", "head_no_decay"]


def test_dmt_jepa_run_checkpoints_both_heads_and_their_optimiser_state(tmp_path):
    proc = run_command("python tools/train.py experiment=dmt_jepa", tmp_path, ["debug=fast", "run_name=smoke"])
    line = summary_of(proc.stdout)
    assert "train/loss=" in line and "train/neighbour_spatial_agreement=" in line and "train/neighbour_similarity=" in line
    ckpt = read_checkpoint(tmp_path / "dmt_jepa" / "smoke" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3 and ckpt["config"]["objective"]["k"] == 4

    state = ckpt["state_dict"]
    head = sorted(k.removeprefix("objective.head.") for k in state if k.startswith("objective.head."))
    target_head = sorted(k.removeprefix("objective.target_head.") for k in state if k.startswith("objective.target_head."))
    assert head == target_head and len(head) == 34 and "cls_blocks.1.attn.q.weight" in head and "norm.bias" in head
    # the target head is an EMA of the head (same start, three steps): no longer equal to it
    for key in ("cls_blocks.0.attn.q.weight", "cls_blocks.1.mlp.fc2.weight"):
        assert not torch.equal(state[f"objective.head.{key}"], state[f"objective.target_head.{key}"])

    opt = ckpt["optimizer_states"][0]
    assert [g["name"] for g in opt["param_groups"]] == HEAD_GROUPS  # the official init_opt order
    head_ids = [i for g in opt["param_groups"] if g["name"].startswith("head") for i in g["params"]]
    assert len(head_ids) == 34 and all(i in opt["state"] and "exp_avg" in opt["state"][i] for i in head_ids)


def test_killed_mid_epoch_and_resumed_ends_bit_identical_heads_included(tmp_path):
    common = [
        "experiment=dmt_jepa", *EVERY_STEP_CHECKPOINTS, "trainer.max_epochs=2", "trainer.limit_train_batches=4",
        "backbone.depth=1", "predictor.depth=1", "data.batch_size=8",
    ]
    run_train([*common, "run_name=straight"], tmp_path)
    straight = read_checkpoint(tmp_path / "dmt_jepa" / "straight" / "checkpoints" / "last.ckpt")

    ckpt_dir = tmp_path / "dmt_jepa" / "killed" / "checkpoints"
    kill_train_at_step([*common, "run_name=killed"], tmp_path, ckpt_dir, 2)
    interrupted = read_checkpoint(find_resume_checkpoint(ckpt_dir.parent))["global_step"]
    assert 2 <= interrupted < 8, interrupted

    run_train([*common, "run_name=killed", "resume=auto"], tmp_path)
    resumed = read_checkpoint(tmp_path / "dmt_jepa" / "killed" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == straight["global_step"] == 8
    assert any(k.startswith("objective.target_head.") for k in straight["state_dict"])
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    s_opt, r_opt = straight["optimizer_states"][0], resumed["optimizer_states"][0]
    assert [g["name"] for g in r_opt["param_groups"]] == HEAD_GROUPS
    assert s_opt["state"].keys() == r_opt["state"].keys()
    for i, a in s_opt["state"].items():
        assert all(torch.equal(a[k], r_opt["state"][i][k]) for k in a), i


def test_benchmark_command_reports_both_ratios(tmp_path):
    small = ["--img", "96", "--patch", "8", "--batch", "2", "--pred-depth", "1", "--warmup", "0", "--repeats", "1", "--threads", "1"]
    out = run_command("python tools/benchmark.py dmt-step --rounds 2", tmp_path, small).stdout
    assert "medians over 2 alternating processes" in out, out
    step = re.search(r"DMT-JEPA step / I-JEPA step: ([\d.]+)x", out)
    head = re.search(r"official all-patches / ours: ([\d.]+)x \(same modules\), ([\d.]+)x", out)
    assert step and head, out
    assert all(float(v) > 0 for v in (*step.groups(), *head.groups()))


def test_readme_official_repeat_override_runs(tmp_path):
    cmd = "python tools/train.py experiment=dmt_jepa objective.target_query_order=official_repeat"
    run_command(cmd, tmp_path, ["debug=fast", "trainer.limit_train_batches=1", "run_name=repeat"])
    ckpt = read_checkpoint(tmp_path / "dmt_jepa" / "repeat" / "checkpoints" / "last.ckpt")
    assert ckpt["config"]["objective"]["target_query_order"] == "official_repeat" and ckpt["global_step"] == 1
