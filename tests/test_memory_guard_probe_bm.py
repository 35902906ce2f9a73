"""Probe BM: one memory guard, one verdict. A memory limit counts the weights a job runs (loaded
now or on first use) plus its working memory, so the same job under the same limit is refused or
run alike by every entry point, with heads loaded eagerly or lazily."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from showo2_cli import Showo2Pipeline, api
from showo2_cli.errors import ResourceError
from showo2_cli.loading import load
from showo2_cli.modeling.parts import NotLoaded
from showo2_cli.options import RuntimeOptions

OPTS = dict(steps=2, seed=1, size=64)


@pytest.fixture(scope="module")
def models():
    """The demo loaded eagerly (both heads, both VAE halves), lazily (no head, the VAE's encoder
    alone) and under a sequential CPU offload (accelerate's hooks hold the weights)."""
    return (load("demo"), load("demo", heads=(), vae_parts=("encoder",)),
            load("demo", heads=("flow_head",), runtime=RuntimeOptions(offload="sequential")))


def _verdict(run) -> str:
    try:
        run()
    except ResourceError as e:
        return "refused: " + str(e).split(" needs about ")[1].split(",")[0]
    return "ran"


def test_the_weights_a_job_runs_are_counted_alike_loaded_or_not(models):
    # the demo's network without a separate lm_head (tied: the embedding) is 2.86 M fp32 parameters,
    # the VAE's decoder 2.07 M of its 3.60 M: what t2i runs, whichever of it is loaded now
    from showo2_cli.footprint import GENERATION_PARTS, UNDERSTANDING_PARTS, files_weights_gb, weights_gb
    from showo2_cli.modeling.vae_files import header_sizes

    eager, lazy, _offloaded = models
    assert weights_gb(eager, *GENERATION_PARTS) == pytest.approx((0.0197127, 0.0197127), abs=1e-7)
    assert weights_gb(lazy, *GENERATION_PARTS) == pytest.approx((0.0197127, 0.0041902), abs=1e-7)  # (the trunk)
    assert weights_gb(lazy, *UNDERSTANDING_PARTS)[0] == weights_gb(eager, *UNDERSTANDING_PARTS)[0] == \
        pytest.approx(0.0103469, abs=1e-7)
    # before a load, from the spec and the VAE's header: the same figure (the command line's early check)
    sizes = header_sizes(eager.files.vae)
    assert files_weights_gb(eager.spec, torch.float32, "none", sizes, *GENERATION_PARTS) == \
        pytest.approx((0.0197127, 0.0), abs=1e-7)
    assert files_weights_gb(eager.spec, torch.bfloat16, "none", sizes, *GENERATION_PARTS)[0] == \
        pytest.approx(weights_gb(eager, *GENERATION_PARTS)[0] / 2, abs=1e-7)


@pytest.mark.parametrize("limit, verdict", [
    (0.0069, "refused: 26.4 MB (19.7 MB of weights"),  # old: eager ran, lazy refused the flow head's 7.3 MB
    (0.015, "refused: 26.4 MB (19.7 MB of weights"),  # old: both ran (6.65 MB of working memory < 15 MB)
    (0.03, "ran"),
])
def test_one_job_one_limit_one_verdict_across_entry_points(models, limit, verdict):
    eager, lazy, offloaded = models
    limited = RuntimeOptions(max_memory_gb=limit)
    runs = {
        "api, eager, job's limit": lambda: api.text_to_image(eager, ["a red circle"],
                                                              api.GenerateOptions(**OPTS, max_memory_gb=limit)),
        "api, lazy, job's limit": lambda: api.text_to_image(lazy, ["a red circle"],
                                                             api.GenerateOptions(**OPTS, max_memory_gb=limit)),
        "api, offloaded, job's limit": lambda: api.text_to_image(offloaded, ["a red circle"],
                                                                  api.GenerateOptions(**OPTS, max_memory_gb=limit)),
        "api, lazy, model's limit": lambda: api.text_to_image(load("demo", heads=(), runtime=limited),
                                                               ["a red circle"], api.GenerateOptions(**OPTS)),
        "pipeline, model's limit": lambda: Showo2Pipeline.from_pretrained("demo", runtime=limited)(
            "a red circle", num_inference_steps=2, height=64, width=64, generator=torch.Generator().manual_seed(1)),
    }
    got = {name: _verdict(run) for name, run in runs.items()}
    assert all(v.startswith(verdict) for v in got.values()), got


def test_a_jobs_own_limit_reaches_the_head_it_loads(models):
    """The head loaded on a job's first use was judged by the model's limit alone: a job given no
    limit (``max_memory_gb=0``) on a model loaded with a small one was refused by the head's load,
    and a job's own small limit let the head load (its check counted no weights)."""
    small = load("demo", heads=(), runtime=RuntimeOptions(max_memory_gb=0.0001))
    images = api.text_to_image(small, ["a red circle"], api.GenerateOptions(**OPTS, max_memory_gb=0))
    assert len(images) == 1  # (old: "loading the network's flow_head needs about 7.3 MB ... 0.1 MB")
    free = load("demo", heads=(), runtime=RuntimeOptions(max_memory_gb=0))
    with pytest.raises(ResourceError, match=r"^generating 1 image\(s\) at 64x64 needs about 26\.4 MB"):
        api.text_to_image(free, ["a red circle"], api.GenerateOptions(**OPTS, max_memory_gb=0.0069))
    assert isinstance(free.network.get_submodule("diffusion_head_a"), NotLoaded)  # (old: loaded, then ran)


def test_an_image_to_caption_is_judged_before_the_vae_encodes_it(models):
    """An image question checked only the LLM's forward, after the VAE had encoded the image at
    --size (the real VAE: 0.93 GB at 432x432), and counted no weights."""
    eager, _lazy, _offloaded = models
    image = np.full((32, 32, 3), 90, np.uint8)
    opts = api.CaptionOptions(max_new_tokens=2, size=1024, max_memory_gb=0.05)
    # (--vae-tiling auto: the figure of the encode in 256 px tiles, 118 MB, where whole it is 9xx MB: probe EH)
    with pytest.raises(ResourceError, match=r"^encoding an image at 1024x1024 needs about 1\d\d\.\d MB \(10\.3 MB of "
                                            r"weights, 1\d\d\.\d MB to run\), more than the 50\.0 MB allowed") as e:
        api.caption(eager, image, opts)  # (old: encoded it, then answered)
    assert "lower" not in str(e.value)  # (caption and chat read an image at the model's size: no option lowers it)


@pytest.mark.slow  # (a command's load and a server's)
def test_t2i_and_serve_give_one_verdict_under_one_limit(tmp_path, monkeypatch, capsys):
    """`t2i --max-memory 0.0069` wrote an image where `serve --max-memory 0.0069` refused its first
    (the flow head, loaded on first use, was the only weights ever checked)."""
    import json
    import urllib.error
    import urllib.request

    pytest.importorskip("fastapi")
    from conftest import run_in_thread
    from showo2_cli import serve as S
    from showo2_cli.cli import main
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB", raising=False)
    out = tmp_path / "x.png"
    args = ["t2i", "a red circle", "-o", str(out), "--steps", "2", "--seed", "1", "--size", "64"]
    assert main([*args, "--max-memory", "0.0069"]) == 6 and not out.exists()  # (old: 0, the image written)
    assert "needs about 26.4 MB (19.7 MB of weights, 6.7 MB to run)" in capsys.readouterr().err
    started = []
    monkeypatch.setattr(S, "serve", lambda bundle, config, *a, **k: started.append((bundle, config)))
    assert main(["serve", "--model", "demo", "--port", "0", "--quiet", "--max-memory", "0.0069"]) == 0
    model, config = started[0]
    sock = bind_socket("127.0.0.1", 0)
    server = server_for(model, ServerConfig(model_id=config.model_id, max_queue=4), sock, log_level="error")
    thread = run_in_thread(server, sock)
    host, port = sock.getsockname()[:2]
    body = json.dumps({"prompt": "a red circle", "seed": 1, "steps": 2, "size": "64x64"}).encode()
    request = urllib.request.Request(f"http://{host}:{port}/v1/images/generations", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=300)
        assert e.value.code == 422
        message = json.loads(e.value.read())["error"]["message"]
        assert "needs about 26.4 MB (19.7 MB of weights, 6.7 MB to run)" in message, message
        model.max_memory_gb = 0.03  # (as `serve --max-memory 0.03`): both run
        with urllib.request.urlopen(request, timeout=300) as response:
            assert response.status == 200
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert main([*args, "--max-memory", "0.03"]) == 0 and out.exists()


@pytest.mark.parametrize("offload", ["none", "model", "sequential"])
def test_the_check_before_loading_counts_the_weights_the_device_will_hold(offload, monkeypatch):
    """The command line's check before a load judges what the loaded model's check will: the weights
    with a limit; against a GPU's free memory, those a load puts there (none under an offload, which
    keeps them in CPU memory, where the loaded model's check finds them loaded)."""
    from showo2_cli import runtime as R
    from showo2_cli.cli.generate import check_memory_before_loading
    from showo2_cli.options import GenerateOptions

    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB", raising=False)
    monkeypatch.setattr(R, "pick_device", lambda device="auto": "cuda:0")  # (a GPU with 10 MB free)
    monkeypatch.setattr(R, "available_memory_gb", lambda device="cpu": 0.010)
    opts = GenerateOptions(steps=2, size=(64, 64))
    runtime = RuntimeOptions(offload=offload)  # bf16 on the GPU: 9.9 MB of weights, 3.4 MB to run
    if offload == "none":
        with pytest.raises(ResourceError, match=r"needs about 13\.\d MB \(9\.9 MB of weights, 3\.\d MB to run\), more "
                                                r"than the 10\.0 MB of available memory"):
            check_memory_before_loading("demo", "t2i", opts, 1, runtime)
    else:
        check_memory_before_loading("demo", "t2i", opts, 1, runtime)
    with pytest.raises(ResourceError, match=r"needs about 13\.\d MB \(9\.9 MB of weights"):  # a limit counts them all
        check_memory_before_loading("demo", "t2i", GenerateOptions(steps=2, size=(64, 64), max_memory_gb=0.01), 1,
                                    runtime)


def test_a_generations_vae_estimate_is_in_the_models_dtype(models):
    """The generation estimate counted the VAE's decode in 4-byte activations whatever the dtype,
    while the VAE runs in the model's (measured on the CPU, demo VAE, one 512x512 frame: 444 MB in
    float32, 227 MB in bf16): a bf16 job's decode was estimated at twice its size (the 1.5B at
    1024x1024: 10.1 GB untiled where 5.1 GB is the bf16 figure)."""
    from showo2_cli.pipelines.generate import generation_memory_gb
    from showo2_cli.specs import get_spec

    eager = models[0]
    spec, vae = eager.spec, eager.vae
    try:
        for dtype in (torch.float32, torch.bfloat16):
            vae_part = generation_memory_gb(spec, dtype, (512, 512), 1, False, 1, vae.base_dim)
            assert vae_part == pytest.approx(vae.to(dtype=dtype).decode_memory_gb(1, 64, 64))  # (the VAE's own)
    finally:
        vae.to(dtype=torch.float32)
    big = get_spec("1.5B")
    assert generation_memory_gb(big, torch.bfloat16, (1024, 1024), 1, False, 1) == pytest.approx(5.058, abs=1e-3)
    assert generation_memory_gb(big, torch.float32, (1024, 1024), 1, False, 1) == pytest.approx(10.091, abs=1e-3)
