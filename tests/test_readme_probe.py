"""README claims a user copies verbatim (probe C): its command table and its Python snippets run."""

from __future__ import annotations

import re
import textwrap

from conftest import REPO

README = (REPO / "README.md").read_text()


def _indented_block_after(marker: str) -> str:
    """The first 4-space indented block after the line holding ``marker``, dedented."""
    rest = README[README.index(marker):].split("\n")[1:]
    while not rest[0].strip():
        rest = rest[1:]
    block = []
    for line in rest:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def test_readme_command_table_names_every_command():
    import typer

    from showo2_cli.cli import app

    commands = {name for name, c in typer.main.get_command(app).commands.items() if not c.hidden}  # not `help`
    section = README[README.index("## What it does"):README.index("### Generation")]
    listed = set(re.findall(r"^\| `showo2 ([a-z0-9]+)", section, flags=re.M))
    assert listed == commands


def test_readme_conversation_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    """The chat section's Python lines, pasted into a fresh interpreter (they named ``load``
    without importing it: a NameError)."""
    from PIL import Image, ImageDraw

    snippet = _indented_block_after("are unreliable. In Python:")
    assert "Conversation(load(" in snippet
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(255, 0, 0))
    image.save(tmp_path / "circle.png")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # a fresh namespace: nothing imported
    turns = namespace["chat"].to_json()["turns"]
    assert [t["question"] for t in turns] == ["What color is the shape?", "What shape is it?", "Describe it."]
    assert turns[0]["answer"] == "red"
    assert turns[0]["media"][0]["source"] == "circle.png"


def test_sampling_options_of_a_greedy_decode_are_named():
    from showo2_cli.options import TextSampling

    assert TextSampling(top_k=5, seed=2).unused_sampling_options() == ["--top-k", "--seed"]
    assert TextSampling(temperature=1e-6, top_p=0.5, min_p=0.1).unused_sampling_options() == ["--top-p", "--min-p"]
    assert TextSampling(temperature=0.7, top_k=5, seed=2).unused_sampling_options() == []
    assert TextSampling(repetition_penalty=1.1).unused_sampling_options() == []  # applies to greedy too


def test_caption_says_top_k_without_temperature_has_no_effect(tmp_path, capsys):
    """README: `--temperature`, `--top-k`, `--top-p`, `--min-p`, `--seed` to sample; alone, `--top-k`
    was silently ignored (the decode stayed greedy)."""
    from PIL import Image

    from showo2_cli.cli import main

    Image.new("RGB", (64, 64), "white").save(tmp_path / "white.png")
    args = ["caption", str(tmp_path / "white.png"), "--model", "demo", "--max-new-tokens", "4"]
    assert main([*args, "--top-k", "5", "--seed", "2"]) == 0
    greedy = capsys.readouterr()
    assert "--top-k, --seed have no effect without --temperature" in greedy.err
    assert main(args) == 0
    plain = capsys.readouterr()
    assert plain.out == greedy.out and "no effect" not in plain.err
    assert main([*args, "--top-k", "5", "--seed", "2", "--temperature", "0.7"]) == 0
    assert "no effect" not in capsys.readouterr().err


def test_convert_takes_what_readme_gives_it(tiny_model_dir, tmp_path, capsys):
    """README converts `demo` and a LoRA base (`showo2 convert demo --lora ...`); `--help` said SRC
    was an official checkpoint."""
    from safetensors.torch import load_file

    from showo2_cli.cli import main

    assert main(["convert", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "official checkpoint:" not in help_text and "showo2-format" in help_text
    assert main(["convert", str(tiny_model_dir), "-o", str(tmp_path / "copy"), "--quiet"]) == 0
    original = load_file(tiny_model_dir / "model.safetensors")
    copied = load_file(tmp_path / "copy" / "model.safetensors")
    assert original.keys() == copied.keys() and all(original[k].equal(copied[k]) for k in original)


def test_decode_names_every_format_it_writes(tmp_path, capsys):
    """decode writes .bmp, .mov and .mkv too; its --help and its refusal named only png/jpg/webp and
    mp4/webm/gif."""
    import torch

    from showo2_cli.cli import main
    from showo2_cli.pipelines.latents import save_latents

    latents = tmp_path / "z.safetensors"
    save_latents(latents, torch.zeros(16, 1, 2, 2), {})
    assert main(["decode", str(latents), "-o", str(tmp_path / "x.avi")]) == 2
    err = capsys.readouterr().err
    for ext in (".png", ".bmp", ".mp4", ".mov", ".mkv", ".gif"):
        assert ext in err
    assert main(["decode", "--help"]) == 0
    assert ".bmp" in capsys.readouterr().out
    assert main(["decode", str(latents), "-m", "demo", "-o", str(tmp_path / "x.bmp"), "--quiet"]) == 0
    assert (tmp_path / "x.bmp").stat().st_size > 0


def _command_lines(text: str) -> list[str]:
    """The shell lines of README's indented examples (4 spaces, not inside a fenced block)."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("    ") and not line.startswith("     "):
            lines.append(line.strip())
    return lines


def test_readme_commands_make_the_folders_they_write_into():
    """A command writes into an existing folder only (a missing one is exit 5, by design); the
    prompts-file example under accelerate wrote `-o out/img.png` on a fresh machine: exit 5."""
    checked = 0
    for line in _command_lines(README):
        for folder in re.findall(r"(?:^|\s)-o\s+([^\s/$]+)/\S+", line):
            checked += 1
            assert f"mkdir -p {folder} " in line, line
    assert checked


def test_recorded_keys_the_docs_name_are_written():
    """Every key README or CHANGELOG says an output records is one the code writes (probe A's
    CHANGELOG said tiled outputs record `vae_tile`; the code, probe B and README say `vae_tiles`)."""
    code = "\n".join(p.read_text() for d in ("src", "benchmarks") for p in (REPO / d).rglob("*.py"))
    named = set()
    for doc in ("README.md", "CHANGELOG.md"):
        text = (REPO / doc).read_text()
        named |= set(re.findall(r"\brecord(?:s|ed)?\b[^.;:`]{0,40}`([a-z][a-z0-9_]*)`", text))
    assert {"vae_tiles", "model_revision", "noise", "steps_done"} <= named
    missing = sorted(n for n in named if f'"{n}"' not in code and f"'{n}'" not in code)
    assert not missing, missing


def test_readme_layout_table_names_every_module():
    """The layout table of `src/showo2_cli/` names each of its modules and packages (probe DO: the
    morning's `hub_vae.py`, where every VAE a load reads is found, was missing from it)."""
    table = README[README.index("| module | owns |"):README.index("Benchmarks live in `benchmarks/`")]
    named = set(re.findall(r"`([a-z0-9_]+\.py)`", table)) | set(re.findall(r"^\| `([a-z0-9_]+/)` \|", table, re.M))
    src = REPO / "src" / "showo2_cli"
    present = {p.name for p in src.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    present |= {p.name + "/" for p in src.iterdir() if (p / "__init__.py").is_file()}
    assert present - named == set(), "modules the README's layout table does not name"
    anywhere = {p.name for p in src.rglob("*.py")} | present  # (a package's row names its modules)
    assert named - anywhere == set(), "names in the layout table that are no module"


def test_readme_states_the_latent_magnitude_limit_where_noise_and_decode_are_described():
    """Probe DA refused `--noise` and `decode` latents of magnitude over 1e4 (exit 3); the README said
    so for `--noise` ("as `decode` takes latents") but its `decode` paragraph did not (probe DO)."""
    from showo2_cli.pipelines.latents import MAX_LATENT_ABS

    text = " ".join(README.split())
    stated = re.findall(r"magnitude at most (\d+(?:\.\d+)?e\d+)", text)
    assert stated and {float(s) for s in stated} == {MAX_LATENT_ABS}
    start = text.index("`decode` takes such normalised latents from elsewhere")
    assert "magnitude at most" in text[start:text.index("a file without `showo2`", start)]


def test_readme_says_how_prompts_file_lines_are_read(tmp_path):
    """Probe DF left text prompts files' stripping and skipping of blank lines alone as "documented"
    (the official `splitlines()` keeps both); the README did not say it (probe DO). It does, and the
    reader does what it says; a JSON Lines record is taken exactly, spaces and all."""
    from showo2_cli.saving import read_prompts

    text = " ".join(README.split())
    assert "stripped of surrounding whitespace, blank lines skipped" in text
    lines = tmp_path / "p.txt"
    lines.write_bytes(b"  a red circle \r\n\r\n \t \n\ta blue square\n")
    assert read_prompts(None, lines) == ["a red circle", "a blue square"]
    records = tmp_path / "p.jsonl"
    records.write_text('{"prompt": " a red circle "}\n\n"a blue square"\n')
    assert read_prompts(None, records) == [" a red circle ", "a blue square"]


def test_the_default_models_notice_is_one_line_for_caption(tmp_path, monkeypatch, capsys):
    """"else the bundled demo, with a one-line notice saying which": `showo2 caption photo.png` (the
    README's second command on a fresh machine) printed it twice, once for its check before the
    load and once for the load (probe DO)."""
    import huggingface_hub.constants as C
    from PIL import Image

    from showo2_cli.cli import main

    monkeypatch.delenv("SHOWO2_MODEL", raising=False)
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hub"))  # no official model cached
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(image)
    assert main(["caption", str(image), "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count("using the bundled demo model") == 1, err


def test_readme_names_every_place_a_vae_is_looked_for():
    """The VAE lookup order names each cached repo `hub_vae.shared_vae` takes (probe DO: the cached
    diffusers repo's `vae/`, looked in after the Wan2.1 file, was not named)."""
    from showo2_cli.hub import WAN_VAE_DIFFUSERS_REPO, WAN_VAE_FILE, WAN_VAE_REPO

    text = " ".join(README.split())
    start = text.index("and the Wan2.1 VAE (`--vae PATH`, else")
    order = text[start:text.index("A missing piece is named", start)]
    assert f"`{WAN_VAE_REPO}`/`{WAN_VAE_FILE}` in the cache" in order
    assert f"the `vae/` of `{WAN_VAE_DIFFUSERS_REPO}` in the cache" in order
