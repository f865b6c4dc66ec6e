"""Probe heads for frozen ViT tokens: one file per probe family, selected by ``probe=<name>``.

Every pooling module takes tokens ``[B, T, D]`` and returns ``[B, out_dim]``; ``head.ProbeHead``
wraps one as ``Sequential(pool, BatchNorm1d(out_dim, affine=False, eps=1e-6), Linear(out_dim, C))``,
the layout (and state-dict keys ``0.* / 1.* / 2.*``) of the efficient-probing code
(``shared/spec/probing.md`` sections 3-5). Parameter names inside each pooling follow the official
modules, so heads trained with the official code load strictly.
"""
