"""Parity probe HA (round fifteen): the official demos' sequence budget for a checkpoint of no
official LLM width.

The official t2i demos take their row length from their yaml: 1024 at 432 px, 1280 at 512 and
4352 at 1024, so 290, 251 and 251 prompt tokens. An official-format checkpoint whose width is
neither released model's (every parity fixture set's) configured at 512 or 1024 px
(``image_latent_height`` 32 or 64, as the HQ demo configs) was given rows of the visual tokens + 4
+ 16: a prompt past 16 tokens was cut where the official demo keeps 251. On a set made with the
official code (``benchmarks/parity_specs/probe-ha-*``'s geometry, the dynamic case at 64x64 in the
official rows of 4352), ``showo2 t2i`` of its 72-token prompt at 1024 px with the case's noise cut
it to 16 tokens and ended 9.2 from the official final latents (magnitude 11.4); now 1.5e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from showo2_cli.loading import ModelFiles, read_state_dict
from showo2_cli.model_config import spec_from_files

VARIANT_B = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-b" / "model"


@pytest.fixture(scope="module")
def state():
    return read_state_dict(sorted(VARIANT_B.glob("*.safetensors")))


def spec_at(state, grid: int, **extra):
    config = dict(json.loads((VARIANT_B / "config.json").read_text()), image_latent_height=grid,
                  image_latent_width=grid, **extra)
    files = ModelFiles("b", VARIANT_B, "official", config, [], llm_config=VARIANT_B / "llm" / "config.json",
                       siglip_config=VARIANT_B / "siglip" / "config.json")
    return spec_from_files(files, state)


@pytest.mark.parametrize("grid,max_seq_len,budget", [(32, 1280, 251), (64, 4352, 251), (27, 1024, 290),
                                                     (30, 1156, 251), (3, 1024, 1024 - 10 - 4)])
def test_a_checkpoint_of_no_official_width_gets_the_official_demos_budget(state, grid, max_seq_len, budget):
    spec = spec_at(state, grid)
    assert spec.hidden_size not in (1536, 3584)  # no registry width: the fallback's case
    assert spec.max_seq_len == max_seq_len
    assert spec.text_budget == budget


def test_a_configured_max_seq_len_still_rules(state):
    # showo2's own field: taken as given, raised only to hold the visual tokens and 16 prompt tokens
    assert spec_at(state, 32, max_seq_len=2000).max_seq_len == 2000
    assert spec_at(state, 32, max_seq_len=100).max_seq_len == 1025 + 4 + 16
