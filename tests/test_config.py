"""The config tree: every config instantiates, the YAML lists every argument of our classes, and
unknown keys fail with a message that names them and the valid ones."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from selfsup.config import CONFIG_DIR, ConfigError, check_keys, instantiate, preflight, target_parameters


def compose(overrides: list[str], tmp_path: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra.compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.run_dir = str(tmp_path / "run")
        cfg.paths.data_dir = str(tmp_path / "data")
    GlobalHydra.instance().clear()
    return cfg


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def instantiate_on_meta(node: DictConfig):
    """Run every constructor (all shapes checked) without allocating the weights of big models."""
    with torch.device("meta"):
        return instantiate(node)


def _group_cases():
    for group in ("data", "backbone", "predictor", "mask", "objective", "probe", "optim", "schedule", "model", "trainer", "logger", "callbacks", "debug"):
        for option in options(group):
            yield group, option


PROBING_OPTIONS = {("model", "probe"), ("model", "probe_grid"), ("model", "knn"), ("backbone", "timm"), ("schedule", "warmup_cosine")}
# Options that only make sense inside a detection run: composed with the detection experiment.
DETECTION_OPTIONS = {("data", "embedded_coco"), ("data", "coco"), ("model", "maskrcnn_vitdet"), ("schedule", "vitdet")}


def _needs(group: str, option: str, tmp_path: Path) -> list[str]:
    extra = ["experiment=det_vitdet"] if (group, option) in DETECTION_OPTIONS else []
    if group == "data" and option != "embedded":
        extra.append(f"data.root={tmp_path}")
    if group == "trainer" and option == "gpu":
        extra.append("trainer.accelerator=cpu")  # no GPU here: everything else in the config is built
    if (group, option) in PROBING_OPTIONS:
        extra.append("experiment=probe_ep")  # they read ${probe}, or experiment=ijepa sets keys they do not have
    return extra


@pytest.mark.parametrize("group,option", list(_group_cases()))
def test_every_group_option_composes_and_instantiates(group, option, tmp_path):
    cfg = compose([f"{group}={option}", *_needs(group, option, tmp_path)], tmp_path)
    check_keys(cfg)
    if group in ("trainer", "debug"):
        assert instantiate(cfg.trainer) is not None
    elif group == "optim":
        assert instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(1))]) is not None
    elif group in ("logger", "callbacks"):
        assert all(instantiate(node) is not None for node in cfg[group].values() if node is not None)  # null: switched off
    else:
        assert instantiate_on_meta(cfg[group]) is not None


def _experiments():
    return options("experiment")


@pytest.mark.parametrize("experiment", _experiments())
def test_every_experiment_instantiates(experiment, tmp_path):
    cfg = compose([f"experiment={experiment}", f"data.root={tmp_path}"] if "in1k" in experiment else [f"experiment={experiment}"], tmp_path)
    if cfg.trainer.accelerator == "gpu":
        cfg.trainer.accelerator = "cpu"  # no GPU here: everything else in the config is built
    OmegaConf.resolve(cfg)
    check_keys(cfg)
    for key in ("data", "model"):
        assert instantiate_on_meta(cfg[key]) is not None
    instantiate(cfg.trainer)


@pytest.mark.parametrize("option", options("callbacks"))
def test_last_checkpoint_is_written_by_an_unmonitored_callback(option, tmp_path):
    """Lightning writes a monitored callback's last.ckpt only when the metric improved: a run whose
    last validation was not its best would end (and resume) on an older state. last.ckpt comes from
    a callback that monitors nothing; the best is a separate callback (this broke segmentation)."""
    cfg = compose([f"callbacks={option}"], tmp_path)
    for name, node in (cfg.callbacks or {}).items():
        if node is not None and node.get("save_last"):
            assert node.get("monitor") is None, f"callbacks/{option}.yaml: {name} has save_last and monitor={node.monitor}"


def _own_targets(node, path=""):
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if isinstance(target, str) and target.startswith(("selfsup.", "tasks.")):
            yield path, target, node
        for key in node:
            if not node._get_node(key)._is_interpolation():
                yield from _own_targets(node[key], f"{path}.{key}" if path else key)


@pytest.mark.parametrize("experiment", [None, *_experiments()])
def test_the_yaml_lists_every_argument_of_our_classes(experiment, tmp_path):
    """No default that only lives in Python: each of our targets gets every argument from the YAML."""
    cfg = compose([f"experiment={experiment}"] if experiment else [], tmp_path)
    for path, target, node in _own_targets(cfg):
        names, _ = target_parameters(target)
        missing = [n for n in names if n not in node]
        assert not missing, f"{path} ({target}) does not list {missing} in the YAML"


def test_unknown_override_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        preflight(["experiment=ijepa", "data.batchsize=8"])
    msg = str(err.value)
    assert "data.batchsize" in msg and "did you mean 'batch_size'" in msg and "num_workers" in msg


def test_unknown_key_inside_a_yaml_names_the_target_and_the_valid_ones(tmp_path):
    cfg = compose([], tmp_path)
    with open_dict(cfg):
        cfg.backbone.dept = 3
    with pytest.raises(ConfigError, match=r"unknown config key 'backbone.dept' for selfsup.models.backbone.jepa_vit \(did you mean 'depth'\?\); valid keys: checkpoint, checkpoint_key, img_size"):
        check_keys(cfg)


def test_missing_dataset_root_is_explained(tmp_path):
    cfg = compose(["data=imagefolder"], tmp_path)
    with pytest.raises(Exception, match="data.root is required for data.source=imagefolder"):
        instantiate(cfg.data)


def test_config_dir_is_complete():
    for group in ("data", "backbone", "predictor", "mask", "objective", "probe", "optim", "schedule", "model", "trainer", "logger", "callbacks", "paths", "experiment", "debug", "hydra"):
        assert (CONFIG_DIR / group).is_dir(), group
