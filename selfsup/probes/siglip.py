"""SigLIP multi-head attention pooling (MAP; timm ``AttentionPoolLatent``, vendored by the official code).

A latent query (trunc-normal, std D^-0.5, truncated at 2 std) -> ``q`` Linear; ``kv`` Linear(D, 2D);
multi-head attention; ``proj``; no residual around the attention; then ``x + MLP(norm(x))`` with
``norm = Identity`` and a 4x GELU MLP; the first latent is returned.
"""

from __future__ import annotations

from timm.layers import AttentionPoolLatent


class MAPPooling(AttentionPoolLatent):
    """Config keys (``configs/probe/siglip.yaml``): ``dim``, ``num_heads`` (8), ``mlp_ratio``, ``qkv_bias``,
    ``latent_len``."""

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True, latent_len: int = 1) -> None:
        if dim % num_heads:
            raise ValueError(f"probe.num_heads={num_heads} does not divide the feature width {dim}")
        super().__init__(in_features=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, latent_len=latent_len)
        self.out_dim = dim
