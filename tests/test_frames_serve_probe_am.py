"""Probe AM: one formula for frame counts (``ModelSpec``'s, from the VAE's temporal compression),
``ServerConfig.validate()`` for the CLI and the Python API alike, and the server's own log lines."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from showo2_cli.errors import InputError, ModelError, UsageError

# ---- frame counts: ModelSpec's methods, one formula ----------------------------------------------


def test_frame_formulas_are_the_specs_and_follow_its_vae_temporal():
    """The formulas are ``ModelSpec`` methods over ``vae_temporal`` (a literal 4 was written in
    five places); the media helpers, the generation options and the latent shapes use them."""
    from showo2_cli import media as M
    from showo2_cli.options import video_frames
    from showo2_cli.pipelines.generate import generation_latent_shape
    from showo2_cli.specs import WAN21, get_spec

    assert (WAN21.latent_frames(17), WAN21.pixel_frames(5), WAN21.round_frames(16), WAN21.round_frames(16, "down")) \
        == (5, 17, 17, 13)
    two = get_spec("tiny").replace(vae_temporal=2)
    assert (two.latent_frames(17), two.pixel_frames(9), two.round_frames(16), two.round_frames(16, "down")) \
        == (9, 17, 17, 15)
    assert [two.is_valid_frames(n) for n in (0, 1, 2, 3, 4, 5)] == [False, True, False, True, False, True]
    assert generation_latent_shape(two, (64, 64), 9, True) == (16, 5, 8, 8)
    for n in range(0, 70):  # the copies agree, the notice included
        assert M.round_frames(n) == WAN21.round_frames(n) and M.round_frames(n, "down") == WAN21.round_frames(n, "down")
        if n >= 1:
            assert video_frames(n)[0] == WAN21.round_frames(n) == M.pixel_frames(M.latent_frames(WAN21.round_frames(n)))
    assert video_frames(10) == (13, "frames must be 1+4k: 10 was rounded to 13")
    for bad, message in ((0, "the number of latent frames must be at least 1, got 0"),
                         (2.0, "the number of latent frames must be a whole number, got 2.0")):
        with pytest.raises(UsageError, match=message):
            WAN21.pixel_frames(bad)


def _wan_vae(tmp_path, flags):
    from diffusers import AutoencoderKLWan

    model = AutoencoderKLWan(base_dim=8, z_dim=16, num_res_blocks=1, temperal_downsample=flags)
    model.save_pretrained(tmp_path)
    return model


def test_a_vae_compressing_time_otherwise_is_refused(tmp_path):
    """A VAE config whose ``temperal_downsample`` compresses time 2x loaded, and the wrapper said
    ``temporal_factor`` 4 (a constant): 17 frames encoded to 9 latent frames where every count of
    the project (metadata, generation shapes, decode) said 5. Now its factor is read from its
    config, and a VAE that is not 4x (Wan2.1's) is refused on load, or when handed in."""
    from showo2_cli.modeling.vae import WanVAE
    from showo2_cli.modeling.vae_files import load_vae

    assert WanVAE.random(base_dim=8).temporal_factor == 4
    model = _wan_vae(tmp_path, [False, False, True])
    with pytest.raises(ModelError, match="compresses time 2x but a Wan2.1 VAE compresses it 4x"):
        load_vae(tmp_path)
    with pytest.raises(ModelError, match="compresses time 2x"):
        WanVAE(model)


def test_a_zero_frame_decode_is_an_input_error():
    """Latents with no frame are input that cannot be used (exit 3), not a wrong option value (2),
    whichever way they come: the formula's own check (a UsageError) is not what answers."""
    from showo2_cli import api
    from showo2_cli.modeling.vae import WanVAE

    vae = WanVAE.random(base_dim=8)
    with pytest.raises(InputError, match=r"latents have an empty dimension \(shape \(16, 0, 4, 4\)\)") as e:
        api.decode(torch.zeros(16, 0, 4, 4), vae)
    assert not isinstance(e.value, UsageError)


def test_a_model_whose_config_contradicts_its_vae_is_refused(tmp_path):
    """A model config with ``vae_temporal`` 2 beside its (4x) Wan2.1 VAE loaded, and ``t2v --frames 9``
    wrote 17 frames (its latents' 5 frames decoded 4x), the sidecar saying 17, without a word."""
    import json
    import shutil

    from showo2_cli import api
    from showo2_cli.hub import bundled_demo_path

    folder = tmp_path / "m"
    shutil.copytree(bundled_demo_path(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["showo2"]["spec"]["vae_temporal"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="its config says vae_temporal 2 but the VAE's is 4"):
        api.load(str(folder))


# ---- ServerConfig.validate(): the CLI's checks, for a Python caller too -------------------------


@pytest.mark.parametrize("change, message", [
    (dict(max_queue=-1), "max_queue must be between 0 and 100000, got -1"),
    (dict(max_body_bytes=0), "max_body_bytes must be between 1024 and 4294967296, got 0"),
    (dict(request_timeout=float("nan")), "request_timeout must be between 0.1 and 86400 seconds, got nan"),
    (dict(keep_alive_timeout="5"), "keep_alive_timeout must be between 0.1 and 86400 seconds, got 5"),
    (dict(max_n=True), "max_n must be a whole number between 1 and 128, got True"),
    (dict(max_steps=10**6), "max_steps must be between 2 and 10000, got 1000000"),
    (dict(default_max_tokens=0), "default_max_tokens must be between 1 and 1000000, got 0"),
    (dict(api_key="a key"), "api_key must be None or printable ASCII without spaces"),
    (dict(allow_origins="http://localhost:3000"), "allow_origins must be a tuple of"),
    (dict(allow_origins=("http://x/path",)), "allow_origins must be a tuple of"),
    (dict(model_id=""), "model_id must be a non-empty printable name"),
])
def test_a_python_callers_config_is_checked(change, message):
    """``create_app``/``server_for``/``serve`` took any config: ``max_queue=-1`` refused every request behind a running one
    (429), ``max_body_bytes=0`` every body (413), a NaN timeout reached uvicorn's timers."""
    from showo2_cli.serve import ServerConfig, create_app

    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        create_app(None, ServerConfig(**change))


@pytest.mark.parametrize("argv, message", [
    (["--max-queue", "-1"], "--max-queue must be between 0 and 100000, got -1"),
    (["--max-input-pixels", "0"], "--max-input-pixels must be between 1 and 2147483648, got 0"),
    (["--max-steps", "0"], "--max-steps must be between 2 and 10000, got 0"),
    (["--timeout-keep-alive", "nan"], "--timeout-keep-alive must be between 0.1 and 86400 seconds, got nan"),
])
def test_the_cli_says_its_option_names(monkeypatch, capsys, argv, message):
    """The command line's checks are ServerConfig's, its messages in the options' names, before any
    model loads."""
    from showo2_cli.cli import common, main

    monkeypatch.setattr(common, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    assert main(["serve", "--port", "0", *argv]) == 2
    assert capsys.readouterr().err == f"showo2: error: {message}\n"


def test_a_chat_without_max_tokens_stays_within_the_servers_limit():
    """``showo2 serve --max-tokens 100``: a request without ``max_tokens`` generated the default 300
    tokens, over the limit the same request asking for 101 was refused (422) for."""
    from showo2_cli.serve import ServerConfig, parse_chat

    msgs = [{"role": "user", "content": "hi"}]
    assert parse_chat({"messages": msgs}, ServerConfig(max_tokens=100)).max_tokens == 100
    assert parse_chat({"messages": msgs}, ServerConfig()).max_tokens == ServerConfig().default_max_tokens == 300
    assert parse_chat({"messages": msgs, "max_tokens": 7}, ServerConfig(max_tokens=100)).max_tokens == 7


def test_server_for_checks_its_own_arguments():
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    sock = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(UsageError, match="drain_timeout must be between 0 and 86400 seconds, got nan"):
            server_for(None, ServerConfig(), sock, drain_timeout=math.nan)
        with pytest.raises(UsageError, match="log_level must be one of critical, error, warning, info"):
            server_for(None, ServerConfig(), sock, log_level="loud")  # was uvicorn's KeyError
    finally:
        sock.close()


# ---- the server's own log lines -----------------------------------------------------------------


@pytest.fixture
def serve_logger():
    logger = logging.getLogger("showo2.serve")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.parametrize("level, shown", [("info", ["INFO:     dropped a slow client", "WARNING:  stopped"]),
                                          ("warning", ["WARNING:  stopped"])])
def test_the_servers_own_lines_follow_uvicorns_log_level(serve_logger, capsys, level, shown):
    """``showo2.serve``'s INFO lines (a dropped slow client, a connection closed for its timeout)
    had no handler and were lost; its warnings came out bare, without uvicorn's level prefix. They
    are on uvicorn's stderr handler now, at the server's log level (``--quiet``: warnings)."""
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    sock = bind_socket("127.0.0.1", 0)
    try:
        server_for(None, ServerConfig(), sock, log_level=level)
    finally:
        sock.close()
    capsys.readouterr()
    serve_logger.info("dropped a slow client")
    serve_logger.warning("stopped")
    out = capsys.readouterr()
    assert out.err.splitlines() == shown and out.out == ""


def test_the_access_log_follows_the_level_in_any_case(serve_logger):
    """``log_level="INFO"`` (uvicorn takes any case) turned the access log off: it was on for the
    lowercase names only."""
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    sock = bind_socket("127.0.0.1", 0)
    try:
        shown = [server_for(None, ServerConfig(), sock, log_level=level).config.access_log
                 for level in ("INFO", "info", "Debug", 20, "WARNING", logging.ERROR)]
    finally:
        sock.close()
    assert shown == [True, True, True, True, False, False]


def test_the_queue_holds_max_queue_behind_the_next_to_run():
    """``max_queue`` requests wait behind the running one; a burst that came before the worker
    thread took the first job got one fewer (``--max-queue 4``: 4 answered, not 5, a flaky
    ``test_server_queue_under_32_concurrent_requests`` on a busy machine)."""
    import asyncio

    from showo2_cli.serve import Job, QueueFull, Worker

    loop = asyncio.new_event_loop()
    try:
        for max_queue in (0, 2):
            worker = Worker(max_queue)  # not started: nothing is taken from the queue
            for _ in range(max_queue + 1):
                worker.submit(Job(lambda job: None, loop))
            with pytest.raises(QueueFull):
                worker.submit(Job(lambda job: None, loop))
            assert worker.waiting == max_queue + 1 and worker.counts["rejected"] == 1
    finally:
        loop.close()
