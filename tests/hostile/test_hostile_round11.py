"""Hostile inputs, round eleven (probe AL): launch and ``SHOWO2_*`` variables set by hand. A
MASTER_PORT that is no port was an internal error (exit 1); WORLD_SIZE=2 with RANK=5, RANK=-1,
RANK unset or a WORLD_SIZE that is no number ran silently as one process (or as a share of the
run); ``SHOWO2_HUB_STALL_SECONDS`` of 0, -5 or nan was taken as the default. Each is now one line
naming the variable, exit 2, before anything is loaded or written. Each test fails on the code
before its fix."""

from __future__ import annotations

import pytest

from showo2_cli.cli import main
from showo2_cli.errors import UsageError
from showo2_cli.processes import launch_rendezvous, process_rank

LAUNCH = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_launch(monkeypatch):
    for name in LAUNCH:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SHOWO2_MODEL", raising=False)
    return monkeypatch


@pytest.mark.parametrize(("env", "says"), [
    ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK must be a whole number 0..1, got '5'"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK must be a whole number 0..1, got '-1'"),
    ({"WORLD_SIZE": "2", "RANK": "one"}, "RANK must be a whole number 0..1, got 'one'"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK is not"),
    ({"WORLD_SIZE": "abc", "RANK": "0"}, "WORLD_SIZE must be a whole number >= 1, got 'abc'"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be a whole number >= 1, got '0'"),
    ({"WORLD_SIZE": "2\r\nX", "RANK": "0"}, "WORLD_SIZE must be a whole number >= 1, got '2\\r\\nX'"),
])
def test_launch_variables_set_by_hand_are_refused_naming_the_variable(clean_launch, tmp_path, capsys, env, says):
    for k, v in env.items():
        clean_launch.setenv(k, v)
    with pytest.raises(UsageError, match=says.split(",")[0]):
        process_rank()
    out = tmp_path / "x.png"
    assert main(["t2i", "a red circle", "-n", "2", "-o", str(out), "--steps", "2", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a share of the run


def test_a_master_port_that_is_no_port_is_one_line_not_an_internal_error(clean_launch, tmp_path, capsys):
    clean_launch.setenv("WORLD_SIZE", "2")
    clean_launch.setenv("RANK", "0")  # process 0 says it at once (another waits for the launcher first)
    clean_launch.setenv("MASTER_ADDR", "127.0.0.1")
    for port in ("abc", "0", "65536", "-1"):
        clean_launch.setenv("MASTER_PORT", port)
        with pytest.raises(UsageError, match="MASTER_PORT must be a whole number 1..65535"):
            launch_rendezvous()
        assert main(["t2i", "a red circle", "-o", str(tmp_path / "x.png"), "--steps", "2"]) == 2  # was 1
        err = capsys.readouterr().err
        assert f"MASTER_PORT must be a whole number 1..65535, got '{port}'" in err and "internal" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_well_formed_launch_variables_still_give_the_rank(clean_launch):
    assert process_rank() == (0, 1)
    clean_launch.setenv("RANK", "-1")  # RANK alone (no WORLD_SIZE) is not a launch: ignored as before
    assert process_rank() == (0, 1)
    clean_launch.setenv("WORLD_SIZE", " 4 ")
    clean_launch.setenv("RANK", "3")
    assert process_rank() == (3, 4)
    assert not launch_rendezvous()  # no MASTER_ADDR: no rendezvous to join
    clean_launch.setenv("MASTER_ADDR", "127.0.0.1")
    clean_launch.setenv("MASTER_PORT", "29500")
    assert launch_rendezvous()


def test_local_rank_is_checked_where_it_picks_the_gpu(clean_launch, monkeypatch):
    import torch

    from showo2_cli import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    clean_launch.setenv("WORLD_SIZE", "2")
    clean_launch.setenv("RANK", "1")
    clean_launch.setenv("LOCAL_RANK", "1")
    assert runtime.pick_device("cuda") == "cuda:1"
    for bad, says in (("abc", "LOCAL_RANK must be a whole number >= 0, got 'abc'"),
                      ("2", "LOCAL_RANK=2 but this machine has 2 CUDA device")):
        clean_launch.setenv("LOCAL_RANK", bad)
        with pytest.raises(UsageError, match=says):  # was a ValueError / an invalid device ordinal
            runtime.pick_device("cuda")


@pytest.mark.parametrize("raw", ["0", "-5", "nan", "-inf", "soon"])
def test_a_hub_stall_limit_that_is_no_positive_number_names_the_variable(monkeypatch, raw):
    from showo2_cli.hub_download import stall_seconds

    monkeypatch.setenv("SHOWO2_HUB_STALL_SECONDS", raw)
    with pytest.raises(UsageError, match=f"SHOWO2_HUB_STALL_SECONDS must be a number of seconds > 0, got '{raw}'"):
        stall_seconds()  # 0, -5, nan were the default (120 s), silently
    monkeypatch.setenv("SHOWO2_HUB_STALL_SECONDS", " 2.5 ")
    assert stall_seconds() == 2.5
    monkeypatch.delenv("SHOWO2_HUB_STALL_SECONDS")
    assert stall_seconds() == 120.0


def test_a_bad_origins_variable_names_the_variable_not_the_option(monkeypatch):
    """``SHOWO2_ORIGINS='not a url'`` said "--allow-origin must be ..." (an option not given),
    and a tab in it reached the terminal raw."""
    from showo2_cli.serve import ORIGINS_ENV, origins_from

    monkeypatch.setenv(ORIGINS_ENV, "https://ok.example,http://a\tb")
    with pytest.raises(UsageError, match=r"^SHOWO2_ORIGINS must be \*, null or scheme://host\[:port\] \(no path\), "
                                         r"got 'http://a\\tb'$"):
        origins_from(None)
    with pytest.raises(UsageError, match="^--allow-origin must be"):
        origins_from(["not a url"])
