"""The JEPA encoder: a timm ``VisionTransformer`` with I-JEPA conventions.

No class token, average pooling, final LayerNorm (eps 1e-6), exact GELU, fused attention
(``F.scaled_dot_product_attention``, timm's default), a frozen 2-D sin-cos position embedding in
the official order, and a masked forward (patch embed -> + pos -> keep indices -> blocks -> norm).

Parameter names are timm's, which are also the official I-JEPA names (``patch_embed.proj``,
``pos_embed``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``), so an
official checkpoint loads strictly once its ``module.`` prefix is stripped, and the state dict is a
valid ``timm.create_model('vit_*_gap_*')`` state dict.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import lecun_normal_
from timm.models._manipulate import checkpoint_seq
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from selfsup.masks.utils import apply_masks
from selfsup.models.init import depth_rescale_, official_init_
from selfsup.models.pos_embed import INTERPOLATIONS, resize_pos_embed, sincos_2d

# official: trunc-normal std 0.02 like every official layer; patch tokens then have an RMS of about
#   0.02 * sqrt(3 * patch^2) (0.3 at patch 8), under the frozen sin-cos table's 0.71, so a *fresh*
#   encoder's features are mostly position (pretraining starts there and learns its way out).
# lecun: truncated normal of std 1/sqrt(fan_in) (timm's lecun_normal_), the original ViT's init of
#   the patch projection (timm's "jax" scheme): patch tokens of RMS ~1, as large as the table.
# torch: PyTorch's Conv2d default, U(+-1/sqrt(fan_in)) (RMS ~0.6), which detectron2's ViT keeps.
PATCH_EMBED_INITS = ("official", "lecun", "torch")

# name -> (embed_dim, depth, num_heads, mlp_ratio), as the official vit_* factories define them.
VIT_SIZES: dict[str, tuple[int, int, int, float]] = {
    "tiny": (192, 12, 3, 4.0),
    "small": (384, 12, 6, 4.0),
    "base": (768, 12, 12, 4.0),
    "large": (1024, 24, 16, 4.0),
    "huge": (1280, 32, 16, 4.0),
    "giant": (1408, 40, 16, 48 / 11),
}


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


class JEPAViT(VisionTransformer):
    """timm ViT encoder for JEPA objectives.

    Config keys (``configs/backbone/*.yaml``): ``img_size``, ``patch_size``, ``embed_dim``, ``depth``,
    ``num_heads``, ``mlp_ratio``, ``qkv_bias``, ``drop_path_rate``, ``pos_embed_interp``
    (``sincos`` | ``bicubic``: how the embedding is obtained at another grid), ``depth_rescale_init``
    (False = the official effective init; True = the 1/sqrt(2l) rescale the official code undoes),
    ``patch_embed_init`` (how a fresh patch projection starts, see ``PATCH_EMBED_INITS``; a loaded
    checkpoint replaces it), ``grad_checkpointing``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        pos_embed_interp: str = "sincos",
        depth_rescale_init: bool = False,
        grad_checkpointing: bool = False,
        in_chans: int = 3,
        patch_embed_init: str = "official",
    ) -> None:
        img_hw = _pair(img_size)
        if patch_embed_init not in PATCH_EMBED_INITS:
            raise ValueError(f"backbone.patch_embed_init={patch_embed_init!r}; valid: {', '.join(PATCH_EMBED_INITS)}")
        if img_hw[0] % patch_size or img_hw[1] % patch_size:
            raise ValueError(
                f"backbone.img_size={img_size} is not a multiple of backbone.patch_size={patch_size}; "
                f"use e.g. {img_hw[0] // patch_size * patch_size}"
            )
        if pos_embed_interp not in INTERPOLATIONS:
            raise ValueError(f"backbone.pos_embed_interp={pos_embed_interp!r}; valid: {INTERPOLATIONS}")
        super().__init__(
            img_size=img_hw,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=0,
            global_pool="avg",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            class_token=False,
            fc_norm=False,
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            act_layer=nn.GELU,
            weight_init="skip",
        )
        self.pos_embed_interp = pos_embed_interp
        self.patch_size = patch_size
        self.base_grid: tuple[int, int] = (img_hw[0] // patch_size, img_hw[1] // patch_size)
        official_init_(self)
        if depth_rescale_init:
            depth_rescale_(self.blocks)
        if patch_embed_init == "lecun":
            lecun_normal_(self.patch_embed.proj.weight)
            nn.init.zeros_(self.patch_embed.proj.bias)
        elif patch_embed_init == "torch":
            self.patch_embed.proj.reset_parameters()
        self.pos_embed.requires_grad_(False)
        with torch.no_grad():
            self.pos_embed.copy_(sincos_2d(embed_dim, self.base_grid).unsqueeze(0))
        self.set_grad_checkpointing(grad_checkpointing)

    # ------------------------------------------------------------------ geometry
    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid of an image; raises if the image is not a multiple of the patch size."""
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"image {height}x{width} is not a multiple of the patch size {p}; "
                f"resize or crop to {height // p * p}x{width // p * p}"
            )
        return (height // p, width // p)

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """``[1, H*W, D]`` position embedding at ``grid`` (see ``pos_embed_interp``)."""
        return resize_pos_embed(self.pos_embed, self.base_grid, grid, self.pos_embed_interp)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:  # timm hook: x is [B, H, W, D]
        b, h, w, d = x.shape
        return self.pos_drop(x.reshape(b, h * w, d) + self.pos_embed_for((h, w)))

    # ------------------------------------------------------------------ forward
    def forward_tokens(
        self, images: torch.Tensor, masks: list[torch.Tensor] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """The official encoder forward: ``[B,3,H,W] -> [B,N,D]``, or ``[nenc*B, K, D]`` with masks."""
        self.grid_for(images.shape[-2], images.shape[-1])
        x = self._pos_embed(self.patch_embed(images))
        if masks is not None:
            x = apply_masks(x, masks if isinstance(masks, (list, tuple)) else [masks])
        x = self.norm_pre(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def timm_kwargs(self) -> dict:
        """Arguments for ``timm.create_model('vit_base_patch16_224', **kwargs)`` giving this architecture."""
        return {
            "img_size": list(self.base_grid[i] * self.patch_size for i in range(2)),
            "patch_size": self.patch_size,
            "embed_dim": self.embed_dim,
            "depth": len(self.blocks),
            "num_heads": self.blocks[0].attn.num_heads,
            "mlp_ratio": self.blocks[0].mlp.fc1.out_features / self.embed_dim,
            "qkv_bias": self.blocks[0].attn.qkv.bias is not None,
            "class_token": False,
            "global_pool": "avg",
            "fc_norm": False,
            "num_classes": 0,
            "dynamic_img_size": True,
        }


def vit(size: str, **kwargs) -> JEPAViT:
    """``vit('base', patch_size=16, img_size=224)``: a named official size."""
    if size not in VIT_SIZES:
        raise ValueError(f"unknown ViT size {size!r}; valid: {', '.join(VIT_SIZES)}")
    d, depth, heads, mlp = VIT_SIZES[size]
    return JEPAViT(embed_dim=d, depth=depth, num_heads=heads, mlp_ratio=mlp, **kwargs)
