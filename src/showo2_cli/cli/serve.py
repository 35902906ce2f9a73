"""``serve``: an OpenAI-compatible HTTP API over one resident model (see :mod:`showo2_cli.serve`)."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Annotated

import typer

from ..options import RuntimeOptions
from ..serve_config import DRAIN_TIMEOUT, ServerConfig, check_port
from . import common
from .common import (
    LoraOpt,
    LoraWeightOpt,
    ModelOpt,
    QuietOpt,
    VaeOpt,
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@common.with_runtime_options
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface: "
                                      "then set an API key).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free one, printed).")] = 8000,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Require 'Authorization: Bearer KEY' "
                                                "(default: $SHOWO2_API_KEY; none: no check).")] = None,
    allow_origin: Annotated[list[str] | None, typer.Option(
        "--allow-origin", metavar="<origin>", help="A browser origin (scheme://host[:port], or *) allowed to call the API "
        "(CORS); repeatable (default: $SHOWO2_ORIGINS, comma-separated; none: browsers on other origins "
        "are refused).")] = None,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Requests waiting behind the running ones (--parallel; "
                                           "an image waiting for another image's end waits here, not in a slot, unless "
                                           "--max-num-batched-tokens is 0); more get 429.")] = ServerConfig.max_queue,
    parallel: Annotated[int, typer.Option(
        "--parallel", help="Requests run at once, their answers decoded together in one batched step (continuous "
        "batching: more answers a second under concurrent clients). 1: one at a time, each answer exactly as "
        "alone; above 1, an answer decoded beside others equals its answer alone to float rounding, as a "
        "--batch-size above 1 does.")] = ServerConfig.parallel,
    max_num_batched_tokens: Annotated[int, typer.Option(
        "--max-num-batched-tokens", help="With --parallel above 1: prompt positions run between two steps of the "
        "answers being decoded (chunked prefill, as vLLM's option): a long prompt runs in chunks of this many, the "
        "other answers taking one step after each, so they go on while it runs (an image's or a video's block "
        "stays in one chunk); an image's sampler likewise lets them (and waiting prompts) step between two of its "
        "steps. 0: a prompt, and an image, runs whole while they wait.")] = ServerConfig.max_num_batched_tokens,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", help="Largest max_tokens of a chat request (max_output_tokens of a response).")] = ServerConfig.max_tokens,
    max_n: Annotated[int, typer.Option("--max-n", help="Largest n (images) of an image request.")] = ServerConfig.max_n,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Largest steps of an image request.")] = ServerConfig.max_steps,
    max_size: Annotated[int, typer.Option("--max-size", help="Largest generated image side, pixels.")] = ServerConfig.max_size,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest request body, MiB.")] = ServerConfig.max_body_bytes / 2**20,
    max_input_pixels: Annotated[int, typer.Option(
        "--max-input-pixels", help="Largest input image decoded, pixels (a baseline JPEG over it, a phone photo, is decoded reduced to the model's size).")] = ServerConfig.max_image_pixels,
    drain_timeout: Annotated[float, typer.Option(
        "--drain-timeout", help="On SIGTERM/Ctrl-C, seconds to let running and queued requests finish "
        "before cancelling them.")] = DRAIN_TIMEOUT,
    request_timeout: Annotated[float, typer.Option(
        "--request-timeout", help="Seconds a client has to send a request's headers, and the grace before its "
        "body must average 8 KiB/s; a stalled answer must be read at 8 KiB/s over each such period.")] = ServerConfig.request_timeout,
    timeout_keep_alive: Annotated[float, typer.Option(
        "--timeout-keep-alive", help="Seconds an idle connection stays open after an answer (behind a proxy "
        "that keeps connections open, make it longer than the proxy's).")] = ServerConfig.keep_alive_timeout,
    served_model_name: Annotated[list[str] | None, typer.Option(
        "--served-model-name", metavar="<name>", help="The model's name in the API: its id in answers, listed in "
        "/v1/models, and the 'model' a request must give (or none); repeatable: the first is the id, the others are "
        "names it also answers to, listed after it, as vLLM's (default: the --model name).")] = None,
    model: ModelOpt = None, vae: VaeOpt = None, lora: LoraOpt = None, lora_weight: LoraWeightOpt = None,
    runtime: RuntimeOptions = None,
    quiet: QuietOpt = False,
):
    """Serve the model over HTTP with the OpenAI API (chat completions, responses, image generations, models)."""
    C = common
    C.setup(False, quiet)
    lora = C.adapters(lora, lora_weight)  # (a weight per adapter: checked before anything else)
    from ..errors import UsageError, rename_options, short
    check_port(port)  # (bind_socket checks it again, for a Python caller)
    if not 0.001 <= max_body_mb <= 4096:  # (in MiB: ServerConfig's bytes are checked with the rest)
        raise UsageError(f"--max-body-mb must be between 0.001 and 4096, got {max_body_mb}")
    if not 0 <= drain_timeout <= 86400:
        raise UsageError(f"--drain-timeout must be between 0 and 86400 seconds, got {drain_timeout}")
    names = list(dict.fromkeys(served_model_name or ()))
    bad = next((n for n in names if not n.strip() or not n.isprintable()), None)
    if bad is not None:
        raise UsageError(f"--served-model-name must be a non-empty printable name, got '{short(bad)}'")
    # the limits are ServerConfig's checks (a Python caller's too), in the options' names
    config = ServerConfig(max_queue=max_queue, parallel=parallel, max_num_batched_tokens=max_num_batched_tokens,
                          max_tokens=max_tokens, max_n=max_n, max_steps=max_steps,
                          max_size=max_size, max_body_bytes=int(max_body_mb * 1024 * 1024),
                          max_image_pixels=max_input_pixels, request_timeout=request_timeout,
                          keep_alive_timeout=timeout_keep_alive)
    try:
        config.validate()
    except UsageError as e:
        raise UsageError(rename_options(str(e), ServerConfig.OPTIONS)) from None
    # before the model loads; its message names the options already (renamed, it said "--parallel answers")
    config.check_attention(runtime.attn if runtime is not None else "sdpa")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UsageError(f"showo2 serve needs FastAPI and uvicorn: pip install fastapi uvicorn ({e.name} is "
                         "missing)") from None
    from .. import serve as S

    key = S.api_key_from(api_key)
    origins = S.origins_from(allow_origin)
    sock = S.bind_socket(host, port)  # a busy port fails before the model loads
    if not _is_loopback(host) and not key:  # (not before an address it cannot listen on: one error line)
        C.notice(f"warning: listening on {host} without an API key: anyone who can reach it can use the "
                 f"model (set --api-key or {S.API_KEY_ENV})")
    try:
        name = C.model_name(model)
        bundle = C.load_model(name, runtime, vae=vae, lora=lora)
        config = dataclasses.replace(config, model_id=names[0] if names else name, model_aliases=tuple(names[1:]),
                                     api_key=key, allow_origins=origins)
        # the model loaded, and the names clients give it (a log said only 'gpt-4o', not which model that was)
        shown = f"'{name}'" + (" as " + ", ".join(f"'{n}'" for n in names) if names and names != [name] else "")
        S.serve(bundle, config, sock, drain_timeout=drain_timeout, log_level="warning" if quiet else "info",
                on_ready=lambda url: C.notice(f"serving {shown} on {url} (OpenAI API under {url}/v1)"))
    finally:
        sock.close()
