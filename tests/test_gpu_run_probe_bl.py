"""The GPU benchmark's run (benchmarks/gpu.sh, bench_gpu.py) and the CUDA-only paths of the memory
guard and the out-of-memory message, checked on the CPU (probe BL).

No test here pretends to run on a GPU: the benchmark's functions run on the CPU with the tiny spec,
and the CUDA queries of the memory guard are replaced by fixed numbers to check its arithmetic."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_gpu  # noqa: E402

from showo2_cli.specs import get_spec  # noqa: E402


class _Allocations(TorchDispatchMode):
    """Every tensor an operation makes off 'meta': (dtype, numel)."""

    def __init__(self):
        super().__init__()
        self.made = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.made.append((t.dtype, t.numel()))
        return out


def test_the_network_is_built_on_the_device_in_bf16_without_a_float32_copy():
    """make_network built the network in float32 on the device (``to_empty``), then cast it, and
    drew each weight as a float32 tensor: for the 7B, 34 GB of float32 on the GPU before the 17 GB
    of bf16, and the section's "weights" figure read that peak."""
    spec = get_spec("tiny")
    largest = spec.vocab_size * spec.hidden_size
    with _Allocations() as seen:
        net = bench_gpu.make_network(spec, torch.device("cpu"), torch.bfloat16)
    big_fp32 = [n for dtype, n in seen.made if dtype == torch.float32 and n >= largest // 4]
    assert big_fp32 == []
    weights = {p.dtype for p in net.parameters()}
    assert weights == {torch.bfloat16}
    w = net.showo.model.embed_tokens.weight.detach().float()
    assert 0.015 < float(w.std()) < 0.025 and abs(float(w.mean())) < 0.005  # normal(0, 0.02)
    # the RoPE tables stay float32, as a load builds them
    assert net.showo.model.rotary_emb.inv_freq.dtype == torch.float32


def test_the_network_holds_the_heads_the_command_loads():
    """The sections held every head (a t2i of the 7B held its untied 544 M-parameter lm_head, which
    ``showo2 t2i`` never loads): each now holds what its command loads."""
    spec = get_spec("tiny")
    full = bench_gpu.make_network(spec, torch.device("cpu"), torch.bfloat16)
    caption = bench_gpu.make_network(spec, torch.device("cpu"), torch.bfloat16, bench_gpu.CAPTION_HEADS)
    assert full.loaded_heads() == ("lm_head", "flow_head")
    assert caption.loaded_heads() == ("lm_head",)
    head = sum(p.numel() for n, p in full.named_parameters() if n.startswith(("diff_proj.", "diffusion_head")))
    assert head > 0
    assert sum(p.numel() for p in caption.parameters()) == sum(p.numel() for p in full.parameters()) - head


def test_the_attention_variants_are_set_as_the_command_line_sets_them(monkeypatch):
    """The flex variant only switched transformers' backend: the LLM took the boolean omni mask as
    an additive score (``score + mask``: nothing masked) and the flow head stayed on sdpa; the
    compile variant wrapped the modules itself instead of ``--compile``'s ``compile_network``."""
    import showo2_cli.acceleration as acceleration
    from showo2_cli.modeling.attention import backend_mask

    spec = get_spec("tiny")
    net = bench_gpu.make_network(spec, torch.device("cpu"), torch.bfloat16, bench_gpu.T2I_HEADS)
    bench_gpu.configure(net, "flex")
    assert net.attn == "flex" and net.showo.config._attn_implementation == "flex_attention"
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool).tril()
    assert type(backend_mask(mask, net.attn, torch.bfloat16)).__name__ == "BlockMask"
    compiled = []
    monkeypatch.setattr(acceleration, "compile_network", compiled.append)
    bench_gpu.configure(net, "compile")
    assert compiled == [net]
    with pytest.raises(ValueError):
        bench_gpu.configure(net, "flash")


def test_a_variant_is_compared_with_sdpa_on_the_same_step(monkeypatch):
    """The flex and compile figures came with nothing to show they computed the same thing (the
    flex variant did not: no mask). ``agreement`` runs one step both ways: eager attention (cheap
    on the CPU, unlike flex's compile) agrees with sdpa to bf16 rounding, and the network is left
    as it was set; a variant whose velocity is off by 1 shows it."""
    spec = get_spec("tiny")
    net = bench_gpu.make_network(spec, torch.device("cpu"), torch.bfloat16, bench_gpu.T2I_HEADS)
    bench_gpu.configure(net, "eager")
    same = bench_gpu.agreement(net, spec, "eager")
    assert net.attn == "eager" and same["finite"]
    assert 0 < same["reference_rms"] and same["max_abs_diff"] <= 0.05 * same["reference_abs_max"]
    seen, real, offsets = [], bench_gpu.generate_latents, iter([1.0, 0.0])

    def off_by_one_as_set(*args, **kwargs):
        seen.append(net.attn)
        return real(*args, **kwargs) + next(offsets)

    monkeypatch.setattr(bench_gpu, "generate_latents", off_by_one_as_set)
    other = bench_gpu.agreement(net, spec, "eager")
    assert seen == ["eager", "sdpa"] and net.attn == "eager"
    assert other["max_abs_diff"] == pytest.approx(1.0, abs=0.05)


def test_a_section_saves_its_record_after_each_stage():
    """A section wrote its record once, at its end: one stopped by its time limit (the compile
    section's warm-up) left nothing of what it had measured."""
    saved = []
    record = bench_gpu.run_section("t2i", True, 2, 2, save=lambda r: saved.append(json.loads(json.dumps(r))))
    assert [s["finished"] for s in saved] == [False, False, False, False, True]
    assert [len(s.get("result", [])) for s in saved] == [0, 0, 1, 2, 2]
    assert record["heads"] == ["flow_head"]
    first, fourth = record["result"]
    assert (first["batch"], fourth["batch"]) == (1, 4)
    assert first["model_calls"] == 2 and first["cli_steps"] == 3 and first["finite"]
    assert first["compiled_graphs_in_timed_run"] == 0
    assert first["peak_gib"] is None and record["allocated_gib"] is None  # no GPU: no figure, not 0
    assert record["weights_gib"] == pytest.approx(record["params"] * 2 / 2**30, rel=1e-3)  # bf16 (+ RoPE tables)
    saved.clear()
    bench_gpu.run_section("attn-sdpa", True, 1, 2, save=lambda r: saved.append(json.loads(json.dumps(r))))
    assert [s.get("warmup", {}).get("calls") for s in saved] == [None, 1, 2, 2]  # after each warm-up call
    assert saved[-1]["finished"] and saved[-1]["result"]["attn"] == "sdpa"


def test_a_failing_stage_outside_the_timed_runs_is_said_in_the_record(monkeypatch):
    """The build and the nf4 quantization ran unguarded: a bitsandbytes that cannot load its CUDA
    library ended the section with a traceback, its record saying nothing of why."""
    import showo2_cli.acceleration as acceleration
    from showo2_cli.errors import UsageError

    def refuse(net, method):
        raise UsageError("--quantize nf4 needs bitsandbytes >= 0.50: pip install 'showo2[quant]'")

    monkeypatch.setattr(acceleration, "quantize_network", refuse)
    saved = []
    record = bench_gpu.run_section("7b-nf4", True, 1, 2, save=saved.append)
    assert record["error"].startswith("UsageError: --quantize nf4 needs bitsandbytes") and "result" not in record
    assert record["finished"] and saved[-1] is record


def _fake_python(tmp_path: Path) -> Path:
    """A PYTHON for gpu.sh whose bench_gpu.py runs are replaced by what sections do when they fail:
    t2i is killed by its time limit after writing a partial record, caption dies leaving half a
    JSON file, attn-sdpa ends normally; anything else (the merge) is the real interpreter."""
    script = tmp_path / "python"
    script.write_text(f"""#!/bin/bash
if [[ "$1" == *bench_gpu.py ]]; then
  section="$3"; out="$5"
  case "$section" in
    t2i) echo '{{"section": "t2i", "finished": false, "weights_gib": 3.5, "result": [{{"batch": 1}}]}}' > "$out"; exit 124;;
    caption) printf '{{"section": "caption", "resu' > "$out"; exit 139;;
    *) echo "{{\\"section\\": \\"$section\\", \\"finished\\": true}}" > "$out"; exit 0;;
  esac
fi
exec {sys.executable} "$@"
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_gpu_sh_keeps_every_sections_record_when_one_fails(tmp_path):
    """A section that left a partial or broken record made the merge raise: gpu.sh then deleted
    every section's record and printed "wrote" a file that did not exist (one bad section lost the
    whole run)."""
    env = {**os.environ, "PYTHON": str(_fake_python(tmp_path)), "OUT": str(tmp_path / "out")}
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--smoke"], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    merged = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert list(merged) == ["t2i", "caption", "attn-sdpa", "7b", "7b-nf4"]
    assert merged["t2i"]["result"] == [{"batch": 1}] and merged["t2i"]["weights_gib"] == 3.5
    assert merged["t2i"]["exit"] == "exited 124 (over its 60 s limit)"
    assert merged["caption"]["error"] == "no record (JSONDecodeError)" and merged["caption"]["exit"] == "exited 139"
    assert merged["attn-sdpa"] == {"section": "attn-sdpa", "finished": True}
    assert sorted(os.listdir(tmp_path / "out")) == ["gpu.json"]  # the parts are gone once merged


# ---- the CUDA paths of the memory guard and the out-of-memory message ---------------------------

def test_the_memory_guard_on_cuda_counts_what_the_allocator_holds_unused(monkeypatch):
    """On CUDA the guard read ``mem_get_info``'s free memory alone: after a first job (a chat's,
    a server's) torch's allocator keeps the freed blocks, which the card counts as used, so a second
    job of the same size was refused ("needs about 5 GB, more than the 2 GB of available memory")."""
    from showo2_cli import runtime
    from showo2_cli.errors import ResourceError

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * 10**9, 80 * 10**9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 10 * 10**9)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 4 * 10**9)
    monkeypatch.delenv(runtime.MAX_MEMORY_ENV, raising=False)
    assert runtime.available_memory_gb("cuda:0") == pytest.approx(8.0)
    runtime.check_memory(5.0, "generating 1 image(s) at 432x432", device="cuda:0")
    with pytest.raises(ResourceError, match="needs about 9.0 GB, more than the 8.0 GB of available memory"):
        runtime.check_memory(9.0, "generating 1 image(s) at 432x432", device="cuda:0")


def test_cublas_out_of_gpu_memory_is_the_memory_error():
    """cuBLAS failing to allocate its workspace (the first matrix product on a nearly full card)
    was "internal error ... (run with --debug for the traceback)", exit 1; it is out of memory."""
    from showo2_cli.cli import describe
    from showo2_cli.errors import is_out_of_memory

    e = RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    assert is_out_of_memory(e)
    message, code, kind = describe(e)
    assert (code, kind) == (6, "resource") and message.startswith("out of memory")
    assert not is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx`"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))


def test_gpu_wheels_counts_what_the_device_call_sends(tmp_path):
    """The device call sends the tree git sees (tracked and untracked files, not ignored ones) and
    the carried .whl/, 64 MiB at most: gpu_wheels.py says how much that is before the call."""
    import gpu_wheels

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/.whl/\nbig\n")
    (tmp_path / "tracked").write_bytes(b"x" * 1000)
    (tmp_path / "big").write_bytes(b"x" * 5000)
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "a.whl").write_bytes(b"x" * 7000)
    subprocess.run(["git", "-C", str(tmp_path), "add", "tracked"], check=True)
    (tmp_path / "untracked").write_bytes(b"x" * 300)
    assert gpu_wheels.travelling_bytes(tmp_path) == 1000 + 300 + len("/.whl/\nbig\n")
    assert gpu_wheels.travelling_bytes(tmp_path / "nowhere") is None


def test_a_cuda_index_past_the_machines_gpus_is_a_usage_error(monkeypatch, tmp_path, capsys):
    """``--device cuda:3`` on a one-GPU machine passed every check and failed at the weights' first
    move with torch's "CUDA error: invalid device ordinal": "internal error", exit 1 (only
    LOCAL_RANK was checked against the GPUs). CUDA is made to look present (nothing runs on it)."""
    from showo2_cli import runtime
    from showo2_cli.cli import main
    from showo2_cli.errors import UsageError
    from showo2_cli.pipeline import Showo2Pipeline

    pipe = Showo2Pipeline(types.SimpleNamespace(offload="none", network=None, network_given=None, vae=None,
                                                 vae_given=None))  # (the device is checked before the model moves)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert runtime.pick_device("cuda:0") == "cuda:0" and runtime.pick_device("cuda") == "cuda"
    with pytest.raises(UsageError, match=r"^--device cuda:1: this machine has 1 CUDA device\(s\), cuda:0$"):
        runtime.pick_device("cuda:1")
    with pytest.raises(UsageError, match=r"^device cuda:3: this machine has 1 CUDA device"):
        runtime.python_device("cuda:3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UsageError, match=r"has 2 CUDA device\(s\), cuda:0 to cuda:1$"):
        runtime.pick_device("CUDA:7")
    out = tmp_path / "x.png"
    assert main(["t2i", "a red circle", "--device", "cuda:5", "-o", str(out)]) == 2
    assert "--device cuda:5: this machine has 2 CUDA device(s)" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(UsageError, match=r"^device cuda:4: this machine has 2"):
        pipe.enable_model_cpu_offload(gpu_id=4)
    assert pipe.offload == "none"
