"""Probe BH: the evening's features used together (runtime options of probe BA, LoRA adapters of
BB, quantization of BD, checkpoint depths of BF). A head loaded on first use is checked against the
model's own memory limit (``RuntimeOptions(max_memory_gb=)``, ``--max-memory``), as its jobs are."""

from __future__ import annotations

import pytest
import torch

from showo2_cli import api
from showo2_cli.errors import ResourceError, UsageError
from showo2_cli.loading import load
from showo2_cli.modeling.parts import NotLoaded
from showo2_cli.options import RuntimeOptions


def _flow_head_left_out(model) -> bool:
    return isinstance(model.network.get_submodule("diffusion_head_a"), NotLoaded)


def test_a_head_loaded_on_first_use_takes_the_models_memory_limit(monkeypatch):
    """The lazy head's memory check passed no limit: ``--max-memory 0`` (no limit) was overridden by
    ``$SHOWO2_MAX_MEMORY_GB``, and a ``--max-memory`` below the head's size loaded it all the same."""
    opts = api.GenerateOptions(steps=2, seed=1, size=64)
    monkeypatch.setenv("SHOWO2_MAX_MEMORY_GB", "0.0001")  # 100 KB: below the demo flow head's 7.3 MB
    unlimited = load("demo", heads=(), runtime=RuntimeOptions(max_memory_gb=0))
    assert _flow_head_left_out(unlimited)
    images = api.text_to_image(unlimited, ["a red circle"], opts)  # (old: "... allowed by SHOWO2_MAX_MEMORY_GB")
    assert len(images) == 1 and not _flow_head_left_out(unlimited)
    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB")
    # 6.9 MB: the 64-pixel job's working memory (6.65 MB) fits, not with the 19.7 MB of weights it
    # runs (the network without a separate lm_head and the VAE's decoder; probe BM: an eager load's
    # verdict too, where BH refused only the flow head's 7.27 MB on its load)
    limited = load("demo", heads=(), runtime=RuntimeOptions(max_memory_gb=0.0069))
    with pytest.raises(ResourceError, match=r"^generating 1 image\(s\) at 64x64 needs about 26\.4 MB \(19\.7 MB of "
                                            r"weights, 6\.7 MB to run\), more than the 6\.9 MB allowed by --max-memory"):
        api.text_to_image(limited, ["a red circle"], opts)  # (old: loaded and generated)
    assert _flow_head_left_out(limited)  # refused before anything was read: the model is as it was
    assert all(torch.isfinite(p).all() for p in limited.network.parameters())
    assert limited.network.loaded_heads() == ("lm_head",)  # (tied: the embedding)


def test_a_pipelines_head_refused_by_its_limit_names_the_python_argument_and_writes_nothing(tmp_path):
    """What loads a pipeline's heads outside a call (save_pretrained, sequential offload) loaded them
    past ``RuntimeOptions(max_memory_gb=)``; refused now, the message names that, not --max-memory."""
    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained("demo", runtime=RuntimeOptions(max_memory_gb=0.0069))
    allowed = r"more than the 6\.9 MB allowed by RuntimeOptions\(max_memory_gb=\.\.\.\)"
    # (probe BM: the network's weights once the head is in, 11.5 MB, as a job counts them)
    with pytest.raises(ResourceError, match=r"^loading the network's flow_head needs about 11\.5 MB \(11\.5 MB of "
                                            r"weights\), " + allowed) as e:
        pipe.save_pretrained(tmp_path / "saved")
    assert "--" not in str(e.value) and not (tmp_path / "saved").exists()
    with pytest.raises(ResourceError, match=allowed) as e:
        pipe.enable_sequential_cpu_offload()
    assert "--" not in str(e.value) and pipe.offload == "none"
    assert _flow_head_left_out(pipe.model)


@pytest.mark.parametrize("quantize", ["int8wo", "nf4"])
def test_float64_with_quantization_is_one_line_before_loading(quantize, monkeypatch):
    """float64 (BA: taken from Python) with int8wo or nf4 (BD) read the weights, then failed inside
    torchao (AssertionError "Unsupported input dtype") or bitsandbytes (ValueError)."""
    from showo2_cli import Showo2Pipeline, loading

    pytest.importorskip("torchao" if quantize == "int8wo" else "bitsandbytes")
    monkeypatch.setattr(loading, "read_state_dict", lambda *a, **k: pytest.fail("the weights were read"))
    message = rf"^RuntimeOptions\(quantize='{quantize}'\) quantizes fp32, bf16 or fp16 weights, not float64: pass another "
    with pytest.raises(UsageError, match=message + "dtype"):
        load("demo", dtype="float64", runtime=RuntimeOptions(quantize=quantize))
    with pytest.raises(UsageError, match=message + "dtype"):
        api.load("demo", device="auto", runtime=RuntimeOptions(dtype=torch.float64, quantize=quantize))
    with pytest.raises(UsageError, match=message + "torch_dtype"):
        Showo2Pipeline.from_pretrained("demo", torch_dtype=torch.float64, runtime=RuntimeOptions(quantize=quantize))
    monkeypatch.undo()
    pipe = Showo2Pipeline.from_pretrained("demo", runtime=RuntimeOptions(quantize=quantize))
    with pytest.raises(UsageError, match=r"keeps its dtype fp32: quantization takes fp32, bf16 or fp16 weights, not float64$"):
        pipe.to(torch.float64)  # (it said: load it again in float64 to quantize that)
    assert pipe.dtype == torch.float32


def test_a_refused_adapter_under_sequential_offload_names_the_call_that_enabled_it(tmp_path):
    """``load_lora_weights`` after ``enable_sequential_cpu_offload()`` said "do it before
    enable_model_cpu_offload()"; the pipeline generates as before after the refusal."""
    from showo2_cli import Showo2Pipeline
    from showo2_cli.lora import add_lora, save_adapter

    net = load("demo").network
    save_adapter(tmp_path / "a", net, add_lora(net, 2, 4.0, 0.0, ["q_proj"], ()))
    pipe = Showo2Pipeline.from_pretrained("demo")
    pipe.enable_sequential_cpu_offload()
    with pytest.raises(UsageError, match=r"sequential CPU offload .*; do it before enable_sequential_cpu_offload\(\)$"):
        pipe.load_lora_weights(tmp_path / "a")
    assert pipe.get_list_adapters() == [] and pipe.model.adapters == []
    latents = pipe("a red circle", num_inference_steps=2, height=64, width=64, output_type="latent",
                   generator=torch.Generator().manual_seed(1)).images
    assert latents.shape == (1, 16, 8, 8) and torch.isfinite(latents).all()
