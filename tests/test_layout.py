"""Shape and layout conventions that are easy to get wrong (spec §16), with property tests."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from showo2_cli.errors import UsageError
from showo2_cli.modeling.attention import extend_mask_for_decoding, omni_attention_mask
from showo2_cli.modeling.flow_head import TimestepEmbedder, llama3_inv_freq, pack_velocity, unpack_velocity
from showo2_cli.modeling.showo2 import block_index_map
from showo2_cli.sampling import sample, time_grid
from showo2_cli.sequences import SpecialTokens, generation_layout, understanding_layout

REAL = SpecialTokens(bos=151644, eos=151645, boi=151652, eoi=151653, img_pad=151655, vid_pad=151656,
                     pad=151665, img=151666, bov=151667, eov=151668)


def test_raster_chunk_row_13_wraps_into_the_next_latent_row():
    latent = torch.arange(54 * 54, dtype=torch.float32).reshape(1, 1, 54, 54).expand(16, 1, 54, 54)
    rows = pack_velocity(latent)
    assert rows.shape == (729, 64)
    # row 13 covers raster positions 52..55: (0,52), (0,53), (1,0), (1,1)
    assert rows[13].reshape(4, 16)[:, 0].tolist() == [52, 53, 54, 55]


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 3), hp=st.integers(1, 6), wp=st.integers(1, 6), c=st.sampled_from([1, 4, 16]))
def test_pack_unpack_round_trip(t, hp, wp, c):
    latent = torch.randn(c, t, 2 * hp, 2 * wp)
    rows = pack_velocity(latent)
    assert rows.shape == (t * hp * wp, 4 * c)
    assert torch.equal(unpack_velocity(rows, t, 2 * hp, 2 * wp, c), latent)


def test_unpack_is_not_a_spatial_patch_layout():
    rows = torch.arange(4 * 64, dtype=torch.float32).reshape(4, 64)  # 2x2 patch grid, 4x4 latent
    v = unpack_velocity(rows, 1, 4, 4, 16)
    # first row of the output holds raster positions 0..3 = the whole first latent row
    assert v[0, 0, 0].tolist() == [0, 16, 32, 48]


def test_omni_mask_reference_example():
    mp = torch.tensor([[[3, 5], [0, 0]], [[0, 5], [10, 5]]])
    mask = omni_attention_mask(mp, 20)[:, 0]
    causal = torch.tril(torch.ones(20, 20, dtype=torch.bool))
    want0 = causal.clone()
    want0[3:8, 3:8] = True
    want1 = causal.clone()
    want1[0:5, 0:5] = True
    want1[10:15, 10:15] = True
    assert torch.equal(mask[0], want0) and torch.equal(mask[1], want1)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_omni_mask_equals_naive_rule(data):
    length = data.draw(st.integers(1, 40))
    blocks, pos = [], 0
    while pos < length and len(blocks) < 3:
        start = data.draw(st.integers(pos, length))
        n = data.draw(st.integers(0, length - start))
        blocks.append([start, n])
        pos = start + n + 1
    blocks = blocks or [[0, 0]]
    mask = omni_attention_mask(torch.tensor([blocks]), length)[0, 0]
    want = torch.tril(torch.ones(length, length, dtype=torch.bool))
    for o, n in blocks:
        want[o:o + n, o:o + n] = True
    assert torch.equal(mask, want)
    idx = block_index_map(torch.tensor([blocks]), length)[0]
    for i in range(length):
        inside = [m for m, (o, n) in enumerate(blocks) if o <= i < o + n]
        assert idx[i].item() == (inside[0] if inside else -1)


def test_extend_mask_appends_causal_rows():
    base = omni_attention_mask(torch.tensor([[[1, 3]]]), 5)
    ext = extend_mask_for_decoding(base, 2)
    assert ext.shape == (1, 1, 7, 7)
    assert torch.equal(ext[:, :, :5, :5], base)
    assert ext[0, 0, 5, :6].all() and not ext[0, 0, 5, 6]
    assert ext[0, 0, 6].all() and not ext[0, 0, :5, 5:].any()


def test_time_grid_reference_values():
    grid = time_grid(50, 3.0)
    assert grid[0] == 0 and grid[-1] == 1 and len(grid) == 50
    assert abs(grid[1].item() - (1 / 49) / (3 - 2 / 49)) < 1e-6
    assert abs(grid[2].item() - (2 / 49) / (3 - 4 / 49)) < 1e-6


def test_a_time_shifting_factor_of_0_is_no_shift_as_in_the_official_ode():
    """The official ``ode`` shifts only ``if time_shifting_factor:``; the formula gave NaN at t=0
    and 1 elsewhere (a fixture set made with ``time_shifting_factor: 0`` failed, probe N)."""
    assert torch.equal(time_grid(5, 0.0), torch.linspace(0, 1, 5))
    assert torch.allclose(time_grid(7, 0), time_grid(7, 1.0), atol=1e-7, rtol=0)  # shift 1 is s, rounded
    out = sample(lambda x, t: torch.full_like(x, t), torch.zeros(2), time_grid(5, 0.0))
    assert torch.allclose(out, torch.full((2,), 0.375))  # Euler on v = t over 0, .25, .5, .75


def test_euler_makes_k_minus_1_calls_and_never_evaluates_t1():
    calls = []

    def velocity(x, t):
        calls.append(t)
        return torch.ones_like(x)

    out = sample(velocity, torch.zeros(3), time_grid(6, 3.0))
    assert len(calls) == 5 and max(calls) < 1
    assert torch.allclose(out, torch.ones(3))  # integrates v=1 from 0 to 1 exactly


def test_timestep_embedding_at_zero_is_cos_first():
    emb = TimestepEmbedder.frequencies(torch.zeros(1))
    assert torch.equal(emb[0, :128], torch.ones(128)) and torch.equal(emb[0, 128:], torch.zeros(128))


def test_llama3_rope_keeps_high_frequencies_and_divides_low_ones():
    scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    plain = llama3_inv_freq(64, 5e5, None)
    scaled = llama3_inv_freq(64, 5e5, scaling)
    assert scaled[0] == plain[0]
    assert torch.allclose(scaled[-1], plain[-1] / 32)


def test_t2i_layout_at_432px_is_1024_tokens_with_blocks_at_n_plus_2_and_2():
    prompt = list(range(1000, 1010))
    layout = generation_layout([prompt], 730, REAL, 1024)
    assert layout.input_ids.shape == (2, 1024)
    assert layout.blocks.tolist() == [[[12, 730]], [[2, 730]]]
    row = layout.input_ids[0].tolist()
    assert row[0] == REAL.bos and row[11] == REAL.boi and row[12:742] == [REAL.img_pad] * 730
    assert row[742:744] == [REAL.eoi, REAL.eos] and set(row[744:]) == {REAL.pad}
    long = generation_layout([list(range(500))], 730, REAL, 1024)
    assert long.blocks[0, 0, 0].item() == 290 + 2  # prompt truncated to max_text_len
    assert long.trimmed().seq_len == 292 + 730


def test_negative_prompts_fill_the_unconditional_rows_at_the_same_budget():
    prompts, negatives = [list(range(1000, 1010)), [1100, 1101]], [[7, 8, 9], list(range(2000, 2500))]
    plain = generation_layout(prompts, 730, REAL, 1024)
    assert torch.equal(generation_layout(prompts, 730, REAL, 1024, negatives=[[], []]).input_ids, plain.input_ids)
    layout = generation_layout(prompts, 730, REAL, 1024, negatives=negatives)
    assert torch.equal(layout.input_ids[:2], plain.input_ids[:2])  # the conditional rows are untouched
    assert layout.blocks.tolist() == [[[12, 730]], [[4, 730]], [[5, 730]], [[292, 730]]]
    assert layout.input_ids[2, :5].tolist() == [REAL.bos, 7, 8, 9, REAL.boi]
    assert layout.input_ids[3, 1:291].tolist() == list(range(2000, 2290))  # cut at max_text_len, like a prompt
    assert torch.equal(layout.slots, layout.blocks)
    loose = generation_layout([[1, 2]], 5, REAL, None, negatives=[[3] * 7])
    assert loose.seq_len == 7 + 5 + 4  # the row is as long as the longer text needs
    with pytest.raises(UsageError, match="one per prompt"):
        generation_layout(prompts, 730, REAL, 1024, negatives=[[1]])


def test_mmu_official_block_is_shifted_by_one():
    system, user, assistant = [1] * 9, [2] * 4, [3] * 4
    official = understanding_layout([7, 8], 729, REAL, system, user, assistant)
    assert official.blocks.tolist() == [[[16, 730]]]  # spec §16.8: (16, 730)
    assert official.slots.tolist() == [[[15, 730]]]
    training = understanding_layout([7, 8], 729, REAL, system, user, assistant, mask_mode="training",
                                    template="training", newline=[9])
    assert training.blocks.tolist() == [[[15, 730]]]
    ids = training.input_ids[0].tolist()
    assert ids[15 + 730:15 + 730 + 5] == [REAL.eoi, 9, 7, 8, REAL.eos]


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 3), hp=st.integers(1, 6), wp=st.integers(1, 6), c=st.sampled_from([1, 4, 16]))
def test_patch_layout_round_trip_and_each_row_is_its_own_patch(t, hp, wp, c):
    """ModelSpec.velocity_layout = "patch": row r of a frame is the 2x2 patch at grid position r
    (row-major, the patch token r embeds), ordered (patch row, patch column, channel)."""
    latent = torch.randn(c, t, 2 * hp, 2 * wp)
    rows = pack_velocity(latent, 2, "patch")
    assert rows.shape == (t * hp * wp, 4 * c)
    assert torch.equal(unpack_velocity(rows, t, 2 * hp, 2 * wp, c, "patch", 2), latent)
    f, i, j = t - 1, hp - 1, wp // 2
    r = f * hp * wp + i * wp + j
    assert torch.equal(rows[r].reshape(2, 2, c).permute(2, 0, 1), latent[:, f, 2 * i:2 * i + 2, 2 * j:2 * j + 2])


def test_patch_layout_differs_from_the_official_one_and_is_off_officially():
    from showo2_cli.specs import REGISTRY, get_spec

    latent = torch.randn(16, 1, 8, 8)
    assert not torch.equal(pack_velocity(latent, 2, "patch"), pack_velocity(latent))
    assert all(s.velocity_layout == "raster" for s in REGISTRY.values())
    import pytest

    from showo2_cli.errors import UsageError
    with pytest.raises(UsageError, match="velocity_layout"):
        get_spec("tiny").replace(velocity_layout="zigzag").validate()


@pytest.mark.parametrize("method", ["euler", "heun", "unipc"])
def test_a_step_callback_can_replace_the_state_and_stop_the_sampler(method):
    from showo2_cli.sampling import StopSampling

    grid = time_grid(6)
    calls = []

    def callback(step, total, t, x):
        calls.append((step, total, t))
        if step == 2:
            return torch.full_like(x, 10.0)
        if step == 3:
            raise StopSampling
        return None

    trajectory: list = []
    out = sample(lambda x, t: torch.ones_like(x), torch.zeros(2, 3), grid, method, callback=callback,
                 trajectory=trajectory)
    assert [(s, n) for s, n, _ in calls] == [(1, 5), (2, 5), (3, 5)]
    assert 0.0 <= calls[0][2] < 0.01 < calls[1][2]  # the time each step started from
    assert len(trajectory) == 4 and bool((trajectory[2] == 10.0).all())  # the replaced state is the state
    assert torch.equal(out, trajectory[-1])  # the state it stopped at
    if method != "unipc":  # a constant velocity of 1: one step from the replaced state (UniPC's
        # corrector also uses the sample it kept from before, as in a diffusers pipeline)
        assert torch.allclose(out, torch.full((2, 3), 10.0 + float(grid[3] - grid[2])))
    with pytest.raises(ValueError, match="shape"):
        sample(lambda x, t: x, torch.zeros(2, 3), grid, method, callback=lambda *a: torch.zeros(3))
