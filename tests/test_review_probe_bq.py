"""Probe BQ: a review of the merged probes BK to BP (quantize as placed, one memory guard, .bin
adapters and weights, hostile data formats, new-user hints) read together."""

from __future__ import annotations

import pytest
import torch

from showo2_cli.loading import load
from showo2_cli.options import RuntimeOptions
from showo2_cli.specs import get_spec
from test_placement_probe_bk import _quantized_after, _same, _tensors


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """A tiny model whose ``lm_head`` is the token embedding (as the 1.5B's, Qwen2.5-1.5B), and an
    adapter over ``q_proj`` and that ``lm_head``."""
    from conftest import write_adapter
    from showo2_cli.loading import init_model

    tmp = tmp_path_factory.mktemp("bq")
    folder = init_model(get_spec("tiny").replace(name="tied", tie_word_embeddings=True), tmp / "tied",
                        seed=5, vae_base_dim=4)
    return folder, write_adapter(folder, tmp / "a", ["q_proj", "lm_head"], 1)


def test_a_tied_lm_heads_adapter_is_merged_by_a_quantized_load_too(tied):
    """Placed layer by layer (``--quantize``), the tied ``lm_head`` was no group of its own and its
    adapter's update was dropped, silently: the embedding (and so every answer's logits) was that of
    the model without it, while the same load unquantized merged it. Now the same bits as the whole
    network loaded, merged and then quantized, at two weights of the same folder."""
    pytest.importorskip("torchao")
    folder, adapter = tied
    lora = [(adapter, 0.5), (adapter, 1.5)]
    reference = _tensors(_quantized_after(folder, "int8wo", torch.float32, lora).network)
    plain = load(folder).network.showo.model.embed_tokens.weight
    assert not torch.equal(reference["showo.model.embed_tokens.weight#"], plain)  # (the adapter changes it)
    model = load(folder, lora=lora, runtime=RuntimeOptions(quantize="int8wo"))
    net = model.network
    assert net.showo.lm_head.weight is net.showo.model.embed_tokens.weight  # (still tied)
    assert not _same(reference, _tensors(net))


def test_a_head_loaded_outside_a_job_counts_the_network_once_it_is_in_not_the_heads_still_out(tmp_path):
    """A head loaded on first use outside a job (``network.load_heads("flow_head")``) is checked
    against the model's limit as the network's weights once it is in; the other head, still left
    out (an untied ``lm_head``), was counted too, so a limit that a generation job passed refused
    the very head that job loads."""
    from showo2_cli.errors import ResourceError
    from showo2_cli.footprint import weights_gb
    from showo2_cli.loading import init_model

    folder = init_model(get_spec("tiny").replace(name="untied", tie_word_embeddings=False), tmp_path / "m",
                        seed=5, vae_base_dim=4)
    model = load(folder, heads=())
    with_head, whole = weights_gb(model, ("flow_head",))[0], weights_gb(model, ("flow_head", "lm_head"))[0]
    assert whole > with_head * 1.05  # (the lm_head's weights tell the two apart)
    model.network.head_loader.runtime = RuntimeOptions(max_memory_gb=with_head * 1.01)
    model.network.load_heads("flow_head")  # (refused before: "needs about" the whole network)
    assert model.network.loaded_heads() == ("flow_head",)
    with pytest.raises(ResourceError, match="loading the network's lm_head needs about"):
        model.network.load_heads("lm_head")  # (the whole network once it is in: over the limit)
