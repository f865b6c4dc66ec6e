"""Config handling: every ``_target_`` node is checked against its target's signature before
instantiation, and command-line overrides are checked before Hydra runs, so a misspelled key fails
with a message that names it and lists the valid ones.
"""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration the user can fix: the message says what and how."""


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def target_parameters(target: str) -> tuple[list[str], bool]:
    """Parameter names of a ``_target_`` and whether it accepts arbitrary keywords.

    A class whose ``__init__`` forwards ``**kwargs`` to its parent also accepts the parent's
    parameters (walked up the MRO until a class without ``**kwargs``).
    """
    obj = get_object(target)
    if not inspect.isclass(obj):
        params = inspect.signature(obj).parameters.values()
        names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return names, any(p.kind == p.VAR_KEYWORD for p in params)
    names: list[str] = []
    for cls in obj.__mro__:
        if cls is object or "__init__" not in vars(cls):
            continue
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names, False
    return names, True


def check_keys(cfg: Any, path: str = "") -> None:
    """Raise ``ConfigError`` for a key that no ``_target_`` in ``cfg`` accepts."""
    if isinstance(cfg, DictConfig):
        if "_target_" in cfg:
            target = cfg._target_
            try:
                valid, open_ended = target_parameters(target)
            except Exception as err:  # the target itself does not import
                raise ConfigError(f"{path or '<root>'}._target_={target!r} cannot be imported: {err}") from err
            if not open_ended:
                for key in cfg:
                    if not str(key).startswith("_") and key not in valid:
                        raise ConfigError(
                            f"unknown config key '{path + '.' if path else ''}{key}' for {target}"
                            f"{_suggest(str(key), valid)}; valid keys: {', '.join(valid)}"
                        )
        for key in cfg:
            node = cfg._get_node(key)
            if node is not None and not node._is_missing():
                check_keys(cfg[key], f"{path}.{key}" if path else str(key))  # interpolations resolved
    elif isinstance(cfg, ListConfig):
        for i, item in enumerate(cfg):
            check_keys(item, f"{path}[{i}]")


def instantiate(cfg: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` after ``check_keys``, converting containers to plain Python."""
    check_keys(cfg)
    return hydra.utils.instantiate(cfg, _convert_="all", **kwargs)


def slurm_gpus_per_node(accelerator: str, devices: Any) -> int | None:
    """``hydra.launcher.gpus_per_node`` from the trainer: its devices on GPU, none on CPU."""
    if accelerator in ("gpu", "cuda"):
        return int(devices)
    if accelerator == "cpu":
        return None
    raise ConfigError(
        f"trainer.accelerator={accelerator!r}: state trainer.accelerator=gpu (or cpu) when launching on "
        "SLURM, so that the job asks for the GPUs the trainer will use"
    )


def register_resolvers() -> None:
    """Resolvers the launcher configs use: ``${slurm_gpus_per_node:accelerator,devices}``, ``${add:a,b}``."""
    OmegaConf.register_new_resolver("slurm_gpus_per_node", slurm_gpus_per_node, replace=True)
    OmegaConf.register_new_resolver("add", lambda *xs: sum(int(x) for x in xs), replace=True)


def _is_sweep(override: str) -> bool:
    return "," in override.split("=", 1)[-1] or "range(" in override or "choice(" in override


def preflight(overrides: list[str], config_name: str = "train") -> None:
    """Compose the config once to turn Hydra's override errors into messages listing the valid keys."""
    overrides = [o for o in overrides if not o.startswith("-") and "=" in o and not _is_sweep(o)]
    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            try:
                hydra.compose(config_name, overrides=overrides)
            except ConfigCompositionException as err:
                match = re.search(r"Could not override '([^']+)'", str(err))
                if not match:
                    raise ConfigError(str(err)) from err
                full = match.group(1)
                parent, _, key = full.rpartition(".")
                rest = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0]]  # group choices only
                try:
                    base = hydra.compose(config_name, overrides=rest)
                    node = OmegaConf.select(base, parent) if parent else base
                except Exception:
                    node = None
                valid = sorted(str(k) for k in node) if isinstance(node, DictConfig) else []
                raise ConfigError(
                    f"unknown config key '{full}'{_suggest(key, valid)}; valid keys under "
                    f"'{parent or '<root>'}': {', '.join(valid)}. To add a new key on purpose, use +{full}=..."
                ) from None
    finally:
        GlobalHydra.instance().clear()
