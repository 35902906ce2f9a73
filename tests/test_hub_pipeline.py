"""Downloads from a Hub (a real HTTP server on 127.0.0.1, never the internet), the
diffusers-shaped ``Showo2Pipeline``, and CPU offload through accelerate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PARITY_DIR, REPO, parity_weight_file, sigint_reaches_child
from local_hub import LocalHub
from showo2_cli.errors import ModelError

WAN_REPO, WAN_FILE = "Wan-AI/Wan2.1-T2V-14B", "Wan2.1_VAE.pth"


def official_repos(hub: LocalHub, tmp_path: Path, repo: str = "acme/show-o2-tiny") -> str:
    """The parity model laid out as the official repos are: the Show-o2 repo (config.json, a
    pickle AND a safetensors copy of the weights, a README), the Qwen repo (tokenizer, LLM config
    and weights that must not be fetched), the SigLIP config repo and the Wan VAE repo."""
    if not PARITY_DIR.is_dir():
        pytest.skip("no parity fixtures")
    model = PARITY_DIR / "model"
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(llm_model_path="acme/tiny-qwen", clip_pretrained_model_path="acme/tiny-siglip")
    weights = {f"pytorch_model.{fmt}": parity_weight_file(fmt, tmp_path / "weights") for fmt in ("bin", "safetensors")}
    hub.add(repo, {"config.json": json.dumps(cfg).encode(), **weights, "README.md": b"# tiny\n",
                   ".gitattributes": b"*.bin filter=lfs\n"})
    qwen = {p.name: p for p in (model / "llm").iterdir()}
    hub.add("acme/tiny-qwen", {**qwen, "model.safetensors": b"\0" * 50_000})
    hub.add("acme/tiny-siglip", {"config.json": model / "siglip" / "config.json", "model.safetensors": b"\0" * 50_000})
    vae = sorted((PARITY_DIR / "vae").glob("*.pth"))[0]
    hub.add(WAN_REPO, {WAN_FILE: vae, "diffusion_pytorch_model.safetensors": b"\0" * 50_000})
    return repo


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local Hub, and huggingface_hub pointed at it with an empty cache (env and constants:
    huggingface_hub reads the environment once, at import)."""
    import huggingface_hub.constants as C

    with LocalHub() as server:
        cache = tmp_path / "hf-cache"
        for k, v in {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("SHOWO2_VAE", raising=False)
        monkeypatch.setattr(C, "ENDPOINT", server.url)
        monkeypatch.setattr(C, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
        server.cache = cache
        yield server


def offline(monkeypatch):
    import huggingface_hub.constants as C

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)


# ---- which files ------------------------------------------------------------------------------

def test_file_selection_follows_the_loader():
    from showo2_cli.hub import model_files, tokenizer_repo_files, weight_files

    assert weight_files({"pytorch_model.bin", "pytorch_model.safetensors"}) == ["pytorch_model.safetensors"]
    sharded = {"diffusion_pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
               "pytorch_model-00002-of-00002.bin", "README.md"}
    assert weight_files(sharded) == ["diffusion_pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
                                     "pytorch_model-00002-of-00002.bin"]
    assert weight_files({"model.safetensors.index.json", "model-00001-of-00002.safetensors",
                         "model-00002-of-00002.safetensors", "pytorch_model.bin"})[0] == "model.safetensors.index.json"
    assert weight_files({"sub/model.safetensors"}) == []  # the root's weights only
    showo2 = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vae/config.json",
              "vae/diffusion_pytorch_model.safetensors", "README.md", "samples/x.png"]
    assert model_files(showo2, {}) == showo2[:6]
    official = ["config.json", "pytorch_model.bin", "llm/config.json", "llm/tokenizer.json", "llm/model.safetensors"]
    assert model_files(official, {"llm_model_path": "llm"}) == ["config.json", "pytorch_model.bin", "llm/config.json",
                                                                 "llm/tokenizer.json"]
    assert tokenizer_repo_files(["config.json", "model.safetensors", "merges.txt", "vocab.json", "tokenizer.json"]) == [
        "config.json", "tokenizer.json", "vocab.json", "merges.txt"]


def test_repo_ids_of_names():
    from showo2_cli.hub import repo_id_for

    assert repo_id_for("1.5b") == "showlab/show-o2-1.5B" and repo_id_for("7B") == "showlab/show-o2-7B"
    assert repo_id_for("acme/x") == "acme/x"
    assert repo_id_for("demo") is None and repo_id_for("./a/b") is None and repo_id_for("/a/b") is None


# ---- downloading ------------------------------------------------------------------------------

def test_pull_fetches_only_the_needed_files_with_progress_and_loads(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from showo2_cli.hub import pull
    from showo2_cli.loading import find_files, load

    repo = official_repos(hub, tmp_path)
    seen: list[tuple[str, int, int]] = []
    result = pull(repo, progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert result.downloaded == [repo, "acme/tiny-qwen", "acme/tiny-siglip", WAN_REPO] and result.missing == []
    fetched = sorted(hub.downloads())
    assert fetched == sorted([f"{repo}:config.json", f"{repo}:pytorch_model.safetensors", "acme/tiny-qwen:config.json",
                              "acme/tiny-qwen:special_tokens_map.json", "acme/tiny-qwen:tokenizer.json",
                              "acme/tiny-qwen:tokenizer_config.json", "acme/tiny-siglip:config.json",
                              f"{WAN_REPO}:{WAN_FILE}"])  # no pickle twin, no README, no LLM/SigLIP/14B weights
    phases = {p for p, _, _ in seen}
    assert phases == {f"downloading {r}" for r in result.downloaded}
    for phase in phases:
        last = [(d, t) for p, d, t in seen if p == phase][-1]
        assert last[0] == last[1] > 0  # each repo's bytes, counted to the end
    weights = [(d, t) for p, d, t in seen if p == f"downloading {repo}"]
    size = len(hub.repos[repo].files["pytorch_model.safetensors"])
    config = len(hub.repos[repo].files["config.json"])
    assert weights[-1][1] in (size, size + config)
    # each byte counted once: huggingface_hub reads a file in whole chunks (a set's weights may
    # span several), so every count is the config's bytes and whole chunks, or the end
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    assert all(done in (0, config, size, size + config) or (done % chunk in (0, config) and done < size + config)
               for done, _ in weights), [done for done, _ in weights]

    # every piece comes from the cache now: loading makes no request, even offline
    hub.requests.clear()
    offline(monkeypatch)
    files = find_files(repo)
    assert files.weights[0].name == "pytorch_model.safetensors" and files.vae.name == WAN_FILE
    assert files.tokenizer is not None and files.siglip_config is not None and not files.missing
    model = load(repo)
    assert model.spec.hidden_size > 0 and model.vae is not None
    assert hub.requests == []


def test_load_downloads_a_missing_model_when_online_and_not_offline(hub, tmp_path, monkeypatch):
    from showo2_cli.loading import load

    src = tmp_path / "m"
    from showo2_cli.loading import init_model

    init_model("tiny", src, seed=0, vae_base_dim=4)
    hub.add_folder("acme/showo2-tiny", src)
    model = load("acme/showo2-tiny")  # a showo2-format repo carries its tokenizer and VAE
    assert model.vae is not None and model.tokenizer is not None
    assert sorted(hub.downloads()) == sorted(f"acme/showo2-tiny:{p.relative_to(src).as_posix()}"
                                             for p in src.rglob("*") if p.is_file())
    hub.requests.clear()
    load("acme/showo2-tiny")
    assert hub.requests == []


def test_a_revision_in_the_name_pins_the_model(hub, tmp_path, monkeypatch):
    """``owner/name@<commit>`` loads that version while ``main`` moves on; cached, it loads offline."""
    import torch

    from showo2_cli.hub import pull, split_revision
    from showo2_cli.loading import init_model, load

    first, second = tmp_path / "v1", tmp_path / "v2"
    init_model("tiny", first, seed=0, vae_base_dim=4)
    init_model("tiny", second, seed=1, vae_base_dim=4)
    old = hub.add_folder("acme/pinned", first).sha
    hub.add_folder("acme/pinned", second)  # main moves on

    def weight(model):
        return model.network.state_dict()["showo.model.embed_tokens.weight"]

    v1, v2 = weight(load(first)), weight(load(second))
    assert not torch.equal(v1, v2)
    result = pull(f"acme/pinned@{old}")
    assert result.downloaded == [f"acme/pinned@{old}"] and old in str(result.path)
    assert torch.equal(weight(load(f"acme/pinned@{old}")), v1)
    assert torch.equal(weight(load("acme/pinned")), v2)  # no revision: main
    from showo2_cli import Showo2Pipeline

    assert torch.equal(weight(Showo2Pipeline.from_pretrained("acme/pinned", revision=old).model), v1)
    for name, rev in (("demo", "main"), (f"acme/pinned@{old}", "main"), ("acme/pinned", "a b")):
        with pytest.raises(ValueError, match="revision"):
            Showo2Pipeline.from_pretrained(name, revision=rev)
    offline(monkeypatch)
    hub.requests.clear()
    assert torch.equal(weight(load(f"acme/pinned@{old}")), v1) and hub.requests == []
    with pytest.raises(ModelError, match="not in the Hugging Face cache"):
        load("acme/pinned@0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    import huggingface_hub.constants as C

    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelError, match="no revision 'nope'"):
        pull("acme/pinned@nope")
    assert split_revision("owner/x@v1.0") == ("owner/x", "v1.0")
    assert split_revision("1.5B@refs/pr/3") == ("1.5B", "refs/pr/3")
    for name in ("./folder@x", "owner/x@", "owner/x@../y", "a@b@c"):
        assert split_revision(name) == (name, None)


def test_local_files_only_never_downloads(hub, tmp_path):
    from showo2_cli import Showo2Pipeline
    from showo2_cli.loading import init_model, load

    src = tmp_path / "m"
    init_model("tiny", src, seed=0, vae_base_dim=4)
    hub.add_folder("acme/showo2-local", src)
    for call in (lambda: load("acme/showo2-local", local_files_only=True),
                 lambda: Showo2Pipeline.from_pretrained("acme/showo2-local", local_files_only=True)):
        with pytest.raises(ModelError, match="not in the Hugging Face cache and local_files_only is set"):
            call()
        with pytest.raises(OSError):  # as transformers and diffusers report it: `except OSError` catches it
            call()
    assert hub.requests == []  # the Hub was never asked
    pipe = Showo2Pipeline.from_pretrained("acme/showo2-local")  # online: fetched
    assert pipe.model.vae is not None and hub.requests
    hub.requests.clear()
    assert Showo2Pipeline.from_pretrained("acme/showo2-local", local_files_only=True).spec == pipe.spec
    assert hub.requests == []


def test_offline_without_cache_is_one_clear_error(hub, tmp_path, monkeypatch):
    from showo2_cli.hub import pull
    from showo2_cli.loading import load

    repo = official_repos(hub, tmp_path)
    offline(monkeypatch)
    with pytest.raises(ModelError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set") as e:
        load(repo)
    assert "\n" not in str(e.value) and "showo2 pull" in str(e.value)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        pull(repo)
    assert hub.requests == []


def test_unknown_repo_and_unreachable_hub(hub, monkeypatch):
    import huggingface_hub.constants as C

    from showo2_cli.hub import pull

    with pytest.raises(ModelError, match="'acme/nothing' is not on the Hub"):
        pull("acme/nothing")
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens
    monkeypatch.setattr(C, "ENDPOINT", dead)
    with pytest.raises(ModelError, match="cannot be reached"):
        pull("acme/other")


def test_a_server_error_leaves_no_half_model(hub, tmp_path):
    from showo2_cli.hub import cached_snapshot, pull

    repo = official_repos(hub, tmp_path)
    hub.fail["pytorch_model.safetensors"] = 500
    with pytest.raises(ModelError, match="HTTP 500.*no half model") as e:
        pull(repo)
    assert "\n" not in str(e.value)
    snaps = list((hub.cache / "models--acme--show-o2-tiny" / "snapshots").glob("*/*"))
    assert [p.name for p in snaps] == ["config.json"]  # what finished is kept for the retry ...
    assert cached_snapshot(repo) is None  # ... but it is not a model
    del hub.fail["pytorch_model.safetensors"]
    result = pull(repo)  # the retry completes it
    assert result.missing == [] and (result.path / "pytorch_model.safetensors").is_file()


@pytest.mark.slow
def test_a_cut_download_leaves_no_half_model(hub, tmp_path):
    """The connection drops mid-file on every try: huggingface_hub retries, then fails; the
    partial bytes never become the weight file."""
    from showo2_cli.hub import cached_snapshot, pull

    repo = official_repos(hub, tmp_path)
    hub.truncate["pytorch_model.safetensors"] = 4096
    with pytest.raises(ModelError, match="no half model"):
        pull(repo)
    assert cached_snapshot(repo) is None
    assert not list((hub.cache / "models--acme--show-o2-tiny" / "snapshots").glob("*/pytorch_model.safetensors"))
    del hub.truncate["pytorch_model.safetensors"]
    assert pull(repo).missing == []


def small_repo(hub: LocalHub, repo: str = "acme/small") -> str:
    """A repo download_model takes (a config, one LFS weight file); no model loads from it."""
    hub.add(repo, {"config.json": b"{}", "model.safetensors": bytes(range(256)) * 200})
    return repo


def blobs_of(hub: LocalHub, repo: str) -> list[str]:
    folder = hub.cache / f"models--{repo.replace('/', '--')}" / "blobs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_hub_that_stops_answering_fails_in_bounded_time(hub, monkeypatch):
    """The listing call accepted and never answered, a body that stops mid-file: each fails after
    SHOWO2_HUB_STALL_SECONDS with one line naming the endpoint, no .incomplete file left."""
    import time

    import huggingface_hub.constants as C

    from showo2_cli.hub import cached_snapshot, download_model

    monkeypatch.setenv("SHOWO2_HUB_STALL_SECONDS", "1.5")
    for name in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):  # the abandoned worker's reads end soon
        monkeypatch.setattr(C, name, 1)
    repo = small_repo(hub)
    for fault in ("api", "model.safetensors"):
        hub.stall[fault] = 100
        start = time.monotonic()
        with pytest.raises(ModelError, match="stalled|did not answer in time") as e:
            download_model(repo)
        assert time.monotonic() - start < 15 and hub.url in str(e.value) and "\n" not in str(e.value)
        assert not [b for b in blobs_of(hub, repo) if b.endswith(".incomplete")]
        assert cached_snapshot(repo) is None
        del hub.stall[fault]
    monkeypatch.setenv("SHOWO2_HUB_STALL_SECONDS", "60")  # the retry may wait for the abandoned worker's lock
    assert (download_model(repo) / "model.safetensors").is_file()


def test_two_processes_one_cache_a_stall_ends_only_its_own_download_and_a_killed_ones_leftovers_go(hub, monkeypatch):
    """Process B holds the weight file's lock and writes its .incomplete after A began: A stalls
    waiting and gives up without deleting B's file (it did before). B killed, its .incomplete
    (never reused: the name is B's own) is removed by the next pull, which completes.

    Nothing here waits on the clock (it failed once on a loaded machine): A may give up only once
    B's file is written (however slow B is to write it), the HTTP timeouts are generous, and A's
    abandoned worker (which takes the lock when B dies and finishes A's download) is waited for
    before the next pull, whose clean-up skips a file whose lock is held."""
    import signal
    import threading
    import time

    import huggingface_hub.constants as C

    from showo2_cli import hub_download
    from showo2_cli.hub import download_model

    for name in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.setattr(C, name, 60)  # the local Hub answers; a loaded machine may take seconds
    repo = small_repo(hub)
    sha = hub.repos[repo].etag("model.safetensors")
    blobs, locks = hub.cache / "models--acme--small" / "blobs", hub.cache / ".locks" / "models--acme--small"
    other = blobs / f"{sha}.0b0b0b0b.incomplete"
    code = ("import sys, filelock, time; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print('locked', flush=True);"
            "sys.stdin.readline(); open(sys.argv[2], 'wb').write(b'x' * 1000); print('written', flush=True); time.sleep(600)")
    blobs.mkdir(parents=True)
    locks.mkdir(parents=True)
    b = subprocess.Popen([sys.executable, "-c", code, str(locks / f"{sha}.lock"), str(other)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    written = threading.Event()
    real_stalled = hub_download._Bytes.stalled
    # A's stall is judged as always, but only once B's file is there: B writes after A began, before A gives up
    deadline = time.monotonic() + 120  # (a B that never writes still ends the test, failing it)
    monkeypatch.setattr(hub_download._Bytes, "stalled", lambda meter, window: (
        written.is_set() or time.monotonic() > deadline) and real_stalled(meter, window))
    try:
        assert b.stdout.readline().strip() == "locked"

        def write_when_a_waits():
            while not any(m == "HEAD" and p.endswith("/model.safetensors") for m, p in list(hub.requests)):
                time.sleep(0.05)
            time.sleep(0.3)
            b.stdin.write("go\n")
            b.stdin.flush()
            if b.stdout.readline().strip() == "written":
                written.set()

        writer = threading.Thread(target=write_when_a_waits, daemon=True)
        writer.start()
        monkeypatch.setenv("SHOWO2_HUB_STALL_SECONDS", "2")
        with pytest.raises(ModelError, match="stalled"):
            download_model(repo)
        writer.join(60)
        assert written.is_set() and other.is_file()  # B's download is B's
        abandoned = [t for t in threading.enumerate() if t.name == f"showo2-hub-{repo}"]  # waiting for B's lock
        assert abandoned
    finally:
        b.send_signal(signal.SIGKILL)
        b.wait()
    for t in abandoned:  # A's worker gets the lock B held and finishes; the next pull's clean-up then finds it free
        t.join(120)
    assert not any(t.is_alive() for t in abandoned)
    monkeypatch.setenv("SHOWO2_HUB_STALL_SECONDS", "60")
    assert (download_model(repo) / "model.safetensors").is_file()
    assert not other.exists() and not [n for n in blobs_of(hub, repo) if n.endswith(".incomplete")]


def test_names_and_listings_huggingface_hub_rejects_are_model_errors(hub):
    from showo2_cli.hub import model_files, pull, repo_id_for, resolve_root
    from showo2_cli.hub_download import as_model_error

    for bad in ("a/..", "acme/x--y", "acme/.hidden", "acme/x.", "acme/" + "x" * 100):
        assert repo_id_for(bad) is None
        with pytest.raises(ModelError, match="neither a known variant"):
            pull(bad)
        with pytest.raises(ModelError, match="no model"):
            resolve_root(bad)
    listing = ["config.json", "model.safetensors", "../x/config.json", "/x/config.json", "x/../config.json"]
    assert model_files(listing, {"llm_model_path": "../x"}) == ["config.json", "model.safetensors"]
    err = as_model_error("acme/x", "model", ValueError("Invalid path\nsecond line"))
    assert isinstance(err, ModelError) and "\n" not in str(err)


def test_sizes_are_checked_before_downloading(hub):
    from showo2_cli.hub import download_model

    repo = small_repo(hub)
    hub.listed_size["config.json"] = 10**9
    with pytest.raises(ModelError, match="config.json.*more than the 16 MiB"):
        download_model(repo)
    del hub.listed_size["config.json"]
    hub.listed_size["model.safetensors"] = 10**16  # 10 PB: more than any disk's free space
    with pytest.raises(ModelError, match="needs .* GB but the Hugging Face cache .* free"):
        download_model(repo)
    assert [d for d in hub.downloads() if d.endswith("model.safetensors")] == []


def test_a_file_that_does_not_match_its_checksum_is_removed(hub):
    """A mirror serving other bytes (same size, or a shorter file it announces consistently)."""
    from showo2_cli.hub import cached_snapshot, download_model

    repo = small_repo(hub)
    good = hub.repos[repo].files["model.safetensors"]
    for other, why in ((b"\1" * len(good), "does not match its checksum"), (good[:1000], "has 1000 bytes where")):
        hub.serve["model.safetensors"] = other
        with pytest.raises(ModelError, match=f"{why}.*removed, pull again"):
            download_model(repo)
        snaps = hub.cache / "models--acme--small" / "snapshots"
        assert not list(snaps.glob("*/model.safetensors")) and cached_snapshot(repo) is None
        assert len(blobs_of(hub, repo)) == 1  # the config only
    del hub.serve["model.safetensors"]
    assert (download_model(repo) / "model.safetensors").read_bytes() == good


def test_a_body_longer_than_the_listing_is_stopped_and_not_kept(hub):
    """A body that never ends, a weight file or a config far bigger than the listing says: the
    download stops at the listed bytes (it read 860 MB in 15 s before), keeps nothing of it, and
    the next pull from a sound server completes."""
    from showo2_cli.hub import cached_snapshot, download_model

    faults = [(hub.endless, "model.safetensors", True), (hub.serve, "model.safetensors", b"\1" * (8 * 2**20)),
              (hub.serve, "config.json", b"{" + b" " * (8 * 2**20) + b"}")]
    for i, (table, name, value) in enumerate(faults):
        repo = small_repo(hub, f"acme/long{i}")
        table[name] = value
        with pytest.raises(ModelError, match=r"sent more than the \d+ bytes its listing announces") as e:
            download_model(repo)
        del table[name]
        assert "\n" not in str(e.value) and hub.url in str(e.value)
        blobs = blobs_of(hub, repo)
        assert not [b for b in blobs if b.endswith(".incomplete")] and cached_snapshot(repo) is None
        assert sum((hub.cache / f"models--acme--long{i}" / "blobs" / b).stat().st_size for b in blobs) <= 2
    repo = small_repo(hub)
    good = hub.repos[repo].files["model.safetensors"]
    hub.listed_size["config.json"] = 3  # a file (no sha256: not LFS) shorter than listed is not kept either
    with pytest.raises(ModelError, match="'config.json' .* has 2 bytes where the Hub's listing says 3; removed"):
        download_model(repo)
    assert blobs_of(hub, repo) == [] and cached_snapshot(repo) is None
    del hub.listed_size["config.json"]
    assert (download_model(repo) / "model.safetensors").read_bytes() == good


def test_a_listing_that_never_ends_fails_without_filling_the_memory(hub, monkeypatch):
    """It was read whole (1.7 GB in 6 s, then "stalled: sent nothing"); now up to the cap."""
    from showo2_cli import hub_download
    from showo2_cli.hub import download_model

    monkeypatch.setattr(hub_download, "MAX_LISTING_BYTES", 2**20)
    monkeypatch.setenv("SHOWO2_HUB_STALL_SECONDS", "30")
    repo = small_repo(hub)
    hub.endless["api"] = True
    with pytest.raises(ModelError, match=f"the listing of model '{repo}' from the Hub at {hub.url} is longer than 1 MiB"):
        download_model(repo)
    del hub.endless["api"]
    assert (download_model(repo) / "model.safetensors").is_file()  # other calls are not capped


def test_a_private_or_gated_repo_says_how_to_give_a_token_and_hf_token_is_sent(hub, tmp_path, monkeypatch):
    """A 401/403 names hf auth login and HF_TOKEN (or, with a token set, that the token is refused);
    HF_TOKEN is what huggingface_hub sends; a 429 says to wait."""
    import huggingface_hub.constants as C

    from showo2_cli.hub import download_model

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(C, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no stored login either
    repo = small_repo(hub, "acme/private")
    hub.token = "hf_right"
    hints = {None: "log in with hf auth login or set HF_TOKEN",
             "hf_wrong": r"the token in use \(HF_TOKEN, which comes before the one of hf auth login\) has no access "
                         "to it; check it"}
    for token, hint in hints.items():
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        with pytest.raises(ModelError, match=rf"answered HTTP 401 \(access refused\): {hint}, then pull again") as e:
            download_model(repo)
        assert "\n" not in str(e.value)
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    assert (download_model(repo) / "model.safetensors").is_file()
    hub.token = None
    monkeypatch.delenv("HF_TOKEN")
    repo = small_repo(hub, "acme/gated")
    hub.fail["model.safetensors"] = 403
    with pytest.raises(ModelError, match="HTTP 403 .*set HF_TOKEN"):
        download_model(repo)
    hub.fail_headers["model.safetensors"] = {"X-Error-Code": "GatedRepo"}
    with pytest.raises(ModelError, match="is gated on the Hub: .* log in with hf auth login or set HF_TOKEN"):
        download_model(repo)
    hub.fail["api"], hub.fail_headers["api"] = 429, {"Retry-After": "0"}
    with pytest.raises(ModelError, match="HTTP 429 \\(too many requests\\); wait a while"):
        download_model("acme/gated")


def test_hub_arguments_of_from_pretrained_and_load_work_as_in_huggingface_hub(hub, tmp_path, monkeypatch,
                                                                              tiny_model_dir):
    """cache_dir (looked in and downloaded into), token (a string sent, False none even with HF_TOKEN
    set, True the saved one), force_download, use_auth_token: as huggingface_hub takes them, for
    that call only; a private repo (401) and a gated one (403) say what to do, never the token."""
    import traceback

    import huggingface_hub.constants as C
    import torch

    from showo2_cli import Showo2Pipeline, api

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(C, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no stored login
    src = tiny_model_dir
    hub.add_folder("acme/private", src)
    hub.private["acme/private"] = "hf_right"
    mine = tmp_path / "my-cache"
    pipe = Showo2Pipeline.from_pretrained("acme/private", cache_dir=mine, token="hf_right")  # was a ValueError
    weight = pipe.network.state_dict()["showo.model.embed_tokens.weight"]
    assert (mine / "models--acme--private" / "snapshots").is_dir() and not hub.cache.exists()  # there, only there
    fetched = sorted(hub.downloads())
    assert len(fetched) == len([p for p in src.rglob("*") if p.is_file()])
    hub.requests.clear()
    assert api.pull("acme/private", cache_dir=str(mine)).downloaded == []
    assert api.load("acme/private", cache_dir=mine).spec == pipe.spec
    assert hub.requests == []  # found in that cache: nothing asked
    with pytest.raises(ModelError, match="not in the Hugging Face cache and local_files_only"):
        api.load("acme/private", local_files_only=True)  # the default cache has not got it: the call's own only
    again = api.load("acme/private", cache_dir=mine, token="hf_right", force_download=True)
    assert sorted(hub.downloads()) == fetched  # every file of the model again
    assert torch.equal(again.network.state_dict()["showo.model.embed_tokens.weight"], weight)
    with pytest.raises(ModelError, match="the token given as token= has no access"):  # its old name
        Showo2Pipeline.from_pretrained("acme/private", cache_dir=tmp_path / "c2", use_auth_token="hf_wrong")

    def refused(match: str, **kwargs) -> str:
        with pytest.raises(ModelError, match=match) as e:
            api.load("acme/private", cache_dir=tmp_path / "empty", **kwargs)
        text = "".join(traceback.format_exception(e.value))
        assert "\n" not in str(e.value) and "hf_right" not in text and "hf_wrong" not in str(e.value)
        return str(e.value)

    refused(r"HTTP 401 \(access refused\): log in with hf auth login or set HF_TOKEN \(or pass token=\), then")
    refused("the token given as token= has no access to it; check it", token="hf_wrong")
    refused("token=True but no Hugging Face token is saved: log in with hf auth login or set HF_TOKEN", token=True)
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    refused("HTTP 401 .*token=False sends no token: pass token=True", token=False)  # HF_TOKEN not sent
    monkeypatch.setattr(C, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)  # it said "the token in use has no access"
    refused("no token was sent because HF_HUB_DISABLE_IMPLICIT_TOKEN is set: unset it")
    assert api.pull("acme/private", cache_dir=tmp_path / "c3", token=True).missing == []  # explicit: sent
    assert api.pull("acme/private", cache_dir=tmp_path / "c4", token="hf_right\n").missing == []  # read from a file
    monkeypatch.setattr(C, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    hub.add_folder("acme/gated", src)
    hub.gated["acme/gated"] = "hf_accepted"
    hints = {False: "token=False sends no token", "hf_right": "the token given as token= has no access"}
    for token, hint in hints.items():  # the Hub answers 401 without a token, 403 with one not accepted
        with pytest.raises(ModelError, match=f"'acme/gated' is gated on the Hub: accept its terms .*{hint}") as e:
            Showo2Pipeline.from_pretrained("acme/gated", token=token)
        assert "hf_right" not in "".join(traceback.format_exception(e.value))
    assert api.pull("acme/gated", token="hf_accepted").missing == []
    with pytest.raises(ValueError, match="force_download=True needs the Hub, local_files_only=True forbids it"):
        api.load("acme/gated", force_download=True, local_files_only=True)
    with pytest.raises(ValueError, match="token= must be a Hugging Face token") as e:
        api.load("acme/gated", token="hf_right\r\nX-Injected: 1")
    assert "hf_right" not in str(e.value)
    with pytest.raises(TypeError, match="token must be a string, True, False or None"):
        api.load("acme/gated", token=123)
    with pytest.raises(ValueError, match="is not a folder"):
        api.load("acme/gated", cache_dir=src / "config.json")


def test_a_pipeline_from_the_hub_encodes_after_the_model_is_fetched_again(hub, tmp_path, tiny_model_dir):
    """Probe AI: Showo2Pipeline.from_pretrained loads the VAE's decoder; its encoder loads from the
    same file on the first caption. A force_download of the model meanwhile (another pipeline,
    ``pull --force-download``) writes the same blobs again: the first caption failed with 'the VAE
    file changed or went away since it was loaded'. A blob of the cache is named by its content's
    hash, so the same name is the same file; the encoder loaded equals an eager load's."""
    import torch

    from showo2_cli import Showo2Pipeline
    from showo2_cli.modeling.vae_files import load_vae

    hub.add_folder("acme/tiny", tiny_model_dir)
    mine = tmp_path / "my-cache"
    pipe = Showo2Pipeline.from_pretrained("acme/tiny", cache_dir=mine, token="hf_any")
    assert pipe.vae.loaded_parts == ("decoder",)
    vae_file = Path(pipe.model.files.vae) / "diffusion_pytorch_model.safetensors"
    before = vae_file.stat().st_mtime_ns
    Showo2Pipeline.from_pretrained("acme/tiny", cache_dir=mine, force_download=True)
    assert vae_file.stat().st_mtime_ns != before  # written again
    pixels = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    eager = load_vae(tiny_model_dir / "vae")
    assert torch.equal(pipe.vae.encode(pixels), eager.encode(pixels))  # was a ModelError
    assert pipe.vae.loaded_parts == ("encoder", "decoder")
    for key, value in eager.model.encoder.state_dict().items():
        assert torch.equal(pipe.vae.model.encoder.state_dict()[key], value)


def test_a_token_file_that_is_not_a_file_or_a_token_no_header_carries_fails_at_once(hub, tmp_path, monkeypatch):
    """huggingface_hub reads the token file for every request: a FIFO there (or a pipe,
    ``HF_TOKEN_PATH=<(pass hf)``) blocked the listing until the stall limit said the Hub "sent
    nothing"; a token a header cannot carry was a 401 or an ascii codec error. Each is now one line
    naming where the token comes from, before any request, never the token."""
    import huggingface_hub.constants as C
    import huggingface_hub.errors

    from showo2_cli.hub import download_model

    monkeypatch.setenv("SHOWO2_HUB_STALL_SECONDS", "2")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    repo = small_repo(hub, "acme/private")
    hub.private[repo] = "hf_right"
    fifo = tmp_path / "token-fifo"
    os.mkfifo(fifo)
    for path, match in ((fifo, "is not a regular file, and huggingface_hub reads it for every request"),
                        (tmp_path, "is not a regular file"), (tmp_path / "bad", r"cannot be read \(UnicodeDecodeError\)")):
        (tmp_path / "bad").write_bytes(b"hf_\xff\xfe")
        monkeypatch.setattr(C, "HF_TOKEN_PATH", str(path))
        with pytest.raises(ModelError, match=f"the token file '{path}' \\(HF_TOKEN_PATH, else HF_HOME/token\\) {match}"):
            download_model(repo)
    for bad in ("hf_right x", "hf_righté", "hf_right\x7f"):
        monkeypatch.setenv("HF_TOKEN", bad)
        with pytest.raises(ModelError, match=r"the token in use \(HF_TOKEN, .*\) holds a space, a control or a non-ASCII"
                           ) as e:
            download_model(repo)
        assert "hf_right" not in str(e.value)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(C, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    for name in ("HF_OIDC_ID_TOKEN", "GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL"):
        monkeypatch.delenv(name, raising=False)
    if hasattr(huggingface_hub.errors, "OIDCError"):  # huggingface_hub's CI token exchange (1.30+), outside a CI
        monkeypatch.setenv("HF_OIDC_RESOURCE", repo)
        with pytest.raises(ModelError, match="no Hugging Face token could be had through OIDC: .*HF_OIDC_RESOURCE"):
            download_model(repo)  # was "internal error: OIDCError" (a traceback from the API)
        monkeypatch.delenv("HF_OIDC_RESOURCE")
    assert hub.requests == []  # refused before asking
    (tmp_path / "saved").write_text("hf_stale\n")
    monkeypatch.setattr(C, "HF_TOKEN_PATH", str(tmp_path / "saved"))
    with pytest.raises(ModelError, match=rf"the token in use \(the one hf auth login saved in '{tmp_path / 'saved'}'\) "
                       "has no access to it"):
        download_model(repo)
    monkeypatch.setenv("HF_TOKEN", "hf_right")  # the variable comes first: the file is not read
    assert (download_model(repo) / "model.safetensors").is_file()


def test_file_download_errors_name_the_http_status(hub):
    from showo2_cli.hub import download_model

    repo = small_repo(hub)
    for status in (403, 404):  # (429 and 5xx are retried by huggingface_hub with back-off: 20 s more)
        hub.fail["model.safetensors"] = status
        with pytest.raises(ModelError, match=f"answered HTTP {status}") as e:
            download_model(repo)
        assert "\n" not in str(e.value) and "resume" not in str(e.value)


def test_a_cache_entry_without_a_listing_needs_config_and_weights(hub):
    from huggingface_hub import hf_hub_download

    from showo2_cli.hub import cached_snapshot, needs_download, pull

    repo = small_repo(hub)
    hf_hub_download(repo, "config.json")  # as `hf download REPO config.json` leaves it: no listing
    assert cached_snapshot(repo) is None and needs_download(repo)
    hf_hub_download(repo, "model.safetensors")
    assert cached_snapshot(repo) is not None
    with pytest.raises(ModelError):
        pull("acme/x--y")


def test_a_cached_model_without_its_companions_needs_a_download(hub, tmp_path):
    from showo2_cli.hub import download_model, needs_download, pull

    repo = official_repos(hub, tmp_path)
    download_model(repo)  # the model's own repo only: no tokenizer, no VAE
    assert needs_download(repo)
    pull(repo)
    assert not needs_download(repo)


def test_models_reports_what_loading_finds_in_the_cache(hub, tmp_path, monkeypatch, capsys):
    """`showo2 models` looks a cached variant up as loading does (a repo carrying its own tokenizer
    and VAE is ready; it said "missing tokenizer, VAE"), honours $SHOWO2_VAE, and names a cached
    model whose config is damaged instead of calling it ready or missing."""
    import huggingface_hub

    from showo2_cli.cli import main
    from showo2_cli.hub import pull
    from showo2_cli.loading import init_model

    def rows():
        assert main(["models", "--json"]) == 0
        return {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}

    src = tmp_path / "m"
    init_model("tiny", src, seed=0, vae_base_dim=4)
    hub.add_folder("showlab/show-o2-1.5B", src)
    snap = pull("1.5B").path
    offline(monkeypatch)
    row = rows()["1.5B"]
    assert row["present"] and row["missing"] == [] and row["get"] == [] and row["path"] == str(snap)
    assert rows()["7B"]["missing"] == ["checkpoint", "tokenizer", "VAE"]
    monkeypatch.setenv("SHOWO2_VAE", str(src / "vae"))
    assert rows()["7B"]["missing"] == ["checkpoint", "tokenizer"]  # as loading would take it
    monkeypatch.setenv("SHOWO2_VAE", str(tmp_path / "nowhere"))
    assert rows()["7B"]["missing"] == ["checkpoint", "tokenizer", "VAE"] and rows()["1.5B"]["present"]
    monkeypatch.delenv("SHOWO2_VAE")
    config = snap / "config.json"
    config.unlink()  # (a link into blobs/)
    config.write_text("{not json")
    row = rows()["1.5B"]
    assert not row["present"] and "not valid JSON" in row["damaged"]
    assert row["get"] == ["showo2 pull 1.5B --force-download"]  # the files it loads, not the whole repo
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert main(["pull", "1.5B", "--force-download", "--json"]) == 0  # the damaged copy replaced
    assert json.loads(capsys.readouterr().out)["downloaded"] == ["showlab/show-o2-1.5B"] and rows()["1.5B"]["present"]


@pytest.mark.slow
def test_cli_pull_interrupted_or_stalled_exits_at_once_and_cleans_up(hub, tmp_path):
    import signal
    import time

    repo = small_repo(hub)
    hub.stall["model.safetensors"] = 100
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(hub.cache), "HF_HUB_OFFLINE": "0",
           "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "SHOWO2_HUB_STALL_SECONDS": "600"}
    run = [sys.executable, "-m", "showo2_cli.cli", "pull", repo]
    proc = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_reaches_child)  # (a background CI shell ignores SIGINT)
    deadline = time.monotonic() + 120
    while not any(b.endswith(".incomplete") for b in blobs_of(hub, repo)) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert not [b for b in blobs_of(hub, repo) if b.endswith(".incomplete")]
    env["SHOWO2_HUB_STALL_SECONDS"] = "2"
    out = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 4 and "stalled" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not [b for b in blobs_of(hub, repo) if b.endswith(".incomplete")]


@pytest.mark.slow
def test_cli_reads_the_token_as_huggingface_hub_does_and_never_writes_it(hub, tmp_path, tiny_model_dir, monkeypatch,
                                                                        capsys):
    """`showo2 pull` takes the token `hf auth login` saved under HF_HOME (HF_HOME/hub the cache),
    and HF_TOKEN / HF_HUB_DISABLE_IMPLICIT_TOKEN as huggingface_hub does; refusals are one line
    naming what to do. The token is in no output and no file written (a `t2i --json` of the model too)."""
    import huggingface_hub.constants as C

    from showo2_cli.cli import main

    token = "hf_SeCrEt0123456789abcdef"
    hub.add_folder("acme/private", tiny_model_dir)
    hub.private["acme/private"] = token
    home = tmp_path / "home"
    home.mkdir()
    (home / "token").write_text(token + "\n")  # as hf auth login saves it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_OFFLINE="0", PYTHONPATH=str(REPO / "src"),
               OMP_NUM_THREADS="1")
    run = [sys.executable, "-m", "showo2_cli.cli"]
    texts = []
    out = subprocess.run([*run, "pull", "acme/private"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and f"({home / 'hub' / 'models--acme--private'}" in out.stdout, out.stderr
    texts.append(out.stdout + out.stderr)
    out = subprocess.run([*run, "pull", "acme/private"], env={**env, "HF_HUB_CACHE": str(tmp_path / "other"),
                         "HF_TOKEN": token, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 4 and len(out.stderr.strip().splitlines()) == 1, out.stderr  # it said "the token in use"
    assert "no token was sent because HF_HUB_DISABLE_IMPLICIT_TOKEN is set: unset it" in out.stderr
    texts.append(out.stdout + out.stderr)
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(home / "hub"))  # the pulled model, in process (a subprocess: 7 s)
    monkeypatch.setattr(C, "HF_TOKEN_PATH", str(home / "token"))
    assert main(["t2i", "a red circle", "-m", "acme/private", "-o", str(tmp_path / "c.png"), "--steps", "3",
                 "--json"]) == 0
    texts.append("".join(capsys.readouterr()))
    assert (tmp_path / "c.json").is_file() and all(token[8:] not in text for text in texts)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != home / "token"]
    assert len(written) > 10 and not [p for p in written if token[8:].encode() in p.read_bytes()]


@pytest.mark.slow
def test_cli_pull_then_offline_caption(hub, tmp_path, media_dir):
    """`showo2 pull` in a subprocess with the real environment variables, then a command offline."""
    repo = official_repos(hub, tmp_path)
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(hub.cache), "HF_HUB_OFFLINE": "0",
           "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "showo2_cli.cli"]
    out = subprocess.run([*run, "pull", repo, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["repo"] == repo and info["missing"] == [] and len(info["downloaded"]) == 4
    again = subprocess.run([*run, "pull", repo], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already" in again.stdout
    env["HF_HUB_OFFLINE"] = "1"
    image = next(iter(sorted(media_dir.glob("*.jpg"))))
    cap = subprocess.run([*run, "caption", str(image), "-m", repo, "--max-new-tokens", "3", "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert cap.returncode == 0, cap.stderr
    missing = subprocess.run([*run, "pull", "acme/absent"], env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 4 and len(missing.stderr.strip().splitlines()) == 1
    assert "HF_HUB_OFFLINE" in missing.stderr


# ---- the pipeline -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipe():
    from showo2_cli import Showo2Pipeline

    return Showo2Pipeline.from_pretrained("demo", torch_dtype="fp32", device="cpu")


def test_pipeline_is_the_api_with_diffusers_manners(pipe, tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from showo2_cli import api

    out = pipe("a red circle", num_inference_steps=4, guidance_scale=3.0, generator=torch.Generator().manual_seed(7))
    ref = api.text_to_image(pipe.model, ["a red circle"], api.GenerateOptions(steps=4, guidance=3.0, seed=7))
    assert isinstance(out.images[0], Image.Image) and out.images[0].size == (pipe.spec.resolution,) * 2
    assert np.array_equal(np.asarray(out.images[0]), ref[0].frames[0]) and out.results[0].seed == 7
    arr = pipe("a red circle", num_inference_steps=4, guidance_scale=3.0, seed=7, output_type="np").images[0]
    assert arr.dtype == np.float32 and np.array_equal((arr * 255).round().astype(np.uint8), ref[0].frames[0])
    assert out[0] is out.images  # diffusers' BaseOutput indexing
    path = tmp_path / "x.png"
    out.images[0].save(path)
    assert pipe.caption(out.images[0], "What shape is it?", max_new_tokens=6) == \
        api.caption(pipe.model, path, api.CaptionOptions(questions=["What shape is it?"], max_new_tokens=6)).answers[0]
    two = pipe.caption(path, ["What shape is it?", "What colour is it?"], max_new_tokens=4)
    assert isinstance(two, list) and len(two) == 2
    with pytest.raises(Exception, match="output_type"):
        pipe("x", output_type="latents")
    with pytest.raises(Exception, match="not both"):
        pipe("x", seed=1, generator=torch.Generator().manual_seed(1))


def test_pipeline_seeds_outputs_and_arguments_as_diffusers_does(pipe):
    """Generators advance (a loop gives new images, reproducibly; a fresh one is --seed N), a list
    seeds one output each, no seed means torch's global generator; np/pt/latent are batches;
    return_dict=False; numpy scalars; wrong arguments are ValueError/TypeError naming the argument."""
    import numpy as np
    import torch
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    pipe.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=3, guidance_scale=3.0)
    g = torch.Generator().manual_seed(7)
    first, second = (pipe("a red circle", generator=g, **call).results[0] for _ in range(2))
    assert first.seed == 7 and second.seed != 7  # a fresh generator is --seed 7; the next call moves on
    again = torch.Generator().manual_seed(7)
    assert [pipe("a red circle", generator=again, **call).results[0].seed for _ in range(2)] == [7, second.seed]
    gens = [torch.Generator().manual_seed(30), torch.Generator().manual_seed(4)]
    out = pipe(["a", "b"], generator=gens, **call)
    assert [r.seed for r in out.results] == [30, 4]
    solo = pipe(["b"], seed=4, **call).images[0]  # the generators' outputs are batched (batch_size, as diffusers):
    gens = [torch.Generator().manual_seed(30), torch.Generator().manual_seed(4)]  # one at a time, each is its seed's
    assert np.array_equal(np.asarray(pipe(["a", "b"], generator=gens, batch_size=1, **call).images[1]), np.asarray(solo))
    torch.manual_seed(0)
    one = pipe("q", **call).results[0].seed
    torch.manual_seed(0)
    assert pipe("q", **call).results[0].seed == one
    side = pipe.spec.resolution
    assert pipe(["a", "b"], seed=1, output_type="np", **call).images.shape == (2, side, side, 3)
    pt = pipe(["a", "b"], seed=1, output_type="pt", **call).images
    assert pt.shape == (2, 3, side, side) and 0 <= float(pt.min()) <= float(pt.max()) <= 1
    assert pt.device == pipe.device  # diffusers' tensors are on the pipeline's device (probe GK)
    latent = pipe(["a", "b"], seed=1, output_type="latent", **call).images
    assert latent.shape[0] == 2 and latent.device == pipe.device
    (images,) = pipe("a", seed=1, return_dict=False, **call)
    assert isinstance(images, list) and len(images) == 1
    assert pipe("a", seed=1, height=np.int64(side), num_inference_steps=np.int32(3),
                guidance_scale=np.float32(3.0)).images[0].size == (side, side)
    for kwargs, kind, words in ((dict(height=0), ValueError, "height"), (dict(prompt=None), TypeError, "prompt"),
                                (dict(num_images_per_prompt=None), TypeError, "num_images_per_prompt"),
                                (dict(negative_prompt=["x", "y"]), ValueError, "negative prompts"),
                                (dict(height=17), ValueError, "^width/height must be positive multiples of 16"),
                                (dict(num_inference_steps=1), ValueError, "^num_inference_steps must be"),
                                (dict(guidance_scale=101.0), ValueError, "^guidance_scale must be"),
                                (dict(latents=torch.zeros(1, 2)), Exception, "^latents has shape"),
                                (dict(guidance_scale=-1.0), ValueError, "guidance"),
                                (dict(negative_prompt=3), TypeError, "negative_prompt"),
                                (dict(generator=[g, g]), ValueError, "generators"),
                                (dict(generator=7), TypeError, "generator"),
                                (dict(progress="x"), TypeError, "progress")):
        with pytest.raises(kind, match=words):
            pipe(**{"prompt": "a", **call, **kwargs})
    # schedulers: assigning one picks the sampler (it was an attribute nothing read)
    try:
        assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
        pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                 flow_shift=2.0)
        assert pipe("a", seed=1, **call).results[0].params["sampler"] == "unipc"
        assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
        with pytest.raises(ValueError, match="use_flow_sigmas"):
            pipe.scheduler = DPMSolverMultistepScheduler()
        with pytest.raises(TypeError, match="not supported"):
            pipe.scheduler = object()
    finally:
        pipe.sampler, pipe.default_shift = "euler", None
        pipe.set_progress_bar_config()


def test_negative_prompt_replaces_the_empty_prompt_in_pipeline_cli_and_metadata(pipe, tmp_path, capsys):
    import numpy as np

    from showo2_cli import media as M
    from showo2_cli.cli import main

    pipe.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=3, guidance_scale=3.0, seed=5)
    try:
        plain = np.asarray(pipe("a red circle", **call).images[0])
        assert np.array_equal(np.asarray(pipe("a red circle", negative_prompt="", **call).images[0]), plain)
        neg = pipe("a red circle", negative_prompt="a blue square", **call)
        assert np.abs(np.asarray(neg.images[0]).astype(int) - plain).max() > 8  # guidance steers away from it
        assert neg.results[0].params["negative_prompt"] == "a blue square"
        assert "negative_prompt" not in pipe("a red circle", **call).results[0].params
        # one per prompt, batched: as each alone (to float rounding: a batch pads to its longest row)
        two = pipe(["a red circle", "a square"], negative_prompt=["a blue square", ""], **call).results  # seeds 5, 6
        alone = pipe("a square", **{**call, "seed": 6}).results[0]
        for got, want in ((two[0], neg.results[0]), (two[1], alone)):
            assert (got.latents - want.latents).abs().max() < 1e-4
    finally:
        pipe.set_progress_bar_config()
    out = tmp_path / "n.png"
    code = main(["t2i", "a red circle", "--model", "demo", "--steps", "3", "--guidance", "3", "--seed", "5",
                 "--negative-prompt", "a blue square", "--device", "cpu", "--dtype", "fp32", "-o", str(out)])
    capsys.readouterr()
    assert code == 0
    assert np.array_equal(np.asarray(M.read_image(out)), np.asarray(neg.images[0]))
    assert "a blue square" in json.dumps(M.read_png_metadata(out))
    code = main(["t2i", "a red circle", "--model", "demo", "--steps", "2", "--guidance", "0", "--seed", "5",
                 "--negative-prompt", "blue", "--device", "cpu", "-o", str(tmp_path / "g0.png")])
    assert code == 0 and "no effect with --guidance 0" in capsys.readouterr().err


def test_callback_on_step_end_sees_changes_and_interrupts_the_sampling(pipe):
    import numpy as np
    import torch

    pipe.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=5, guidance_scale=3.0, seed=2, output_type="latent")
    seen = []

    def record(p, i, t, kwargs):
        assert p is pipe and set(kwargs) == {"latents"}
        seen.append((i, float(t), kwargs["latents"].clone()))
        return {}

    try:
        plain = pipe("a red circle", **call).images
        assert torch.equal(pipe("a red circle", callback_on_step_end=record, **call).images, plain)
        assert [i for i, _, _ in seen] == [0, 1, 2, 3] and torch.equal(seen[-1][2], plain)
        times = [t for _, t, _ in seen]
        assert times[0] == 0.0 and times == sorted(times) and times[-1] < 1.0  # Show-o2's t, noise to clean

        def zero_at_last(p, i, t, kwargs):
            return {"latents": torch.zeros_like(kwargs["latents"])} if i == 3 else None

        assert not pipe("a red circle", callback_on_step_end=zero_at_last, **call).images.any()

        def stop_after_two(p, i, t, kwargs):
            if i == 1:
                p._interrupt = True
            return {}

        stopped = pipe("a red circle", callback_on_step_end=stop_after_two, **call)
        assert pipe.interrupt and torch.equal(stopped.images, seen[1][2])  # the latents reached
        assert stopped.results[0].params["steps_done"] == 2  # recorded with the output
        image = pipe("a red circle", callback_on_step_end=stop_after_two, **{**call, "output_type": "np"}).images
        assert image.shape[0] == 1 and np.isfinite(image).all()  # decoded as they are
        assert "steps_done" not in pipe("a", seed=2, num_inference_steps=2).results[0].params
        assert not pipe.interrupt  # every call starts afresh
        # an interrupt ends the run: the batch in progress is decoded, later batches are not made
        several = pipe(["a", "b", "c"], callback_on_step_end=stop_after_two, **{**call, "batch_size": 2})
        assert [r.params["steps_done"] for r in several.results] == [2, 2]
        gens = [torch.Generator().manual_seed(k) for k in range(3)]
        one_run = {**{k: v for k, v in call.items() if k != "seed"}, "batch_size": 2}  # generators: batches too
        assert [r.params["steps_done"] for r in pipe("a", num_images_per_prompt=3, generator=gens,
                                                     callback_on_step_end=stop_after_two, **one_run).results] == [2, 2]

        def stop_at_the_end(p, i, t, kwargs):
            p._interrupt = i == 3
            return {}

        last = pipe(["a", "b"], callback_on_step_end=stop_at_the_end, **{**call, "batch_size": 1}).results
        assert [r.params["steps_done"] for r in last] == [4]  # stopped at the last step: still recorded

        def zero_and_stop(p, i, t, kwargs):  # the latents returned with the interrupt are the result
            p._interrupt = i == 1
            return {"latents": torch.zeros_like(kwargs["latents"])} if i == 1 else {}

        assert not pipe("a", callback_on_step_end=zero_and_stop, **call).images.any()

        def from_progress(phase, done, total):  # no callback: the interrupt is still looked at
            if phase == "denoising" and done == 2:
                pipe._interrupt = True

        assert pipe("a", progress=from_progress, **call).results[0].params["steps_done"] == 2
        empty = []
        pipe("a", callback_on_step_end=lambda p, i, t, k: empty.append(k) or {},
             callback_on_step_end_tensor_inputs=[], **call)
        assert empty and all(k == {} for k in empty)
        from diffusers.callbacks import PipelineCallback

        class HalfWay(PipelineCallback):  # diffusers' callbacks read pipeline.num_timesteps
            tensor_inputs = ["latents"]

            def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
                if step_index == int(pipeline.num_timesteps * self.config.cutoff_step_ratio):
                    pipeline._interrupt = True
                return callback_kwargs

        half = pipe("a", callback_on_step_end=HalfWay(cutoff_step_ratio=0.5), **call)
        assert half.results[0].params["steps_done"] == 3 and pipe.num_timesteps == 4
        assert pipe.guidance_scale == 3.0 and pipe.do_classifier_free_guidance
        with pytest.raises(TypeError, match="torch.Tensor"):
            pipe("a", latents=np.zeros((1, 16, 8, 8), np.float32), **{**call, "output_type": "pil"})
        with pytest.raises(ValueError, match="latents"):
            pipe("a", callback_on_step_end=record, callback_on_step_end_tensor_inputs=["prompt_embeds"], **call)
        with pytest.raises(TypeError, match="callable"):
            pipe("a", callback_on_step_end=3, **call)
        with pytest.raises(TypeError, match="dict"):
            pipe("a", callback_on_step_end=lambda *a: 1, **call)
        with pytest.raises(ValueError, match="shape"):
            pipe("a", callback_on_step_end=lambda p, i, t, k: {"latents": torch.zeros(1)}, **call)
    finally:
        pipe.set_progress_bar_config()


def test_pipeline_shows_a_progress_bar_unless_disabled(pipe, capsys):
    pipe("a", seed=1, num_inference_steps=3)
    assert "2/2" in capsys.readouterr().err  # tqdm's bar over the two model calls
    pipe.set_progress_bar_config(disable=True)
    try:
        pipe("a", seed=1, num_inference_steps=3)
        assert capsys.readouterr().err == ""
    finally:
        pipe.set_progress_bar_config()


def test_pipeline_caption_takes_arrays_tensors_and_tuples(pipe):
    import numpy as np
    import torch

    image = pipe("a red circle", seed=3, num_inference_steps=3).images[0]
    arr = np.asarray(image)
    want = pipe.caption(image, "What shape is it?", max_new_tokens=4)
    assert pipe.caption(arr, "What shape is it?", max_new_tokens=4) == want
    tensor = torch.from_numpy(arr).permute(2, 0, 1).float() / 255  # (3, H, W) in [0, 1], as diffusers reads
    assert pipe.caption(tensor, "What shape is it?", max_new_tokens=4) == want
    both = pipe.caption(image, ("What shape is it?", "What colour is it?"), max_new_tokens=4)
    assert isinstance(both, list) and both[0] == want  # a tuple is a list of questions too
    with pytest.raises(TypeError, match="question"):
        pipe.caption(image, 5)
    with pytest.raises(ValueError, match="shape"):
        pipe.caption(np.zeros((2, 2, 4, 4, 3)), "?")  # (4, 4, 4, 4) is a video of 4 RGBA frames now


def test_a_step_callback_cannot_move_the_first_frame_of_image_to_video(pipe, tmp_path):
    import numpy as np
    import torch

    pipe.set_progress_bar_config(disable=True)
    image = np.full((64, 64, 3), 120, np.uint8)
    call = dict(num_frames=5, num_inference_steps=3, seed=1, output_type="latent", image=image)
    plain = pipe("it moves", **call).frames
    try:
        moved = pipe("it moves", callback_on_step_end=lambda p, i, t, k: {"latents": k["latents"] * 0}, **call).frames
    finally:
        pipe.set_progress_bar_config()
    assert torch.equal(moved[:, :, 0], plain[:, :, 0]) and not moved[:, :, 1:].any()
    with pytest.raises(ValueError, match="^dtype must be auto, fp32, bf16, fp16 or float64"):
        pipe.to(torch.int8)  # (to()'s argument is dtype; from_pretrained's message names torch_dtype)
    with pytest.raises(ValueError, match="^max_new_tokens must be"):  # the caller's names, not the CLI's
        pipe.caption(image, max_new_tokens=0)


def test_pipeline_videos(pipe, tmp_path):
    import numpy as np
    from PIL import Image

    from showo2_cli import api

    v = pipe(["a blue square"], num_inference_steps=3, num_frames=5, seed=2)
    assert v.images is None and len(v.frames) == 1 and len(v.frames[0]) == 5
    ref = api.text_to_video(pipe.model, ["a blue square"], api.GenerateOptions(steps=3, frames=5, seed=2))
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(v.frames[0], ref[0].frames, strict=True))
    first = Image.fromarray(ref[0].frames[0])
    path = tmp_path / "first.png"
    first.save(path)
    i2v = pipe("it moves", image=first, num_inference_steps=3, num_frames=5, seed=4)
    ref = api.image_to_video(pipe.model, path, ["it moves"], api.GenerateOptions(steps=3, frames=5, seed=4))
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(i2v.frames[0], ref[0].frames, strict=True))


def test_pipeline_vae_tiling_is_the_vae_option(pipe):
    assert pipe.vae.tiling == "auto"  # as loaded: tile only what would not fit
    try:
        pipe.enable_vae_tiling()
        assert pipe.vae.tiling == "on"
        pipe.disable_vae_tiling()
        assert pipe.vae.tiling == "off"
    finally:
        pipe.vae.tiling = "auto"


def test_save_pretrained_round_trips_exactly(pipe, tmp_path):
    import numpy as np
    import torch

    from showo2_cli import RuntimeOptions, Showo2Pipeline
    from showo2_cli.errors import OutputError, UsageError

    pipe.set_progress_bar_config(disable=True)
    try:
        folder = pipe.save_pretrained(tmp_path / "mine")
        again = Showo2Pipeline.from_pretrained(folder)
        again.set_progress_bar_config(disable=True)
        call = dict(seed=3, num_inference_steps=3, output_type="latent")
        assert torch.equal(again("a red circle", **call).images, pipe("a red circle", **call).images)
        image = np.full((64, 64, 3), 200, np.uint8)
        assert again.caption(image, max_new_tokens=8) == pipe.caption(image, max_new_tokens=8)
        assert again.spec == pipe.spec
        (folder / "keep").write_text("x")
        with pytest.raises(OutputError, match="overwrite=True"):
            pipe.save_pretrained(folder)
        assert (folder / "keep").read_text() == "x"  # nothing was touched
        pipe.save_pretrained(folder, overwrite=True)
        assert not (folder / "keep").exists() and (folder / "model.safetensors").is_file()
        with pytest.raises(ValueError, match="safetensors"):
            pipe.save_pretrained(tmp_path / "pickle", safe_serialization=False)
        with pytest.raises(ValueError, match="name a folder"):
            pipe.save_pretrained("")
        assert (pipe.save_pretrained(tmp_path / "new" / "deeper") / "config.json").is_file()  # parents made
    finally:
        pipe.set_progress_bar_config()
    pytest.importorskip("torchao", reason="--quantize int8wo needs torchao")
    small = Showo2Pipeline.from_pretrained("demo", runtime=RuntimeOptions(quantize="int8wo"))
    with pytest.raises(UsageError, match="quantized"):
        small.save_pretrained(tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_pipeline_takes_the_runtime_options():
    pytest.importorskip("bitsandbytes", reason="--quantize nf4 needs bitsandbytes")
    import bitsandbytes as bnb

    from showo2_cli import RuntimeOptions, Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained("demo", runtime=RuntimeOptions(quantize="nf4", vae_tiling="off"))
    assert isinstance(pipe.network.showo.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit)
    assert pipe.vae.tiling == "off"


# ---- CPU offload ------------------------------------------------------------------------------

def _outputs(model, image):
    from showo2_cli import api

    t2i = api.text_to_image(model, ["a red circle"], api.GenerateOptions(steps=4, seed=3))[0]
    t2v = api.text_to_video(model, ["a green circle"], api.GenerateOptions(steps=3, frames=5, seed=5))[0]
    cap = api.caption(model, image, api.CaptionOptions(max_new_tokens=6)).answers
    return t2i.latents, t2i.frames, t2v.latents, t2v.frames, cap


@pytest.fixture(scope="module")
def plain_outputs(media_dir):
    from showo2_cli import api

    image = sorted(media_dir.glob("*.jpg"))[0]
    return image, _outputs(api.load("demo"), image)


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_gives_exactly_the_same_outputs_on_cpu(mode, plain_outputs):
    """On a CPU-only machine the execution device is the CPU: accelerate's hooks still run (the
    sequential ones keep every parameter on 'meta' between calls) and the outputs are identical."""
    import numpy as np
    import torch
    from accelerate.hooks import AlignDevicesHook, CpuOffload

    from showo2_cli import Showo2Pipeline

    image, ref = plain_outputs
    pipe = Showo2Pipeline.from_pretrained("demo")
    getattr(pipe, f"enable_{mode}_cpu_offload")(device="cpu")
    net, vae = pipe.network, pipe.vae
    assert net.device == vae.device == torch.device("cpu")
    calls = []
    if mode == "model":
        assert isinstance(net._hf_hook, CpuOffload) and isinstance(vae._hf_hook, CpuOffload)
        assert net._hf_hook.prev_module_hook.model is vae and vae._hf_hook.prev_module_hook.model is net
        for hook in (net._hf_hook, vae._hf_hook):
            original = hook.pre_forward
            hook.pre_forward = lambda module, *a, _o=original, **k: (calls.append(type(module).__name__), _o(module, *a, **k))[1]
    else:
        leaf = net.showo.model.layers[0].self_attn.q_proj
        assert isinstance(leaf._hf_hook, AlignDevicesHook) and leaf._hf_hook.offload
        assert {p.device.type for p in net.parameters()} == {"meta"} == {p.device.type for p in vae.parameters()}
    out = _outputs(pipe.model, image)
    for a, b in zip(out, ref, strict=True):
        assert (torch.equal(a, b) if isinstance(a, torch.Tensor) else np.array_equal(a, b) if isinstance(a, np.ndarray)
                else a == b)
    if mode == "model":  # both components were brought to the device by their hooks, in turn
        assert "Showo2Model" in calls and "WanVAE" in calls
    else:
        assert {p.device.type for p in net.parameters()} == {"meta"}
    with pytest.raises(Exception, match="offload"):
        pipe.to("cpu")


def test_offload_option_is_validated_once_and_the_cli_writes_the_same_image(tmp_path, capsys):
    from showo2_cli.cli import main
    from showo2_cli.errors import UsageError
    from showo2_cli.options import RuntimeOptions

    with pytest.raises(UsageError, match="--offload must be one of none, model, sequential"):
        RuntimeOptions(offload="disk").validate()
    outs = {}
    for mode in ("none", "sequential"):
        outs[mode] = tmp_path / f"{mode}.png"
        assert main(["t2i", "a red circle", "-m", "demo", "--steps", "3", "--seed", "1", "--device", "cpu",
                     "--offload", mode, "-o", str(outs[mode]), "--quiet"]) == 0
    # the same parameters; pixels equal to float rounding (accelerate's hooks re-create each weight
    # before its layer runs, and a re-allocated weight may take another vectorised code path: one
    # run in a fresh process gives identical bytes, one after another run in the same process can
    # differ by 1/255 in a few pixels)
    import numpy as np
    from PIL import Image

    images = {m: Image.open(p) for m, p in outs.items()}
    assert images["none"].info == images["sequential"].info
    diff = np.abs(np.asarray(images["none"]).astype(int) - np.asarray(images["sequential"]).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_from_pretrained_takes_diffusers_loading_arguments(tiny_model_dir, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    from showo2_cli import Showo2Pipeline
    from showo2_cli.errors import ModelError

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    plain = Showo2Pipeline.from_pretrained(pickled, device_map="cpu", low_cpu_mem_usage=False)  # read weights_only
    with pytest.raises(ModelError, match=r"use_safetensors=True .*pytorch_model\.bin.*showo2 convert"):
        Showo2Pipeline.from_pretrained(pickled, use_safetensors=True)
    safe = Showo2Pipeline.from_pretrained(tiny_model_dir, use_safetensors=True)
    one = dict(seed=1, num_inference_steps=3, output_type="latent")
    plain.set_progress_bar_config(disable=True)
    safe.set_progress_bar_config(disable=True)
    assert torch.equal(plain("a cat", **one).images, safe("a cat", **one).images)
    assert plain.device.type == "cpu"
    with pytest.raises(ValueError, match="one weight set"):
        Showo2Pipeline.from_pretrained(tiny_model_dir, variant="fp16")
    with pytest.raises(ValueError, match="HTTPS_PROXY"):  # huggingface_hub takes no per-call proxies
        Showo2Pipeline.from_pretrained(tiny_model_dir, proxies={"https": "http://127.0.0.1:9"})
    with pytest.raises(ValueError, match="whole of its repo or folder"):
        Showo2Pipeline.from_pretrained(tiny_model_dir, subfolder="unet")
    with pytest.raises(ValueError, match="one device"):
        Showo2Pipeline.from_pretrained(tiny_model_dir, device_map={"": 0})
    with pytest.raises(ValueError, match="not both"):
        Showo2Pipeline.from_pretrained(tiny_model_dir, device="cpu", device_map="cpu")
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Showo2Pipeline.from_pretrained(tiny_model_dir, colour="red")


def test_python_callers_get_diffusers_conventions_and_clear_type_errors(pipe, tiny_model_dir):
    """Found by a diffusers user's probe: each was silently wrong, an obscure AttributeError, or a
    refusal of what diffusers and transformers accept."""
    import numpy as np
    import torch
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )
    from PIL import Image

    from showo2_cli import Showo2Pipeline, api
    from showo2_cli.options import CaptionOptions, GenerateOptions, TextSampling

    pipe.set_progress_bar_config(disable=True)
    model = pipe.model
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    want = pipe.caption(img, max_new_tokens=6)
    chw = torch.from_numpy(img).permute(2, 0, 1)
    assert pipe.caption(chw, max_new_tokens=6) == want  # uint8 0-255 (torchvision's read_image): was all white
    assert pipe.caption(chw.float() / 255, max_new_tokens=6) == want
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):  # 0-255 floats were clipped to white
        pipe.caption(chw.float(), max_new_tokens=6)
    sixteen = Image.fromarray(img[..., 0].astype(np.uint16) * 257)  # mode I;16: was clipped to white
    assert sixteen.mode.startswith("I;16")
    assert pipe.caption(sixteen, max_new_tokens=6) == pipe.caption(Image.fromarray(img[..., 0]), max_new_tokens=6)

    three = GenerateOptions(steps=np.int64(3), guidance=np.float32(2.0), seed=np.int64(5), size=64)
    assert (three.steps, three.seed, three.size) == (3, 5, (64, 64)) and type(three.steps) is int
    one = api.text_to_image(model, "a cat", three)  # a string was three prompts: 'c', 'a', 't'
    assert len(one) == 1 and one[0].prompt == "a cat"
    assert len(api.caption(model, img_path(pipe, img), CaptionOptions(questions="What?", max_new_tokens=4)).answers) == 1
    assert TextSampling(temperature=np.float32(0.5)).temperature == 0.5
    with pytest.raises(TypeError, match="GenerateOptions"):
        api.text_to_image(model, ["a"], {"steps": 3})
    with pytest.raises(TypeError, match="pipe.model"):
        api.text_to_image(pipe, ["a"])
    with pytest.raises(TypeError, match="torch.Tensor"):
        api.text_to_image(model, ["a"], GenerateOptions(steps=3, noise=np.zeros((16, 4, 4))))

    latent = pipe("a cat", num_inference_steps=3, seed=1, output_type="latent").images
    frames = api.decode(latent[0], pipe.vae)  # an image's (C, h, w): "not enough values to unpack"
    assert frames.shape == (1, 64, 64, 3)
    assert np.array_equal(api.decode(latent[0].numpy(), pipe.vae), frames)
    with pytest.raises(ValueError, match="one latent at a time"):
        api.decode(latent, pipe.vae)
    with pytest.raises(ValueError, match="latents"):  # an InputError before (not a ValueError)
        pipe("a cat", num_inference_steps=3, latents=torch.randn(1, 16, 4, 4))
    with pytest.raises(ValueError, match="NaN"):  # a black image before
        pipe("a cat", num_inference_steps=3, latents=torch.full_like(latent, float("nan")))
    given = pipe("a cat", num_inference_steps=3, seed=1, latents=torch.randn(1, *latent.shape[1:]))
    assert given.results[0].seed is None and given.results[0].params["seed"] is None  # it recorded seed 1

    assert pipe.scheduler.config.shift == pipe.spec.shift  # it said 1.0 while sampling used 3.0
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    assert torch.equal(pipe("a cat", num_inference_steps=3, seed=1, output_type="latent").images, latent)  # a no-op
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, prediction_type="flow_prediction",
                                                         use_flow_sigmas=True)
    assert (pipe.sampler, pipe.default_shift) == ("unipc", None)  # the model's shift, not UniPC's default 1.0
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    assert (pipe.sampler, pipe.default_shift) == ("euler", 1.0)  # an explicit 1.0 is 1.0
    for ignored in (FlowMatchEulerDiscreteScheduler(stochastic_sampling=True),
                    DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                algorithm_type="sde-dpmsolver++")):
        with pytest.raises(ValueError, match="would be ignored"):
            pipe.scheduler = ignored
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=pipe.spec.shift)
    pipe.default_shift = None
    pipe.enable_vae_slicing()
    pipe.disable_vae_slicing()

    again = Showo2Pipeline.from_pretrained(tiny_model_dir, token=None, cache_dir=None, proxies=None,
                                           force_download=False, torch_dtype="auto")  # a loader's defaults
    assert again.dtype == torch.float32
    again.enable_model_cpu_offload(device="cpu")
    again.enable_model_cpu_offload(device="cpu")  # twice: allowed, as diffusers does
    with pytest.raises(TypeError, match="model name"):
        Showo2Pipeline.from_pretrained(None)


def img_path(pipe, img):
    """The image as a file, for the path-taking API functions."""
    import tempfile

    from PIL import Image

    path = tempfile.mkdtemp() + "/img.png"
    Image.fromarray(img).save(path)
    return path


def test_media_in_memory_is_taken_wherever_a_path_is(pipe, media_dir, tmp_path):
    """A video as a list of frames (what a video pipeline returns), and an image as a PIL image,
    array or tensor, are taken by caption, chat, image-to-video and encode, with the results of
    the same pixels read from a file (these took paths only, or uint8 arrays only)."""
    import numpy as np
    import torch
    from PIL import Image

    from showo2_cli import api
    from showo2_cli import media as M
    from showo2_cli.chat import Conversation
    from showo2_cli.options import TextSampling

    model = pipe.model
    video_path = media_dir / "video1.mp4"
    count = model.spec.und_video_frames
    video = M.read_video(video_path, num_frames=count)  # the frames the path is sampled to
    frames = [Image.fromarray(f) for f in video.frames]
    ask = dict(max_new_tokens=8)
    assert pipe.caption(frames, "What happens?", **ask) == pipe.caption(video_path, "What happens?", **ask)
    assert pipe.caption(torch.from_numpy(video.frames), "What happens?", **ask) == \
        pipe.caption(video_path, "What happens?", **ask)  # (T, H, W, 3) uint8
    photo = sorted(media_dir.glob("*.jpg"))[0]
    still = np.asarray(M.read_image(photo))
    chat = [Conversation(model), Conversation(model)]
    chat[0].attach(photo)
    chat[1].attach(torch.from_numpy(still).permute(2, 0, 1))  # a (3, H, W) uint8 tensor: a UsageError before
    answers = [c.ask("What is this?", TextSampling(max_new_tokens=6)) for c in chat]
    assert answers[0] == answers[1] and chat[1].turns[-1].media[0].source == "<image>"

    small = Image.fromarray(still).resize((96, 64))
    small.save(tmp_path / "s.png")
    opts = api.GenerateOptions(steps=3, frames=5, seed=4)
    i2v = [api.image_to_video(model, src, ["it moves"], opts)[0] for src in (tmp_path / "s.png", small)]
    assert np.array_equal(i2v[0].frames, i2v[1].frames)
    enc = [api.encode(src, pipe.vae) for src in (tmp_path / "s.png", np.asarray(small).astype(np.float32) / 255)]
    assert torch.equal(enc[0].latents, enc[1].latents) and enc[1].metadata["source"] == "<image>"
    clip = api.encode(frames[:5], pipe.vae)
    assert clip.metadata["kind"] == "video" and clip.metadata["frames"] == 5 and clip.metadata["fps"] is None
    with pytest.raises(TypeError, match="must be a path, a PIL image"):
        pipe.caption({"image": 1})
    with pytest.raises(ValueError, match="share one size"):
        pipe.caption([frames[0], small])


def test_pipeline_components_can_be_replaced(pipe, tmp_path):
    """diffusers' components are attributes to assign (pipe.transformer = torch.compile(...)); here
    network/transformer and vae were read-only properties (AttributeError on assignment)."""
    import torch

    from showo2_cli.modeling.vae import WanVAE

    call = dict(num_inference_steps=3, seed=1, output_type="latent")
    network, vae = pipe.network, pipe.vae
    before = pipe("a cat", **call).images
    assert pipe.transformer is network and pipe.components["transformer"] is network

    class Wrapped(torch.nn.Module):  # a wrapper as torch.compile makes one: the module in _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._orig_mod, name)

        def forward(self, *a, **k):
            return self._orig_mod(*a, **k)

    try:
        pipe.transformer = Wrapped(network)
        assert pipe.network._orig_mod is network
        assert torch.equal(pipe("a cat", **call).images, before)
        saved = pipe.save_pretrained(tmp_path / "saved")  # "_orig_mod." keys and shared tensors before
        assert (saved / "model.safetensors").exists()
        from types import SimpleNamespace

        with pytest.raises(TypeError, match="Show-o2 network"):  # not a module: no wrapper
            pipe.network = SimpleNamespace(_orig_mod=network)
        pipe.vae = vae.model  # a diffusers AutoencoderKLWan: wrapped with its own latent statistics
        assert isinstance(pipe.vae, WanVAE) and pipe.vae.model is vae.model
        with pytest.raises(TypeError, match="Show-o2 network"):
            pipe.network = torch.nn.Linear(2, 2)
        with pytest.raises(TypeError, match="WanVAE"):
            pipe.vae = torch.nn.Linear(2, 2)
        odd = type(vae.model)(**{**vae.model.config, "z_dim": 4, "latents_mean": [0.0] * 16})
        with pytest.raises(ValueError):  # a ModelError (an OSError) before: `except ValueError` missed it
            pipe.vae = odd
    finally:
        pipe.network, pipe.vae = network, vae


def test_to_takes_the_devices_and_dtypes_torch_names():
    """`pipe.to("cpu:0")` and `torch.device("cpu", 0)` (what a model's `.device` can read) were
    refused ("--device must be auto, cuda, mps or cpu"), and `to(dtype="float64")` was "unknown
    dtype" although `to(torch.float64)` and `from_pretrained(torch_dtype=torch.float64)` are taken."""
    import torch

    from showo2_cli.pipeline import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained("demo", device="cpu")
    for device in ("cpu:0", torch.device("cpu", 0), "CPU"):
        assert pipe.to(device).device.type == "cpu"
    assert pipe.to(dtype="float64").dtype == torch.float64
    assert pipe.to(dtype="torch.float32").dtype == torch.float32
    for bad in ("cuda:x", "gpu", "cpu:x"):
        with pytest.raises(ValueError, match="cuda:N"):
            pipe.to(bad)


def test_force_download_repairs_snapshot_entries_that_lead_out_of_the_cache(hub, tmp_path):
    """A snapshot entry that is a link out of the repo's blobs (to /etc/passwd-like files, or to
    nothing) or an empty folder where the file belongs: ``--force-download`` fetched the blob again
    but kept the entry, so the damage stayed ("not valid JSON", "is a directory") and the file
    outside the cache was read on every load (probe AL). Now the entry is replaced; what a link
    pointed to is left alone; a folder with files in it is one line naming it."""
    from showo2_cli.hub import download_model

    repo = small_repo(hub)
    snap = download_model(repo)
    outside = tmp_path / "passwd"
    outside.write_text("root:x:0:0\n")
    config, weights = snap / "config.json", snap / "model.safetensors"
    config.unlink()
    config.symlink_to(outside)
    weights.unlink()
    weights.symlink_to(tmp_path / "nowhere")
    assert download_model(repo, force_download=True) == snap
    assert config.read_bytes() == b"{}" and weights.read_bytes() == bytes(range(256)) * 200
    for entry in (config, weights):
        assert entry.resolve().parent == (hub.cache / "models--acme--small" / "blobs").resolve()
    assert outside.read_text() == "root:x:0:0\n"  # the link's target untouched
    config.unlink()
    config.mkdir()
    with pytest.raises(ModelError, match="unreadable config.json .the Hub's, or the cache's copy.*--force-download"):
        download_model(repo)  # it said "'acme/small' on the Hub has an unreadable config.json"
    assert download_model(repo, force_download=True) == snap and config.read_bytes() == b"{}"
    config.unlink()
    config.mkdir()
    (config / "mine.txt").write_text("keep")
    with pytest.raises(ModelError, match="config.json is a folder with files in it"):
        download_model(repo, force_download=True)
    assert (config / "mine.txt").read_text() == "keep"
