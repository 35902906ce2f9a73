"""One shell: an option means the same thing in every command that takes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from showo2_cli.cli import main

DEMO = Path(__file__).resolve().parents[1] / "src" / "showo2_cli" / "assets" / "demo"


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
