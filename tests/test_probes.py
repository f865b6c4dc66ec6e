"""Probe heads: parameter counts of spec section 5, EP's formula (3.2) and its reordering (3.5, forward
and gradients of the fused ``PoolThenProject`` Function), the V-JEPA output-projection switch, official state-dict layout, every probe's forward/backward."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from selfsup.config import instantiate
from selfsup.probes.ep import EfficientProbing
from selfsup.probes.ep_function import pool_then_project
from selfsup.probes.head import ProbeHead
from selfsup.probes.vjepa import AttentivePooler
from selfsup.probing.features import FeatureSpec
from selfsup.probing.heads import build_pool
from tests.test_config import compose, options

VIT_B = FeatureSpec(dim=768, grid=(14, 14), num_prefix_tokens=0, num_blocks=1, has_class_token=False)

# shared/spec/probing.md section 5 (ViT-B, D=768, 1000 classes, 196 patch tokens) and 3.5 (EP variants)
PARAMS = {
    "linear": 769_000,
    "ep": 1_383_400,
    "aim": 1_949_416,
    "vjepa": 7_857_640,
    "cait": 7_860_712,
    "simpool": 1_950_184,
    "abmilp": 3_720_425,
    "coca": 1_805_032,
    "cae": 3_135_976,
    "dolg": 1_361_897,
    "cbam": 842_828,
    "siglip": 7_854_568,
    "clip": 3_284_200,
    "dinov2_block": 7_854_568,
}
VARIANTS = {
    ("ep", "num_queries=8"): 1_364_968,
    ("ep", "num_queries=12"): 1_368_040,
    ("ep", "num_queries=16"): 1_371_112,
    ("ep", "num_queries=48"): 1_395_688,
    ("ep", "num_queries=64"): 1_407_976,
    ("ep", "num_queries=128"): 1_457_128,
    ("ep", "num_queries=48,d_out=8"): 207_592,
    ("abmilp", "self_attention=none"): 1_360_361,
    ("vjepa", "output_projection=false"): 7_857_640,
}


@functools.lru_cache(maxsize=None)
def _composed_probe(name: str, overrides: tuple[str, ...], tmp_dir: str):
    return compose([f"probe={name}", *(f"probe.{o}" for o in overrides)], Path(tmp_dir)).probe


def probe_factory(name: str, tmp_path, overrides: tuple[str, ...] = ()) -> functools.partial:
    """The partial ``configs/probe/<name>.yaml`` instantiates to (composed once per name and overrides)."""
    return instantiate(_composed_probe(name, tuple(overrides), "/nonexistent"))


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_every_probe_option_is_tested():
    assert sorted(options("probe")) == sorted(PARAMS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count_for_vit_b_matches_the_spec_table(name, tmp_path):
    with torch.device("meta"):
        head = ProbeHead(build_pool(probe_factory(name, tmp_path), VIT_B), 1000)
    assert trainable(head) == PARAMS[name]


@pytest.mark.parametrize("name,overrides", sorted(VARIANTS))
def test_parameter_count_of_variants(name, overrides, tmp_path):
    with torch.device("meta"):
        head = ProbeHead(build_pool(probe_factory(name, tmp_path, tuple(overrides.split(","))), VIT_B), 1000)
    assert trainable(head) == VARIANTS[(name, overrides)]


def ep_formula(x: torch.Tensor, queries: torch.Tensor, w_v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Spec 3.2 written out: a_j = softmax_n(q_j . x_n / sqrt(D)); y_j = sum_n a_jn (W_v x_n + b)[j-th slice]."""
    b, n, d = x.shape
    m, width = queries.shape[0], w_v.shape[0]
    out = torch.zeros(b, width, dtype=x.dtype)
    for i in range(b):
        values = x[i] @ w_v.T if bias is None else x[i] @ w_v.T + bias  # [N, D']
        for j in range(m):
            a = torch.softmax(x[i] @ queries[j] / d**0.5, dim=0)
            sl = slice(j * width // m, (j + 1) * width // m)
            out[i, sl] = (a[:, None] * values[:, sl]).sum(0)
    return out


@pytest.mark.parametrize("d_out", [1, 2, 8])
@pytest.mark.parametrize("num_queries", [1, 8, 32])
@pytest.mark.parametrize("pool_then_project", [False, True])
def test_ep_equals_the_spec_formula_in_float64(d_out, num_queries, pool_then_project):
    torch.manual_seed(0)
    ep = EfficientProbing(256, num_queries=num_queries, d_out=d_out, pool_then_project=pool_then_project).double()
    with torch.no_grad():
        ep.cls_token.normal_(0, 1.0)  # sharp attention, not the near-uniform init
    x = torch.randn(3, 20, 256, dtype=torch.float64)
    expected = ep_formula(x, ep.cls_token[0], ep.v.weight)
    torch.testing.assert_close(ep(x), expected, rtol=0, atol=1e-12)


def test_ep_pooling_before_the_projection_is_the_default_and_equal_with_bias_and_gradients(tmp_path):
    factory = probe_factory("ep", tmp_path)
    assert factory.keywords["pool_then_project"] is True
    torch.manual_seed(1)
    official = EfficientProbing(64, num_queries=8, qkv_bias=True, pool_then_project=False).double()
    reordered = EfficientProbing(64, num_queries=8, qkv_bias=True, pool_then_project=True).double()
    reordered.load_state_dict(official.state_dict())
    x = torch.randn(4, 10, 64, dtype=torch.float64)
    a, b = official(x), reordered(x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(official.named_parameters(), reordered.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("d_out", [1, 2, 8])
@pytest.mark.parametrize("num_queries", [1, 8, 32])
@pytest.mark.parametrize("bias", [False, True])
def test_ep_fused_pool_then_project_forward_and_gradients_equal_the_spec_formula_in_float64(d_out, num_queries, bias):
    """The default path (``PoolThenProject``) against autograd through the spec formula: the output and the
    gradients of the queries, W_v, its bias and the tokens."""
    torch.manual_seed(0)
    ep = EfficientProbing(256, num_queries=num_queries, d_out=d_out, qkv_bias=bias).double()
    with torch.no_grad():
        ep.cls_token.normal_(0, 1.0)  # sharp attention
    x = torch.randn(3, 20, 256, dtype=torch.float64)
    g = torch.randn(3, 256 // d_out, dtype=torch.float64)  # a generic upstream gradient
    params = [ep.cls_token, ep.v.weight] + ([ep.v.bias] if bias else [])
    outputs = []
    for fn in (ep, lambda t: ep_formula(t, ep.cls_token[0], ep.v.weight, ep.v.bias)):
        xg = x.clone().requires_grad_()
        y = fn(xg)
        outputs.append((y.detach(), *torch.autograd.grad(y, [xg, *params], g)))
    for name, ours, ref in zip(["output", "tokens", "queries", "W_v", "bias"], *outputs):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12, msg=name)


def test_ep_fused_function_passes_gradcheck_and_takes_any_upstream_gradient():
    torch.manual_seed(0)
    inputs = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in [(2, 5, 12), (1, 3, 12), (6, 12), (6,)]]
    assert torch.autograd.gradcheck(lambda x, q, w, b: pool_then_project(x, q, w, b, 0.4), inputs)
    assert torch.autograd.gradcheck(lambda q, w: pool_then_project(inputs[0].detach(), q, w, None, 0.4), inputs[1:3])
    x, w = inputs[0].detach(), inputs[2].detach()
    ours, ref = (inputs[1][0].detach().clone().requires_grad_() for _ in range(2))  # queries given as [M, D]
    pool_then_project(x, ours, w, None, 12**-0.5).sum().backward()  # an expanded (stride-0) upstream gradient
    ep_formula(x, ref, w).sum().backward()
    torch.testing.assert_close(ours.grad, ref.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch", [8, 64])  # contiguous: the dq sum in 8 groups of 1 image, 32 groups of 2
def test_ep_fused_function_on_strided_tokens_equals_contiguous_tokens(batch):
    """Patch tokens sliced after a class token (not contiguous) take the per-image path of the dq sum."""
    torch.manual_seed(0)
    ep = EfficientProbing(48, num_queries=4).double()
    tokens = torch.randn(batch, 1 + 9, 48, dtype=torch.float64)
    results = []
    for x in (tokens[:, 1:], tokens[:, 1:].contiguous()):
        y = ep(x)
        results.append((y.detach(), *torch.autograd.grad(y.sin().sum(), list(ep.parameters()))))
    for ours, ref in zip(*results):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(results[1][0], ep_formula(tokens[:, 1:], ep.cls_token[0].detach(), ep.v.weight.detach()), rtol=0, atol=1e-12)


def test_ep_fused_function_under_cpu_autocast_follows_the_official_order():
    torch.manual_seed(0)
    official = EfficientProbing(64, num_queries=8, qkv_bias=True, pool_then_project=False)
    fused = EfficientProbing(64, num_queries=8, qkv_bias=True)
    fused.load_state_dict(official.state_dict())
    x = torch.randn(4, 10, 64)
    grads = []
    for module in (official, fused):
        xg = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(xg)
        assert y.dtype == torch.bfloat16
        grads.append(torch.autograd.grad(y.float().square().sum(), [xg, *module.parameters()]))
    for ours, ref in zip(grads[1], grads[0]):
        assert ours.dtype == ref.dtype == torch.float32
        torch.testing.assert_close(ours, ref, rtol=0.05, atol=0.02 * ref.abs().max().item())


def test_vjepa_output_projection_switch():
    torch.manual_seed(0)
    with_proj = AttentivePooler(64, num_heads=4, output_projection=True)
    without = AttentivePooler(64, num_heads=4, output_projection=False)
    without.load_state_dict(with_proj.state_dict())  # same parameters either way
    x = torch.randn(2, 9, 64)
    assert not torch.allclose(with_proj(x), without(x))
    with torch.no_grad():
        without.cross_attention_block.xattn.proj.weight.normal_()
    before = without(x)
    with torch.no_grad():
        without.cross_attention_block.xattn.proj.weight.add_(1.0)
    torch.testing.assert_close(without(x), before)  # upstream jepa HEAD: proj is built but not applied


def test_vjepa_keys_and_values_from_kv_halves_equal_the_upstream_kv_unbind_in_float64():
    """``CrossAttention`` takes k and v from the two halves of ``kv`` (no stacked gradient copy); upstream
    jepa runs ``kv(x)`` and unbinds: the same output and gradients."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    pool = AttentivePooler(64, num_heads=4).double()
    xattn = pool.cross_attention_block.xattn

    def upstream(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, n, d = q.shape
        q = xattn.q(q).view(b, n, 4, d // 4).transpose(1, 2)
        k, v = xattn.kv(x).view(b, x.shape[1], 2, 4, d // 4).permute(2, 0, 3, 1, 4)
        return xattn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))

    q, x = torch.randn(3, 1, 64, dtype=torch.float64), torch.randn(3, 9, 64, dtype=torch.float64)
    params = list(xattn.parameters())
    ours, ref = ((y.detach(), *torch.autograd.grad(y.square().sum(), params)) for y in (xattn(q, x), upstream(q, x)))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_head_state_dict_is_the_official_layout(tmp_path):
    head = ProbeHead(build_pool(probe_factory("ep", tmp_path), VIT_B), 1000)
    assert sorted(head.state_dict()) == sorted([
        "0.v.weight", "0.cls_token", "1.running_mean", "1.running_var", "1.num_batches_tracked", "2.weight", "2.bias",
    ])
    assert head[1].eps == 1e-6 and not head[1].affine and head[0].cls_token.shape == (1, 32, 768)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_every_probe_trains_on_small_tokens(name, tmp_path):
    spec = FeatureSpec(dim=64, grid=(4, 4), num_prefix_tokens=0, num_blocks=1, has_class_token=False)
    overrides = ("num_queries=8",) if name == "ep" else ("num_queries=10",) if name == "coca" else ()
    torch.manual_seed(0)
    head = ProbeHead(build_pool(probe_factory(name, tmp_path, overrides), spec), 5)
    x, y = torch.randn(6, 16, 64), torch.randint(0, 5, (6,))
    loss = torch.nn.functional.cross_entropy(head(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head[0].parameters()) or name == "linear"
    head.eval()
    assert head(x[:1]).shape == (1, 5)  # batch of one: no squeeze surprises


def test_class_token_probes_use_it(tmp_path):
    spec = FeatureSpec(dim=32, grid=(2, 2), num_prefix_tokens=1, num_blocks=1, has_class_token=True)
    pool = build_pool(probe_factory("linear", tmp_path, ("token=cls",)), spec)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(pool(x), x[:, 0])
    mean = build_pool(probe_factory("linear", tmp_path), spec)
    torch.testing.assert_close(mean(x), x[:, 1:].mean(1))
    with pytest.raises(ValueError, match="needs the class token"):
        build_pool(probe_factory("linear", tmp_path, ("token=cls",)), VIT_B)


def test_ep_rejects_an_indivisible_width():
    with pytest.raises(ValueError, match="divisible by d_out\\*num_queries"):
        EfficientProbing(100, num_queries=32)


def test_ep_pool_then_project_multiply_adds_for_vit_b():
    """The benchmark's MAC counts: EP_32 for ViT-B is 121.3 M MACs/image in the official order (spec 8) and
    11.0 M with W_v after pooling."""
    from selfsup.bench.probe_heads import build_head, forward_macs

    x = torch.randn(2, 196, 768)
    official, ours = (forward_macs(build_head(name, 768, 196, 1000), x) for name in ("ep_official", "ep"))
    assert official == 121_340_928 and ours == 10_991_616
