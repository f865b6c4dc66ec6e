"""DMT-JEPA against independent from-spec computations (``selfsup/reference/dmt_jepa.py``): the head in
both modes, neighbour selection on any grid, the target query orders, targets only at target
positions, the full loss, parameter groups, EMA and the health logs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.masks.multiblock import MultiBlockMaskSampler
from selfsup.masks.utils import apply_masks
from selfsup.models.ema import ema_update_
from selfsup.models.local_agg_head import LocalAggHead
from selfsup.models.neighbours import neighbour_table, select_neighbours
from selfsup.models.predictor import JEPAPredictor
from selfsup.models.vit import JEPAViT
from selfsup.objectives.dmt_jepa import DMTJEPA
from selfsup.reference.dmt_jepa import RefLocalAggHead, ref_clamped_targets, ref_dmt_loss, ref_local_index
from selfsup.reference.ijepa import RefPredictor, RefViT
from selfsup.training.optim import jepa_param_groups
from selfsup.utils.seeding import seeded_generator

DIM, HEADS = 48, 3


def _objective(img=(56, 72), patch=8, **kwargs) -> DMTJEPA:
    torch.manual_seed(0)
    enc = JEPAViT(img_size=img, patch_size=patch, embed_dim=DIM, depth=2, num_heads=HEADS)
    pred = JEPAPredictor(embed_dim=DIM, predictor_embed_dim=24, depth=2, num_heads=HEADS, img_size=img, patch_size=patch)
    obj = DMTJEPA(enc, pred, LocalAggHead(DIM, HEADS), **kwargs)
    with torch.no_grad():  # targets differ from the online modules, as after training
        for p in [*obj.target_encoder.parameters(), *obj.target_head.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    return obj


def _reference_head(obj: DMTJEPA, which: str = "target_head") -> RefLocalAggHead:
    ref = RefLocalAggHead(DIM, HEADS, obj.k, obj.window)
    ref.load_state_dict(getattr(obj, which).state_dict())
    return ref


def _features(batch: int, tokens: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.layer_norm(torch.randn(batch, tokens, DIM, generator=g), (DIM,))


# ------------------------------------------------------------------ the head (spec b.1)
def test_vitb_head_has_14_2m_parameters_and_the_official_names():
    head = LocalAggHead(embed_dim=768, num_heads=12)
    count = sum(p.numel() for p in head.parameters())
    assert count == 2 * (12 * 768**2 + 13 * 768) + 2 * 768 == 14_177_280  # 14.2M (spec b.1)
    expected = {
        f"cls_blocks.{i}.{name}.{kind}"
        for i in (0, 1)
        for name in ("norm1", "attn.q", "attn.k", "attn.v", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for kind in ("weight", "bias")
    } | {"norm.weight", "norm.bias"}
    assert set(head.state_dict()) == expected
    assert head.cls_blocks[0].mlp.fc1.out_features == 4 * 768 and head.cls_blocks[0].norm1.eps == 1e-6
    with torch.device("meta"):  # ViT-L and ViT-H widths (spec b.1: 25.2M, 39.4M)
        large, huge = LocalAggHead(1024, 16), LocalAggHead(1280, 16)
    assert [round(sum(p.numel() for p in h.parameters()) / 1e6, 1) for h in (large, huge)] == [25.2, 39.4]


def test_head_init_is_the_official_one():
    head = LocalAggHead(embed_dim=384, num_heads=6)
    for name, p in head.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            assert abs(p.std().item() - 0.02) < 0.002 and p.abs().max() <= 2.0, name


@pytest.mark.parametrize("attention", ["cross", "self"])
def test_context_head_equals_the_spec_computation(attention):
    obj = _objective(context_attention=attention)
    z = torch.randn(3, 23, DIM)
    ours = obj.context_features(z)
    ref = _reference_head(obj, "head")(z, loc=False, attn_type=f"{attention}-attn")
    assert ours.shape == z.shape  # sequence length preserved
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ neighbours (spec b.2)
def test_neighbours_of_patch_0_on_14x14_are_the_spec_example():
    table = neighbour_table((14, 14), 3, "wrap", 4)
    assert table.index[0].tolist() == [1, 13, 14, 15, 27, 182, 183, 195]
    assert table.valid is None


@pytest.mark.parametrize("grid,window", [((14, 14), 3), ((16, 16), 3), ((6, 6), 3), ((7, 9), 3), ((9, 7), 3), ((3, 5), 3), ((14, 14), 5), ((7, 9), 5)])
def test_wrapped_neighbours_equal_the_official_get_local_index_on_any_grid(grid, window):
    assert torch.equal(neighbour_table(grid, window, "wrap", 4).index, ref_local_index(*grid, window))


def test_clamped_neighbours_are_correct_at_the_borders():
    table = neighbour_table((7, 9), 3, "clamp", 4)
    idx, valid = table.index, table.valid

    def real(i):
        return idx[i][valid[i]].tolist()

    assert real(0) == [1, 9, 10]  # top-left corner: 3 neighbours, nothing from the other edges
    assert real(8) == [7, 16, 17]  # top-right corner
    assert real(62) == [52, 53, 61]  # bottom-right corner
    assert real(4) == [3, 5, 12, 13, 14]  # top edge
    assert real(27) == [18, 19, 28, 36, 37]  # left edge (row 3, col 0)
    assert real(31) == [21, 22, 23, 30, 32, 39, 40, 41]  # interior: the full window
    assert not valid[0, 3:].any() and (idx[0, 3:] == 0).all()  # padding: the patch itself, invalid
    # interior patches have the same candidates with and without wrap
    wrap = neighbour_table((7, 9), 3, "wrap", 4).index
    assert torch.equal(wrap[31], idx[31])


def test_spatial_agreement_marks_the_4_connected_neighbours():
    table = neighbour_table((14, 14), 3, "wrap", 4)
    assert table.index[15][table.spatial[15]].tolist() == [1, 14, 16, 29]  # up, left, right, down
    assert table.index[0][table.spatial[0]].tolist() == [1, 13, 14, 182]  # wrapped at the borders


def test_neighbour_options_are_checked():
    with pytest.raises(ValueError, match="objective.neighbourhood='torus'; valid: wrap, clamp"):
        neighbour_table((8, 8), 3, "torus", 4)
    with pytest.raises(ValueError, match="must be odd"):
        neighbour_table((8, 8), 4, "wrap", 4)
    with pytest.raises(ValueError, match="objective.k=9"):
        neighbour_table((8, 8), 3, "wrap", 9)
    with pytest.raises(ValueError, match="fewer than objective.k=4"):
        neighbour_table((2, 2), 3, "wrap", 4)
    with pytest.raises(ValueError, match="objective.target_query_order"):
        _objective(target_query_order="repeat")
    with pytest.raises(ValueError, match="objective.context_attention"):
        _objective(context_attention="linear")


def test_similarity_is_ranked_in_float32_under_bf16_autocast():
    """Two neighbours whose similarities differ by less than bf16 resolves: the official bf16 ranking
    ties (and picks by position); ours ranks them as float64 does."""
    torch.manual_seed(0)
    grid, n = (3, 3), 9
    base = F.normalize(torch.randn(DIM), dim=0)
    noise = F.normalize(torch.randn(n, DIM), dim=-1)
    feats = torch.stack([base + (0.002 * (i % 4) + 0.3) * noise[i] for i in range(n)]).unsqueeze(0)
    table = neighbour_table(grid, 3, "wrap", 4)
    patch = torch.tensor([4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = select_neighbours(feats, torch.tensor([0]), patch, table, 4).index[0]
        official = F.normalize(feats, dim=-1)
        official_sim = (official[:, table.index] @ official.unsqueeze(2).transpose(-2, -1)).squeeze(-1)
    exact = F.cosine_similarity(feats[0, table.index[4]].double(), feats[0, 4].double().unsqueeze(0), dim=-1)
    assert ours.tolist() == table.index[4][exact.topk(4).indices].tolist()
    assert official_sim.dtype == torch.bfloat16 and official_sim[0, 4].unique().numel() < 8  # bf16 ties


# ------------------------------------------------------------------ target path (spec b.2)
@pytest.mark.parametrize("order", ["per_image", "official_repeat"])
@pytest.mark.parametrize("attention", ["cross", "self"])
@pytest.mark.parametrize("grid", [(14, 14), (7, 9)])
def test_target_head_equals_the_spec_computation(order, attention, grid):
    obj = _objective(target_query_order=order, target_attention=attention)
    h = _features(3, grid[0] * grid[1])
    ours = obj.all_targets(h, grid)
    with torch.no_grad():
        ref = _reference_head(obj)(h, loc=True, attn_type=f"{attention}-attn", grid=grid, query_order=order)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-5)


def test_clamped_target_head_equals_a_per_patch_computation():
    obj = _objective(neighbourhood="clamp")
    h = _features(2, 30)
    with torch.no_grad():
        ref = ref_clamped_targets(_reference_head(obj), h, (5, 6))
    torch.testing.assert_close(obj.all_targets(h, (5, 6)), ref, atol=2e-5, rtol=1e-5)


def test_per_image_batched_equals_one_image_at_a_time():
    obj = _objective()
    h = _features(4, 63)
    batched = obj.all_targets(h, (7, 9))
    alone = torch.cat([obj.all_targets(h[i : i + 1], (7, 9)) for i in range(4)])
    torch.testing.assert_close(batched, alone, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("grid", [(14, 14), (7, 9)])
def test_official_repeat_reproduces_the_batch_mixing_on_two_images(grid):
    """Spec b.2: the row of patch n of image b gets the mean token of image (b*N + n) % B. With B=2 and N
    even, image 0's patches alternate between the mean tokens of images 0 and 1."""
    n = grid[0] * grid[1]
    h = _features(2, n)
    h[1] = F.layer_norm(h[1] + 3.0 * torch.randn(DIM), (DIM,))  # a very different second image
    mixed = _objective(target_query_order="official_repeat").all_targets(h, grid)
    fixed = _objective(target_query_order="per_image").all_targets(h, grid)
    for b in range(2):
        for p in range(n):
            own = (b * n + p) % 2 == b
            same = torch.allclose(mixed[b, p], fixed[b, p], atol=1e-6)
            assert same == own, (b, p)
    if n % 2 == 0:  # the spec's example: image 0 alternates, starting with its own mean token
        assert [(0 * n + p) % 2 for p in range(4)] == [0, 1, 0, 1]
    with torch.no_grad():  # and exactly the released computation
        torch.testing.assert_close(mixed, _reference_head(_objective())(h, loc=True, grid=grid), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"target_query_order": "official_repeat"}, {"neighbourhood": "clamp"}, {"k": 2, "window": 5}])
def test_targets_only_at_target_positions_equal_everywhere_then_gathered(kwargs):
    obj = _objective(**kwargs)
    sampler = MultiBlockMaskSampler(mode="corrected", input_size=(56, 72), patch_size=8, min_keep=2, allow_overlap=True)
    h = _features(3, 63)
    for seed in range(3):
        _, masks_pred = sampler(3, seeded_generator(seed))
        ours, logs = obj.targets_at(h, (7, 9), masks_pred)
        everywhere = apply_masks(obj.all_targets(h, (7, 9)), masks_pred)
        torch.testing.assert_close(ours, everywhere, atol=1e-6, rtol=1e-6)
        assert set(logs) == {"neighbour_spatial_agreement", "neighbour_similarity"}


# ------------------------------------------------------------------ the whole objective
@pytest.mark.parametrize("order", ["official_repeat", "per_image"])
def test_loss_equals_the_released_step_re_expressed(order):
    img, patch = 48, 8
    obj = _objective(img=img, patch=patch, target_query_order=order)
    sampler = MultiBlockMaskSampler(mode="official", input_size=img, patch_size=patch, min_keep=2, enc_mask_scale=(0.6, 0.8))
    masks_enc, masks_pred = sampler(3, seeded_generator(7))
    x = torch.randn(3, 3, img, img)
    ours = obj(x, masks_enc, masks_pred)

    enc, tgt = RefViT(img, patch, DIM, 2, HEADS), RefViT(img, patch, DIM, 2, HEADS)
    pred = RefPredictor(img // patch, DIM, 24, 2, HEADS)
    enc.load_state_dict(obj.encoder.state_dict())
    tgt.load_state_dict(obj.target_encoder.state_dict())
    pred.load_state_dict(obj.predictor.state_dict())
    ref = ref_dmt_loss(enc, tgt, pred, _reference_head(obj, "head"), _reference_head(obj), x, masks_enc, masks_pred, query_order=order)
    torch.testing.assert_close(ours.loss, ref, atol=1e-6, rtol=1e-5)
    # the output carries the target-encoder tokens (before the head) for probes and monitors
    torch.testing.assert_close(ours.target_tokens, obj.target_encoder.forward_tokens(x))


def test_any_resolution_end_to_end_with_gradients_in_the_right_places():
    obj = _objective(img=(56, 72))
    sampler = MultiBlockMaskSampler(mode="corrected", input_size=(56, 72), patch_size=8, min_keep=2)
    masks_enc, masks_pred = sampler(2, seeded_generator(0))
    out = obj(torch.randn(2, 3, 56, 72), masks_enc, masks_pred)
    assert out.prediction.shape == out.target.shape == (4 * 2, masks_pred[0].shape[1], DIM)
    out.loss.backward()
    assert all(p.grad is not None for p in obj.head.parameters())  # trained through the predictor
    assert all(p.grad is None for p in [*obj.target_head.parameters(), *obj.target_encoder.parameters()])
    assert 0.0 <= out.logs["neighbour_spatial_agreement"].item() <= 1.0
    assert -1.0 <= out.logs["neighbour_similarity"].item() <= 1.0


def test_health_logs_separate_positional_from_semantic_features():
    obj = _objective(img=(112, 112))
    grid, n = (14, 14), 196
    rows, cols = torch.arange(n) // 14, torch.arange(n) % 14
    angle = 2 * torch.pi / 14
    smooth = torch.stack([torch.cos(angle * rows), torch.sin(angle * rows), torch.cos(angle * cols), torch.sin(angle * cols)], 1)
    positional = smooth.repeat(1, DIM // 4).unsqueeze(0)  # cosine: (cos dr*a + cos dc*a) / 2, falls with distance
    everyone = [torch.arange(n).unsqueeze(0)]
    assert obj.targets_at(positional, grid, everyone)[1]["neighbour_spatial_agreement"].item() == 1.0
    random = obj.targets_at(_features(1, n), grid, everyone)[1]
    assert 0.35 < random["neighbour_spatial_agreement"].item() < 0.65  # chance: 4 of 8
    assert abs(random["neighbour_similarity"].item()) < 0.3


def test_param_groups_follow_the_official_init_opt_order():
    obj = _objective()
    groups = jepa_param_groups(obj.optimized_modules())
    names = ["encoder", "predictor", "encoder_no_decay", "predictor_no_decay", "head", "head_no_decay"]
    assert [g["name"] for g in groups] == names
    by_id = {id(p): g["name"] for g in groups for p in g["params"]}
    assert by_id[id(obj.head.cls_blocks[0].attn.q.weight)] == "head"
    assert by_id[id(obj.head.norm.weight)] == by_id[id(obj.head.cls_blocks[1].mlp.fc2.bias)] == "head_no_decay"
    assert not any(id(p) in by_id for p in obj.target_head.parameters())
    assert len(by_id) == sum(p.numel() > 0 for m in (obj.encoder, obj.predictor, obj.head) for p in m.parameters() if p.requires_grad)


def test_target_head_is_an_ema_of_the_head_with_the_encoder_momentum():
    obj = _objective()
    pairs = obj.ema_pairs()
    assert (obj.target_head, obj.head) in pairs and (obj.target_encoder, obj.encoder) in pairs
    before = {k: v.clone() for k, v in obj.target_head.state_dict().items()}
    for target, online in pairs:
        ema_update_(target, online, 0.99)
    for k, v in obj.target_head.state_dict().items():
        torch.testing.assert_close(v, 0.99 * before[k] + 0.01 * obj.head.state_dict()[k])
    assert not obj.train().target_head.training and obj.head.training
    assert all(not p.requires_grad for p in obj.target_head.parameters())
