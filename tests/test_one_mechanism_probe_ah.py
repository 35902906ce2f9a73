"""One of each mechanism (probe AH): where two copies of a check had drifted apart, the one
mechanism left gives every caller the same answer."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from showo2_cli.errors import InputError, UsageError
from showo2_cli.pipelines import latents as latents_module
from showo2_cli.pipelines.latents import load_latents
from showo2_cli.saving import load_noise, read_prompts
from showo2_cli.training.config import load_config


def _both(path) -> tuple[str, str]:
    """The messages of the noise reader and of the latents reader for the same file, the path
    shown as PATH and the word each uses for its tensor as X."""
    with pytest.raises(InputError) as noise:
        load_noise(path)
    with pytest.raises(InputError) as latents:
        load_latents(path)
    return (str(noise.value).replace(str(path), "PATH").replace("noise", "X"),
            str(latents.value).replace(str(path), "PATH").replace("latents", "X"))


def test_noise_and_latents_files_are_judged_by_one_reader(tmp_path, monkeypatch):
    """`--noise` and `decode`'s latents are the same kind of file (one float tensor of a small
    safetensors file), read by two near-copies that had drifted: a garbage noise file said
    "not a safetensors file or truncated" without the reason the latents reader gives, an int64
    one "must be floating-point values, got I64" where latents say "floating point (float32, ...),
    got int64", and a size over the limit was said two ways. One reader now says each alike."""
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_text("hello, this is not a tensor file")
    noise_msg, latents_msg = _both(garbage)
    assert noise_msg == latents_msg
    assert noise_msg == ("cannot read X 'PATH': not a safetensors file or truncated "
                         "(Error while deserializing header: header too large)")

    for name, read in (("noise", load_noise), ("latents", load_latents)):  # each named as its reader looks for it
        path = tmp_path / f"{name}-int.safetensors"
        save_file({name: torch.zeros(16, 2, 4, 4, dtype=torch.int64)}, str(path))
        with pytest.raises(InputError) as exc:
            read(path)
        assert str(exc.value) == (f"'{path}': {name} must be floating point (float32, float16, bfloat16 or "
                                  "float64), got int64")

    both = tmp_path / "both.safetensors"  # one tensor named for each reader: both read it
    save_file({"noise": torch.ones(16, 2, 4, 4), "latents": torch.ones(16, 2, 4, 4)}, str(both))
    assert load_noise(both).shape == (16, 2, 4, 4)
    assert load_latents(both)[0].shape == (16, 2, 4, 4)
    monkeypatch.setattr("showo2_cli.saving.MAX_NOISE_ELEMENTS", 100)  # 512 values: over either limit
    monkeypatch.setattr(latents_module, "MAX_LATENT_ELEMENTS", 100)
    noise_msg, latents_msg = _both(both)
    assert noise_msg == latents_msg == ("'PATH': the header declares X of shape (16, 2, 4, 4), which this "
                                        f"file ({both.stat().st_size} bytes) cannot hold or no model could decode")


def test_a_small_file_read_whole_is_judged_once_and_alike(tmp_path, monkeypatch):
    """The prompts file was judged twice (`check_input_file`, then the bounded reader), and a
    training config a third way ("config 'x' does not exist", a URL "does not exist" too), while
    the bounded reader said "no such file" and did not say that URLs are not fetched. The one
    bounded reader now judges each: a URL is named as one, a missing file or a folder is said as
    for every other input, and an empty prompts file is a file that holds no prompt, as one of
    blank lines is."""
    empty, blank = tmp_path / "empty.txt", tmp_path / "blank.txt"
    empty.write_bytes(b"")
    blank.write_text("\n  \n\n")
    for path in (empty, blank):
        with pytest.raises(InputError) as exc:
            read_prompts(None, path)
        assert str(exc.value) == f"prompts file '{path}' holds no prompt"

    for read, what, error in ((lambda p: read_prompts(None, p), "prompts file", InputError),
                              (load_config, "config", UsageError)):
        with pytest.raises(error) as exc:
            read("https://example.com/run.toml")
        assert str(exc.value) == (f"cannot read {what} https://example.com/run.toml: URLs are not fetched; "
                                  "download the file and pass its path")
        with pytest.raises(error) as exc:
            read(tmp_path / "missing.toml")
        assert str(exc.value) == f"cannot read {what} '{tmp_path / 'missing.toml'}': no such file"
        (tmp_path / "folder.toml").mkdir(exist_ok=True)
        with pytest.raises(error) as exc:
            read(tmp_path / "folder.toml")
        assert str(exc.value) == f"cannot read {what} '{tmp_path / 'folder.toml'}': is a directory, not a file"


def test_each_generation_default_has_one_source():
    """The default video length (17), frame rate (8) and sampler (euler) were written again in
    each command's signature, the options, the pipeline, the savers and the video reader: a
    default changed in one place would have left the others behind. Each is now read from its one
    constant in :mod:`showo2_cli.options`."""
    import inspect

    from showo2_cli import options, sampling
    from showo2_cli.cli import generate

    assert (options.DEFAULT_VIDEO_FRAMES, options.DEFAULT_FPS, options.DEFAULT_SAMPLER) == (17, 8.0, "euler")
    for command in (generate.t2v, generate.i2v):
        params = inspect.signature(command).parameters
        assert params["frames"].default == options.DEFAULT_VIDEO_FRAMES
        assert params["fps"].default == options.DEFAULT_FPS
    for command in (generate.t2i, generate.t2v, generate.i2v):
        assert inspect.signature(command).parameters["sampler"].default == options.DEFAULT_SAMPLER
    assert options.GenerateOptions().frames == options.DEFAULT_VIDEO_FRAMES
    assert options.GenerateOptions().method == options.DEFAULT_SAMPLER
    assert inspect.signature(sampling.sample).parameters["method"].default == options.DEFAULT_SAMPLER


def test_the_answer_length_default_has_one_source():
    """300 tokens an answer was written in `caption`'s and `chat`'s signatures, CaptionOptions,
    TextSampling, Showo2Pipeline.caption and the server's default max_tokens."""
    import inspect

    from showo2_cli import options
    from showo2_cli.cli.chat import chat
    from showo2_cli.cli.understand import caption
    from showo2_cli.pipeline import Showo2Pipeline

    assert options.DEFAULT_MAX_NEW_TOKENS == 300
    for function in (caption, chat):
        assert inspect.signature(function).parameters["max_new_tokens"].default == options.DEFAULT_MAX_NEW_TOKENS
    # the pipeline's default is None, as transformers' generate's (a generation_config's value may
    # then apply, probe KE), which the call reads as the one default
    assert inspect.signature(Showo2Pipeline.caption).parameters["max_new_tokens"].default is None
    assert "max_new_tokens = DEFAULT_MAX_NEW_TOKENS" in inspect.getsource(Showo2Pipeline.caption)
    assert options.CaptionOptions().max_new_tokens == options.TextSampling().max_new_tokens == 300
    from showo2_cli.serve_config import ServerConfig

    assert ServerConfig().default_max_tokens == options.DEFAULT_MAX_NEW_TOKENS


def test_an_exception_that_says_nothing_is_still_a_one_line_error(monkeypatch):
    """Five places wrote their own "first line of the exception" (`str(e).splitlines()[0]`) beside
    the project's `error_detail`; the tokenizer's copy had lost the fallback, so a library error
    with an empty message (an `AssertionError()` inside transformers) escaped as `IndexError: list
    index out of range`, a traceback, instead of the tokenizer's one-line ModelError. Each now
    uses `error_detail` (moved to `errors`, beside `one_line`), which names the type instead."""
    from pathlib import Path

    import transformers

    import showo2_cli
    from showo2_cli.errors import ModelError
    from showo2_cli.tokenizer import load_tokenizer

    def says_nothing(*args, **kwargs):
        raise AssertionError()

    monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "from_pretrained", says_nothing)
    folder = Path(showo2_cli.__file__).parent / "assets" / "demo"
    with pytest.raises(ModelError) as exc:
        load_tokenizer(folder)
    assert str(exc.value) == f"cannot load the tokenizer in '{folder}': AssertionError"
    from showo2_cli.errors import error_detail

    assert error_detail(ValueError("first\n  second")) == "first second"


def test_the_servers_limits_have_one_source():
    """`showo2 serve`'s option defaults (--max-queue 16, --max-tokens 2048, --max-n 4, --max-steps
    200, --max-size 1024, --max-body-mb 20, --max-input-pixels 4096*4096, --drain-timeout 60) were
    written again beside ServerConfig's (and the drain timeout twice more in serve/app). The CLI,
    which must not import the server (FastAPI) to show --help, now reads them from ServerConfig,
    moved to the torch-free options beside the other options objects."""
    import inspect

    from showo2_cli import serve
    from showo2_cli.cli.serve import serve as serve_command
    from showo2_cli.serve.app import server_for
    from showo2_cli.serve_config import DRAIN_TIMEOUT, ServerConfig

    assert serve.ServerConfig is ServerConfig
    params = inspect.signature(serve_command).parameters
    config = ServerConfig()
    for option, field in (("max_queue", "max_queue"), ("max_tokens", "max_tokens"), ("max_n", "max_n"),
                          ("max_steps", "max_steps"), ("max_size", "max_size"),
                          ("max_input_pixels", "max_image_pixels")):
        assert params[option].default == getattr(config, field), option
    assert params["max_body_mb"].default * 2**20 == config.max_body_bytes == 20 * 2**20
    assert params["drain_timeout"].default == DRAIN_TIMEOUT == 60.0
    assert inspect.signature(serve.serve).parameters["drain_timeout"].default == DRAIN_TIMEOUT
    assert inspect.signature(server_for).parameters["drain_timeout"].default == DRAIN_TIMEOUT


def test_the_largest_image_side_has_one_source():
    """4096 pixels a side was media.geometry.MAX_SIDE (parse_size, training's resolution check),
    specs.MAX_RESOLUTION (a spec's resolutions), CaptionOptions' --size check, serve's --max-size
    range and the --size help of t2i/t2v/i2v and encode. One options.MAX_SIDE now serves each."""
    from showo2_cli import media as M
    from showo2_cli.options import MAX_SIDE, CaptionOptions
    from showo2_cli.specs import ModelSpec

    assert MAX_SIDE == M.MAX_SIDE == 4096
    assert M.parse_size(str(MAX_SIDE)) == (MAX_SIDE, MAX_SIDE)
    with pytest.raises(UsageError, match=f"at most {MAX_SIDE}x{MAX_SIDE}"):
        M.parse_size(str(MAX_SIDE + 16))
    CaptionOptions(size=MAX_SIDE).validate()
    with pytest.raises(UsageError, match="--size"):
        CaptionOptions(size=MAX_SIDE + 16).validate()
    with pytest.raises(UsageError, match=f"a resolution of {MAX_SIDE + 16} pixels is over {MAX_SIDE}"):
        ModelSpec(name="big", resolution=MAX_SIDE + 16).validate()
