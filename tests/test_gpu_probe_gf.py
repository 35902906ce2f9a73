"""Ready for the GPU without one (probe GF).

* The network's paths on a second device type: torch's lazy-tensor device (its TorchScript
  backend, which runs on the CPU) is, like CUDA, a device of its own, so an operation that mixes
  one of its tensors with a CPU tensor (a mask, a position table or a length made without
  ``device=``) fails as it would on a GPU. The t2i (prefix cache and full sequence) and caption
  paths, and the API's with the VAE, run there.
* The GPU benchmark's records: each t2i run's floating-point work and the rate reached, and which
  ``scaled_dot_product_attention`` kernels ran (a fall back to the math kernel is said).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_gpu  # noqa: E402

from showo2_cli.specs import get_spec  # noqa: E402


@pytest.fixture(scope="module")
def lazy_device():
    """torch's lazy-tensor device (TorchScript backend), or a skip where this torch lacks it."""
    try:
        import torch._lazy.ts_backend as ts_backend

        ts_backend.init()
        torch.zeros(1, device="lazy")
    except Exception as e:  # (a torch built without it)
        pytest.skip(f"no lazy-tensor device in this torch: {e}")
    # The lazy backend's own chunk returns CPU tensors (a backend quirk, not the project's): the
    # same pieces as narrowed views, so only the project's tensors can mix devices here.
    original = torch.Tensor.chunk

    def chunk(self, chunks, dim=0):
        if self.device.type != "lazy":
            return original(self, chunks, dim)
        n = self.shape[dim]
        step = -(-n // chunks)
        return tuple(self.narrow(dim, i, min(step, n - i)) for i in range(0, n, step))

    mp = pytest.MonkeyPatch()
    mp.setattr(torch.Tensor, "chunk", chunk)
    yield torch.device("lazy", 0)
    mp.undo()


def on_device(net, device):
    """``net`` moved to ``device`` with its RoPE tables rebuilt there (as the benchmark builds it)."""
    net = net.to(device)
    net.reset_buffers()
    return net


def test_generation_keeps_every_tensor_on_the_networks_device(lazy_device):
    from showo2_cli.sampling import generate_latents
    from showo2_cli.sequences import generation_layout

    spec = get_spec("tiny")
    net = on_device(bench_gpu.make_network(spec, torch.device("cpu"), torch.float32, bench_gpu.T2I_HEADS), lazy_device)
    assert net.device.type == "lazy"
    grid = spec.image_latent_grid
    layout = generation_layout([[100, 101, 102], [103] * 7], grid * grid + 1, bench_gpu.ids(spec), spec.max_seq_len)
    noise = torch.randn(2, spec.latent_channels, 2 * grid, 2 * grid, generator=torch.Generator().manual_seed(0))
    for cache_prefix in (True, False):
        x = generate_latents(net, layout, noise, 5.0, 3, 3.0, cache_prefix=cache_prefix)
        assert x.device.type == "cpu" and x.shape == noise.shape and bool(torch.isfinite(x).all())


def test_captioning_keeps_every_tensor_on_the_networks_device(lazy_device):
    spec = get_spec("tiny")
    net = on_device(bench_gpu.make_network(spec, torch.device("cpu"), torch.float32, bench_gpu.CAPTION_HEADS),
                    lazy_device)
    result = bench_gpu.caption(net, spec, 3, lazy_device)
    assert result["new_tokens"] == 3 and result["prompt_tokens"] > 3


@pytest.mark.slow
def test_the_api_runs_t2i_and_caption_on_another_device(lazy_device, tiny_model_dir):
    from PIL import Image

    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    on_device(pipe.network, lazy_device)
    pipe.vae.to(lazy_device)
    image = pipe("a red circle", num_inference_steps=3, guidance_scale=4.0,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    answer = pipe.caption(Image.new("RGB", (64, 64), (200, 10, 10)), "What?", max_new_tokens=2)
    assert isinstance(answer, str)


def test_t2i_records_its_flops_and_the_rate_reached():
    record = bench_gpu.run_section("t2i", True, 2, 2)
    one, four = record["result"]
    # a guided step's work grows with the batch, the timed run's is the prompt's plus each step's
    assert four["tflop_per_step"] == pytest.approx(4 * one["tflop_per_step"], rel=1e-6)
    for r in (one, four):
        assert r["tflop_per_step"] > 0 and r["tflop_prompt"] > 0
        assert r["tflop"] == pytest.approx(r["tflop_prompt"] + r["steps"] * r["tflop_per_step"])
        assert r["achieved_tflop_per_s"] == pytest.approx(r["tflop"] / r["seconds"])


def test_the_step_flops_are_the_networks_matrix_products():
    """One step's count against the linear layers' weights (a multiply and an add per weight and
    position): at batch 1 with guidance two rows of 1 + N block positions (time token, N visual
    tokens) through the LLM and the flow head, the dual path once for the N tokens of the latents
    both rows share; the rest (attention, the convolutions, the adaLN of the condition) is small."""
    spec = get_spec("tiny")
    net = bench_gpu.make_network(spec, torch.device("cpu"), torch.float32, bench_gpu.T2I_HEADS)
    step = bench_gpu.t2i(net, spec, 1, 1, torch.device("cpu"), warmup_steps=1, count_flops=True)["tflop_per_step"] * 1e12
    weights = {name: m.weight.numel() for name, m in net.named_modules()
               if isinstance(m, torch.nn.Linear) and "adaLN" not in name}

    def group(*prefixes):
        return sum(n for name, n in weights.items() if name.startswith(prefixes))

    tokens = spec.image_latent_grid ** 2
    per_row = group("showo.model.layers.", "diff_proj", "diffusion_head_a.", "diffusion_head_b.")
    shared = group("und_trans", "fusion_proj")
    products = 2 * (2 * (tokens + 1) * per_row + tokens * shared)
    assert products <= step <= 1.15 * products


def test_attention_kernels_names_the_kernel_and_says_a_math_fallback():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    spec = get_spec("tiny")
    net = bench_gpu.make_network(spec, torch.device("cpu"), torch.float32, bench_gpu.T2I_HEADS)

    def run():
        bench_gpu.t2i(net, spec, 1, 1, torch.device("cpu"), warmup_steps=1)

    fused = bench_gpu.attention_kernels(run)
    assert fused["ops"] and not fused["math_fallback"]
    assert all(name.startswith("aten::_scaled_dot_product_") for name in fused["ops"])
    with sdpa_kernel([SDPBackend.MATH]):
        math = bench_gpu.attention_kernels(run)
    assert math["math_fallback"] and "aten::_scaled_dot_product_attention_math" in math["ops"]


def test_a_failing_flop_count_keeps_the_timings(monkeypatch):
    def refuse(run):
        raise RuntimeError("no flop formula")

    monkeypatch.setattr(bench_gpu, "run_flops", refuse)
    spec = get_spec("tiny")
    net = bench_gpu.make_network(spec, torch.device("cpu"), torch.bfloat16, bench_gpu.T2I_HEADS)
    result = bench_gpu.t2i(net, spec, 1, 1, torch.device("cpu"), warmup_steps=1, count_flops=True)
    assert result["seconds"] > 0 and result["finite"]
    assert result["error"].startswith("RuntimeError: no flop formula") and "tflop" not in result


def test_gpu_sh_runs_offline_and_takes_its_unpacked_wheels_away(tmp_path):
    """gpu.sh unpacked .whl/ into a folder of mktemp's that it never removed (38 MB left in /tmp by
    each run), and let a library try the network the device cannot reach. A copy of the script
    beside a one-file wheel, with a PYTHON whose bench_gpu.py runs record what they were given."""
    import zipfile

    root = tmp_path / "repo"
    (root / "benchmarks").mkdir(parents=True)
    (root / "benchmarks" / "gpu.sh").write_text((REPO / "benchmarks" / "gpu.sh").read_text())
    (root / ".whl").mkdir()
    with zipfile.ZipFile(root / ".whl" / "probe_pkg-1.0-py3-none-any.whl", "w") as w:
        w.writestr("probe_pkg/__init__.py", "")
    python = tmp_path / "python"
    python.write_text(f"""#!/bin/bash
if [[ "$1" == *bench_gpu.py ]]; then
  {sys.executable} -c 'import json, os, sys, probe_pkg
json.dump({{"section": sys.argv[1], "offline": os.environ.get("HF_HUB_OFFLINE"),
           "site": os.path.dirname(os.path.dirname(probe_pkg.__file__))}}, open(sys.argv[2], "w"))' "$3" "$5"
  exit 0
fi
exec {sys.executable} "$@"
""")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHON": str(python), "OUT": str(tmp_path / "out"), "TMPDIR": str(scratch)}
    r = subprocess.run(["bash", str(root / "benchmarks" / "gpu.sh"), "--smoke"], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    merged = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert {v["offline"] for v in merged.values()} == {"1"}
    sites = {v["site"] for v in merged.values()}
    assert len(sites) == 1 and Path(sites.pop()).parent == scratch  # the wheel was on the path, from there
    assert list(scratch.iterdir()) == []  # and is gone
