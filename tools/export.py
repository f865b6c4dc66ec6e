#!/usr/bin/env python
"""Export an encoder as a timm-loadable safetensors file plus the JSON of its timm arguments.

    python tools/export.py checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt out=encoder.safetensors
    python tools/export.py checkpoint=.../last.ckpt encoder=encoder out=context.safetensors   # the context encoder
    python tools/export.py checkpoint=IN1K-vit.h.14-300e.pth.tar out=ijepa_vith14.safetensors  # import official I-JEPA

``checkpoint``: our ``.ckpt``, a backbone ``.safetensors``, an official I-JEPA ``.pth.tar`` or a plain
state dict; ``encoder``: target_encoder (EMA, default) | encoder; ``num_heads``: only for an official
checkpoint whose width is not an official ViT size. Load the result with

    spec = selfsup.training.export.read_timm_spec("encoder.json")   # or json.load + the file path
    model = timm.create_model(spec["model_name"], pretrained=True,
                              pretrained_cfg_overlay=spec["pretrained_cfg_overlay"], **spec["model_args"])

or in this project with ``backbone.checkpoint=encoder.safetensors``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfsup.models.from_file import encoder_from_file  # noqa: E402
from selfsup.training.export import export_timm  # noqa: E402

OPTIONS = {"checkpoint": None, "out": None, "encoder": "target_encoder", "num_heads": None}


def main(args: list[str]) -> None:
    options = dict(OPTIONS)
    for word in args:
        key, sep, value = word.partition("=")
        if not sep or key not in OPTIONS:
            raise SystemExit(f"unknown argument {word!r}; valid: {', '.join(f'{k}=...' for k in OPTIONS)}")
        options[key] = value
    if not options["checkpoint"] or not options["out"]:
        raise SystemExit("usage: python tools/export.py checkpoint=<path> out=<file.safetensors> [encoder=target_encoder|encoder]")
    num_heads = int(options["num_heads"]) if options["num_heads"] not in (None, "null") else None
    encoder = encoder_from_file(options["checkpoint"], options["encoder"], num_heads)
    weights, spec = export_timm(encoder, options["out"], options["encoder"], str(options["checkpoint"]))
    n = sum(p.numel() for p in encoder.parameters())
    print(f"wrote {weights} ({options['encoder']}, {n / 1e6:.2f} M parameters) and {spec} (timm.create_model arguments)")


if __name__ == "__main__":
    main(sys.argv[1:])
