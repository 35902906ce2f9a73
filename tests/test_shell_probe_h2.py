"""One shell: an option means the same thing in every command that takes it, and every command
answers the same class of failure with the same exit code and error envelope (in-process)."""

from __future__ import annotations

import json
from collections import defaultdict
from enum import Enum
from pathlib import Path

import pytest
import typer.main

from showo2_cli.cli import app, main

DEMO = Path(__file__).resolve().parents[1] / "src" / "showo2_cli" / "assets" / "demo"


def _commands() -> dict:
    return dict(typer.main.get_command(app).commands)


def _aspects(param) -> dict:
    """What an option is, aspect by aspect: its names, type (an enum's choices), default, range, help."""
    annotation = param.type_descriptor.annotation
    choices = None
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        choices = tuple(m.value for m in annotation)
    default = getattr(param.default, "value", param.default)
    return {"names": (tuple(sorted(param.opts)), tuple(param.secondary_opts)),
            "type": (choices or getattr(annotation, "__name__", repr(annotation)), param.multiple, param.is_flag,
                     getattr(param.type_descriptor.parameter_info, "case_sensitive", True)),
            "default": default, "range": (param.min, param.max), "help": param.help}


#: deliberate, documented differences: option -> the aspects that differ between commands, and why
DELIBERATE = {
    "--output": {"type", "help"},  # each command names what it writes; a file name is text (a trailing / is seen)
    "--dtype": {"type", "default", "help"},  # encode/decode fp32 (exact latents); convert keep; init no auto
    "--frames": {"default", "range", "help"},  # sampled (caption, chat), generated (t2v, i2v), read (encode)
    "--seed": {"default", "help"},  # what it seeds: sampling, noise, a posterior sample, new weights
    "--fps": {"default", "help"},  # decode keeps the source's rate
    "--size": {"help"},  # encode: 432 for a VAE alone
    "--batch-size": {"default"},  # videos one at a time
    "--max-steps": {"default", "help"},  # serve: a request limit; train: the run length
    "--mask": {"help"},  # chat: the first turn's
    "--template": {"help"},  # chat: the first turn's
}


def test_every_shared_option_means_the_same_in_every_command():
    by_name: dict[str, dict[str, dict]] = defaultdict(dict)
    for command, cmd in _commands().items():
        for param in cmd.params:
            if param.param_type_name == "option":
                by_name[max(param.opts, key=len)][command] = _aspects(param)
    drift = []
    for name, per_command in sorted(by_name.items()):
        for aspect in ("names", "type", "default", "range", "help"):
            if aspect in DELIBERATE.get(name, ()):
                continue
            seen = defaultdict(list)
            for command, aspects in per_command.items():
                seen[repr(aspects[aspect])].append(command)
            if len(seen) > 1:
                drift.append(f"{name} {aspect}: " + " | ".join(f"{','.join(c)}={v}" for v, c in seen.items()))
    assert drift == [], "\n".join(drift)


def test_model_commands_share_the_model_options():
    """Every command that loads a model takes --vae (chat and serve did not), --device, --dtype, --quiet;
    the runtime options (README "Memory and speed options") go with --lora on every resident model."""
    commands = _commands()
    options = {name: {o for p in cmd.params for o in p.opts} for name, cmd in commands.items()}
    model_commands = sorted(name for name, opts in options.items() if "--model" in opts)
    assert model_commands == ["caption", "chat", "decode", "encode", "i2v", "info", "serve", "t2i", "t2v"]
    for name in model_commands:
        assert {"--vae", "--quiet"} <= options[name], name
        if name != "info":  # info reads the files, runs nothing
            assert {"--device", "--dtype", "--vae-tiling"} <= options[name], name
    for name in ("caption", "chat", "serve", "t2i", "t2v", "i2v"):
        assert {"--attn", "--compile", "--quantize", "--lora"} <= options[name], name


@pytest.mark.parametrize("command", ["chat", "serve"])
def test_chat_and_serve_take_vae(command, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SHOWO2_MODEL", raising=False)
    args = [command, "--vae", str(tmp_path / "no-vae"), "--quiet", "--model", str(DEMO)]
    code = main(args + (["--port", "0"] if command == "serve" else []))
    out, err = capsys.readouterr()
    assert code == 4 and out == ""
    assert err == f"showo2: error: VAE '{tmp_path / 'no-vae'}' does not exist\n"


def test_chat_with_a_given_vae_runs(capsys, monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no question: the chat ends at once
    assert main(["chat", "--vae", str(DEMO / "vae"), "--model", str(DEMO), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", ["bfloat16", "BF16", "Float32", "fp32"])
def test_dtype_takes_every_name_of_the_dtype_table(name, tmp_path, capsys):
    """--dtype took only auto|fp32|bf16|fp16 in the model commands, while init, convert and the
    Python API take bfloat16/float32/... in any case (options.DTYPES, the one dtype table)."""
    from PIL import Image
    from safetensors.numpy import load_file

    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (200, 40, 10)).save(image)
    args = ["encode", str(image), "--model", str(DEMO), "--quiet", "--size", "32"]
    assert main([*args, "-o", str(tmp_path / "ref.safetensors"), "--dtype", "fp32"]) == 0
    assert main([*args, "-o", str(tmp_path / "x.safetensors"), "--dtype", name]) == 0
    capsys.readouterr()
    ref, got = load_file(tmp_path / "ref.safetensors"), load_file(tmp_path / "x.safetensors")
    if name.lower() in ("fp32", "float32"):  # the same dtype: the same latents
        assert all((ref[k] == got[k]).all() for k in ref)
    else:  # bf16 ran: close to fp32, not equal
        assert all(abs(ref[k] - got[k]).max() < 0.1 for k in ref)
        assert any((ref[k] != got[k]).any() for k in ref)


# ---- one failure of each class per command: the README's exit-code table ---------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("shell")
    Image.new("RGB", (32, 32), "red").save(d / "a.png")
    for name in ("exists.png", "exists.mp4", "exists.safetensors"):
        (d / name).write_bytes(b"x")
    (d / "exists").mkdir()
    (d / "exists" / "f").write_text("x")
    (d / "bad.toml").write_text("nonsense = [\n")
    return d


USAGE, INPUT, MODEL, OUTPUT = 2, 3, 4, 5
KINDS = {2: "usage", 3: "input", 4: "model", 5: "output"}
# {d}: the fixture folder; every case fails before a model loads
CASES = [
    ("caption", USAGE, "{d}/a.png --temperature -1"), ("caption", INPUT, "{d}/missing.png"),
    ("caption", MODEL, "{d}/a.png -m {d}/none"),
    ("t2i", USAGE, "x --steps 1 -o {d}/o.png"), ("t2i", INPUT, "--prompts-file {d}/none.txt -o {d}/o.png"),
    ("t2i", MODEL, "x -m {d}/none -o {d}/o.png"), ("t2i", OUTPUT, "x -o {d}/exists.png"),
    ("t2v", USAGE, "x --fps 0 -o {d}/o.mp4"), ("t2v", INPUT, "x --noise {d}/none.safetensors -o {d}/o.mp4"),
    ("t2v", MODEL, "x -m {d}/none -o {d}/o.mp4"), ("t2v", OUTPUT, "x -o {d}/exists.mp4"),
    ("i2v", USAGE, "{d}/a.png x --frames 0 -o {d}/o.mp4"), ("i2v", INPUT, "{d}/missing.png x -o {d}/o.mp4"),
    ("i2v", MODEL, "{d}/a.png x -m {d}/none -o {d}/o.mp4"), ("i2v", OUTPUT, "{d}/a.png x -o {d}/exists.mp4"),
    ("encode", USAGE, "{d}/a.png --dtype int3"), ("encode", INPUT, "{d}/missing.png"),
    ("encode", MODEL, "{d}/a.png -m {d}/none -o {d}/l.safetensors"),
    ("encode", OUTPUT, "{d}/a.png -o {d}/exists.safetensors"),
    ("decode", USAGE, "{d}/exists.safetensors --fps 0"), ("decode", INPUT, "{d}/none.safetensors"),
    ("decode", OUTPUT, "{d}/exists.safetensors -o {d}/exists.png"),
    ("info", USAGE, "demo --bogus"), ("info", MODEL, "{d}/none"),
    ("convert", USAGE, "demo -o {d}/c --dtype int3"), ("convert", MODEL, "{d}/none -o {d}/c"),
    ("convert", OUTPUT, "demo -o {d}/exists"),
    ("init", USAGE, "--spec nope -o {d}/i"), ("init", OUTPUT, "-o {d}/exists"),
    ("models", USAGE, "--bogus"), ("pull", USAGE, "--bogus"), ("pull", MODEL, "{d}/none"),
    ("train", USAGE, "{d}/bad.toml"),
    ("chat", USAGE, "--temperature -1"), ("chat", INPUT, "{d}/missing.png"), ("chat", MODEL, "-m {d}/none"),
    ("serve", USAGE, "--port 99999"), ("serve", MODEL, "-m {d}/none --port 0"),
]
JSON_COMMANDS = {"caption", "t2i", "t2v", "i2v", "encode", "decode", "info", "convert", "init", "models", "pull",
                 "train"}


@pytest.mark.parametrize("command,code,args", CASES, ids=[f"{c}-{KINDS[k]}" for c, k, _ in CASES])
def test_each_failure_class_has_its_exit_code_in_every_command(command, code, args, files, capsys, monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    argv = [command, *args.format(d=files).split()]
    before = sorted(p.name for p in files.iterdir())
    for json_mode in ((False, True) if command in JSON_COMMANDS else (False,)):
        assert main(argv + (["--json"] if json_mode else [])) == code
        out, err = capsys.readouterr()
        assert err.startswith("showo2: error: ") and err.count("\n") == 1, err
        if json_mode:  # the error, and nothing else, on stdout
            assert json.loads(out) == {"error": {"kind": KINDS[code], "message": err[15:-1], "exit_code": code}}
        else:
            assert out == ""
    assert sorted(p.name for p in files.iterdir()) == before  # nothing left behind


def test_pull_demo_is_a_model_already_here(capsys):
    """`showo2 models` lists demo as it lists every variant; `showo2 pull demo` said "'demo' is
    neither a known variant nor a Hugging Face repo id" (exit 4). It has nothing to download."""
    assert main(["pull", "demo", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert err == "" and result["repo"] is None and result["downloaded"] == [] and result["missing"] == []
    assert Path(result["path"]) == DEMO.resolve() and Path(result["pieces"]["VAE"]) == DEMO.resolve() / "vae"


def test_pull_of_a_local_folder_named_like_a_repo_is_that_folder(tmp_path, monkeypatch, capsys):
    """Probe AI: every command loads a folder in the current directory before a Hub repo of the same
    name (hub.is_local), but `showo2 pull acme/showo2-tiny` asked the Hub for the repo (here: not
    reachable, exit 4 'not in the Hugging Face cache'), and `pull ./folder` was 'neither a known
    variant nor a Hugging Face repo id'. Both are the folder now, with nothing to download."""
    import shutil

    import huggingface_hub.constants as C

    monkeypatch.setattr(C, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: any request fails
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
    shutil.copytree(DEMO, tmp_path / "acme" / "showo2-tiny")
    monkeypatch.chdir(tmp_path)
    for name in ("acme/showo2-tiny", "./acme/showo2-tiny"):
        assert main(["pull", name, "--json"]) == 0
        out, err = capsys.readouterr()
        result = json.loads(out)
        assert err == "" and result["repo"] is None and result["downloaded"] == [] and result["missing"] == []
        assert Path(result["path"]) == tmp_path / "acme" / "showo2-tiny"
    assert main(["pull", "acme/showo2-tiny", "--force-download"]) == 0  # as api.load(force_download=True) does
    assert capsys.readouterr().out.startswith("acme/showo2-tiny: a local folder, nothing to download")
    assert not (tmp_path / "cache").exists()


def test_encode_with_a_model_and_a_vae_keeps_the_models_resolution(tmp_path, capsys):
    """--vae replaces the model's VAE and nothing else (as in t2i): `encode -m demo --vae V` encoded
    at 432 px, the size for a VAE alone, instead of the demo's 64."""
    from PIL import Image

    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), "red").save(image)
    for extra, side in (([], 64), (["--vae", str(DEMO / "vae")], 64)):
        out = tmp_path / f"{len(extra)}.safetensors"
        assert main(["encode", str(image), "--model", str(DEMO), "-o", str(out), "--json", *extra]) == 0
        result = json.loads(capsys.readouterr().out)
        assert (result["height"], result["width"], result["shape"][2:]) == (side, side, [side // 8, side // 8])


@pytest.mark.parametrize("command", ["encode", "decode", "t2i"])
def test_a_missing_vae_is_one_message_in_every_command(command, tmp_path, capsys):
    """encode and decode load a VAE alone: a missing --vae said "PATH: VAE not found (no such file or
    folder)" there, "VAE 'PATH' does not exist" in every other command."""
    from PIL import Image

    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16), "blue").save(image)
    latents = tmp_path / "z.safetensors"
    assert main(["encode", str(image), "--model", str(DEMO), "-o", str(latents), "--quiet"]) == 0
    first = {"encode": image, "decode": latents, "t2i": "x"}[command]
    out = tmp_path / ("o.safetensors" if command == "encode" else "o.png")
    assert main([command, str(first), "--vae", str(tmp_path / "none"), "-o", str(out), "--quiet"]) == 4
    assert capsys.readouterr().err == f"showo2: error: VAE '{tmp_path / 'none'}' does not exist\n"
    assert not out.exists()


def test_info_defaults_to_the_model_the_other_commands_use(capsys, monkeypatch):
    """Every model command takes $SHOWO2_MODEL (then the cached 1.5B, then the demo) when no model
    is named; `showo2 info` alone was a usage error (exit 2: missing argument)."""
    monkeypatch.setenv("SHOWO2_MODEL", str(DEMO))
    assert main(["info", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == str(DEMO) and result["spec"]["hidden_size"] == 128
    # and -m/--model names it as in every other model command (the notice says to pass --model)
    assert main(["info", "-m", "demo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "demo"
    assert main(["info", "demo", "--model", str(DEMO)]) == 2
    assert "two models given" in capsys.readouterr().err


@pytest.mark.parametrize("option,limit", [("--fps", "0.5 to 240"), ("--size", "at most 4096")])
def test_help_states_the_limits_every_command_enforces(option, limit):
    """decode's --fps and encode's --size enforce the limits t2v's and t2i's do, but their help
    did not say so."""
    helps = {name: p.help for name, cmd in _commands().items() for p in cmd.params if option in p.opts}
    assert len(helps) >= 3 and all(limit in text for text in helps.values()), helps
