"""Hostile corpus, round KD: the machine around the tool (disk, permissions, environment, signals).

    python benchmarks/hostile_corpus_kd.py [--only SUBSTRING,...] [--list] [--keep]

Each case runs ``showo2`` (this checkout's sources, via ``python -m showo2_cli``) in a scratch
folder (``tempfile.mkdtemp``) with the bundled demo model, under an environment a user's machine
may give it: a file-size limit (RLIMIT_FSIZE, as a quota cuts a write), a folder it may not write
(as an unprivileged user through ``unshare --user --map-user``, skipped where that is refused),
another user's files in a sticky folder (as root), an output whose parent is a file, names at
NAME_MAX and paths past PATH_MAX, ``HF_HOME``/``HF_HUB_CACHE`` at a file or at a damaged cache,
``LC_ALL=C``, ``PYTHONIOENCODING=ascii``, ``TMPDIR`` unwritable, ``COLUMNS=5``, closed standard
streams, a reader that leaves early, and SIGTERM/SIGINT in the sampler, while a model folder or a
checkpoint is staged, and while a file is written. The bar:

* exit code as expected (an error: non-zero, ``showo2: error: ...`` as stderr's one line, never a
  traceback; a valid-but-odd environment: exit 0);
* an error line in the project's words: no "[Errno", no library's "(os error", no hidden temporary's name;
* a file that existed before is unchanged (``keep``), none is left where the command failed
  (``absent``), and no hidden temporary (``.*.tmp*``, ``.*.partial*``) is left in the folder.

Prints PASS/FAIL per case and the counts; exit 1 when any case fails. Timings are not judged.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TIMEOUT = 240.0

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_corpus_jb import shared_media  # noqa: E402  (the media folder found as tests/conftest.py finds it)

PHOTO = shared_media() / "pexels-taryn-elliott-4144459.jpg"
FAST = ["--steps", "2", "--seed", "1"]
#: what an error line must not hold: errno's own words, a library's, a hidden temporary file's name
RAW_ERRNO = ("[Errno", "(os error", ".tmp.", "File exists")


@dataclass
class Case:
    name: str
    argv: list[str]  # after `showo2`
    expect: str = "error"  # "error": non-zero and one clean line; "ok": exit 0; "whole-or-none"
    code: int | None = None  # the exact exit code wanted
    fsize: int | None = None  # RLIMIT_FSIZE in bytes
    env: dict = field(default_factory=dict)
    unprivileged: bool = False  # run as uid 1000 in a user namespace (a read-only folder binds)
    keep: list[str] = field(default_factory=list)  # files/folders unchanged afterwards
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards
    present: list[str] = field(default_factory=list)  # paths that must exist afterwards
    folders: list[str] = field(default_factory=list)  # folders that must hold no hidden temporary
    shell: str = ""  # a bash line run in place of argv ({showo2} is the command)
    signal_after: tuple[int, float] | None = None  # (signal, seconds) sent to the command
    signal_when: str = ""  # or: send SIGTERM once a path matches this glob pattern
    stdin: bytes = b""
    not_in_err: str = ""  # a phrase stderr must not hold (a line printed only once the job ran: "seed ")
    needs: str = ""  # "userns" or "root-userns" (see can()): skipped where the machine refuses it


def digest(p: Path) -> str:
    """A file's sha256, or a folder's (names and contents), or 'absent'."""
    if p.is_symlink() and not p.exists():
        return "dangling"
    if p.is_file():
        return hashlib.sha256(p.read_bytes()).hexdigest()
    if p.is_dir():
        h = hashlib.sha256()
        for q in sorted(p.rglob("*")):
            h.update(str(q.relative_to(p)).encode())
            if q.is_file():
                h.update(q.read_bytes())
        return h.hexdigest()
    return "absent"


def leftovers(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(q.name for q in folder.iterdir()
                  if q.name.startswith(".") and (".tmp" in q.name or ".partial" in q.name or "staging" in q.name))


def can(what: str) -> bool:
    """Whether this machine lets the corpus make the environment ``what`` needs: "userns" (an
    unprivileged user through a user namespace), "root-userns" (that, and files of other users)."""
    r = subprocess.run(["unshare", "--user", "--map-user=1000", "--map-group=1000", "true"], capture_output=True)
    return r.returncode == 0 and (what == "userns" or os.geteuid() == 0)


def prepare(d: Path) -> dict[str, Path]:
    """The inputs: an old image (with its sidecar), a latents file, a tiny model, a folder made
    read-only, a full tmpfs (as root), a damaged HF cache."""
    f: dict[str, Path] = {}
    env = base_env()
    run = lambda *a: subprocess.run([PY, "-m", "showo2_cli", *a], env=env, capture_output=True, check=True, cwd=d)  # noqa: E731
    run("t2i", "an old image", "-o", str(d / "old.png"), *FAST, "--quiet")
    run("encode", str(PHOTO), "-o", str(d / "lat.safetensors"), "--size", "64", "--quiet")
    run("init", "-o", str(d / "tiny"), "--quiet")
    (d / "ro").mkdir()
    (d / "ro" / "kept.png").write_bytes((d / "old.png").read_bytes())
    os.chmod(d / "ro", 0o555)
    (d / "afile").write_text("a plain file\n")
    # a shared folder (mode 1777, as /tmp) with another user's image and model folder (as root only)
    (d / "sticky").mkdir()
    shutil.copy(d / "old.png", d / "sticky" / "theirs.png")
    shutil.copytree(d / "tiny", d / "sticky" / "theirs")
    os.chmod(d / "sticky", 0o1777)
    if os.geteuid() == 0:
        for q in [d / "sticky" / "theirs.png", d / "sticky" / "theirs", *(d / "sticky" / "theirs").rglob("*")]:
            os.chown(q, 1234, 1234)
        os.chown(d / "sticky", 1235, 1235)
    # a Hugging Face cache whose refs/main names a missing snapshot, and one with dangling links
    for name, how in (("hf_missing", "missing"), ("hf_dangling", "dangling")):
        repo = d / name / "hub" / "models--acme--show-o2-tiny"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0" * 40)
        if how == "dangling":
            snap = repo / "snapshots" / ("0" * 40)
            snap.mkdir(parents=True)
            for q in (d / "tiny").iterdir():
                if q.is_file():
                    (snap / q.name).symlink_to(repo / "blobs" / ("gone-" + q.name))
    train = d / "train.toml"
    train.write_text((ROOT / "examples" / "train_tiny.toml").read_text().replace('"../runs/tiny"', '"run"')
                     .replace("save_every = 100", "save_every = 1").replace("eval_every = 50", "eval_every = 0")
                     .replace("log_every = 10", "log_every = 1"))
    f["train"] = train
    return f


def base_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("SHOWO2_MODEL", None)
    return env


def cases(d: Path, f: dict[str, Path]) -> list[Case]:
    o = str(d)
    long_stem = "n" * 251  # 255 bytes with ".png"; its sidecar ".json" is 256
    deep = o + "/" + "/".join(["d" * 200] * 21)  # past PATH_MAX (4096)
    c = [
        # ------------------------------------------------------------ a file-size limit (a quota)
        Case("fsize t2i --overwrite keeps the old image", ["t2i", "new", "-o", f"{o}/old.png", "--overwrite", *FAST],
             code=5, fsize=2000, keep=[f"{o}/old.png", f"{o}/old.json"], folders=[o]),
        Case("fsize t2i new image: nothing left", ["t2i", "new", "-o", f"{o}/f1.png", *FAST], code=5, fsize=2000,
             absent=[f"{o}/f1.png", f"{o}/f1.json"], folders=[o]),
        Case("fsize t2i --save-latents: image fits, latents not", ["t2i", "new", "-o", f"{o}/f2.png", "--save-latents", *FAST],
             code=5, fsize=6000, absent=[f"{o}/f2.png", f"{o}/f2.json", f"{o}/f2.latents.safetensors"], folders=[o]),
        Case("fsize t2v mp4", ["t2v", "new", "-o", f"{o}/v.mp4", *FAST], code=5, fsize=3000,
             absent=[f"{o}/v.mp4", f"{o}/v.json"], folders=[o]),
        Case("fsize t2v gif", ["t2v", "new", "-o", f"{o}/v.gif", *FAST], code=5, fsize=3000,
             absent=[f"{o}/v.gif"], folders=[o]),
        Case("fsize encode", ["encode", str(PHOTO), "-o", f"{o}/e.safetensors", "--size", "64"], code=5, fsize=1000,
             absent=[f"{o}/e.safetensors"], folders=[o]),
        Case("fsize decode", ["decode", f"{o}/lat.safetensors", "-o", f"{o}/dd.png"], code=5, fsize=1000,
             absent=[f"{o}/dd.png"], folders=[o]),
        Case("fsize init", ["init", "-o", f"{o}/i1"], code=5, fsize=100_000, absent=[f"{o}/i1"], folders=[o]),
        Case("fsize convert --overwrite keeps the old folder", ["convert", f"{o}/tiny", "-o", f"{o}/tiny", "--overwrite"],
             expect="error", fsize=100_000, keep=[f"{o}/tiny"], folders=[o]),
        Case("fsize convert demo", ["convert", "demo", "-o", f"{o}/c1"], code=5, fsize=100_000,
             absent=[f"{o}/c1"], folders=[o]),
        Case("fsize train checkpoint", ["train", str(f["train"]), "-o", f"{o}/run1", "--max-steps", "2"],
             code=5, fsize=50_000, folders=[o, f"{o}/run1"]),
        Case("fsize chat /save goes on", ["chat", "--quiet"], expect="ok", fsize=10,
             stdin=f"/save {o}/tr.json\n/quit\n".encode(), absent=[f"{o}/tr.json"], folders=[o]),
        Case("stdout on /dev/full", [], code=5, shell="{showo2} caption " + str(PHOTO) + " --max-new-tokens 2 --json >/dev/full"),
        # ------------------------------------------------------------ a folder it may not write
        Case("read-only folder t2i", ["t2i", "x", "-o", f"{o}/ro/x.png", *FAST], code=5, unprivileged=True,
             absent=[f"{o}/ro/x.png"], needs="userns"),
        Case("read-only folder t2i --overwrite", ["t2i", "x", "-o", f"{o}/ro/kept.png", "--overwrite", *FAST], code=5,
             unprivileged=True, keep=[f"{o}/ro/kept.png"], needs="userns"),
        Case("read-only folder encode", ["encode", str(PHOTO), "-o", f"{o}/ro/e.safetensors"], code=5, unprivileged=True,
             needs="userns"),
        Case("read-only folder convert", ["convert", "demo", "-o", f"{o}/ro/c"], code=5, unprivileged=True, needs="userns"),
        Case("read-only folder init", ["init", "-o", f"{o}/ro/i"], code=5, unprivileged=True, needs="userns"),
        Case("read-only folder train", ["train", str(f["train"]), "-o", f"{o}/ro/run", "--max-steps", "1"], code=5,
             unprivileged=True, needs="userns"),
        Case("read-only folder chat /save goes on", ["chat", "--quiet"], expect="ok", unprivileged=True,
             stdin=f"/save {o}/ro/tr.json\n/quit\n".encode(), absent=[f"{o}/ro/tr.json"], needs="userns"),
        Case("another user's file in a sticky folder, --overwrite", ["t2i", "x", "-o", f"{o}/sticky/theirs.png",
             "--overwrite", *FAST], code=5, unprivileged=True, keep=[f"{o}/sticky/theirs.png"], folders=[f"{o}/sticky"],
             not_in_err="seed ",
             needs="root-userns"),
        Case("another user's model folder in a sticky folder, convert --overwrite",
             ["convert", "demo", "-o", f"{o}/sticky/theirs", "--overwrite"], code=5, unprivileged=True,
             keep=[f"{o}/sticky/theirs"], folders=[f"{o}/sticky"], needs="root-userns"),
        Case("one's own new file in a sticky folder", ["t2i", "x", "-o", f"{o}/sticky/mine.png", *FAST], expect="ok",
             unprivileged=True, present=[f"{o}/sticky/mine.png"], needs="root-userns"),
        Case("HF_HOME read-only, demo t2i works", ["t2i", "x", "-o", f"{o}/hfro.png", *FAST], expect="ok",
             unprivileged=True, env={"HF_HOME": f"{o}/ro/hf"}, needs="userns"),
        Case("TMPDIR read-only, demo t2i works", ["t2i", "x", "-o", f"{o}/tmpro.png", *FAST], expect="ok",
             unprivileged=True, env={"TMPDIR": f"{o}/ro"}, needs="userns"),
        Case("TMPDIR read-only, t2v mp4 works", ["t2v", "x", "-o", f"{o}/tmpro2.mp4", *FAST], expect="ok",
             unprivileged=True, env={"TMPDIR": f"{o}/ro"}, needs="userns"),
        # ------------------------------------------------------------ odd output paths
        Case("output parent is a file", ["t2i", "x", "-o", f"{o}/afile/x.png", *FAST], code=5),
        Case("init into a file's place", ["init", "-o", f"{o}/afile"], expect="error", keep=[f"{o}/afile"]),
        Case("train run folder is a file", ["train", str(f["train"]), "-o", f"{o}/afile", "--max-steps", "1"],
             expect="error", keep=[f"{o}/afile"]),
        Case("encode output is a folder", ["encode", str(PHOTO), "-o", f"{o}/tiny"], code=5, keep=[f"{o}/tiny"]),
        Case("name at NAME_MAX whose sidecar is over it", ["t2i", "x", "-o", f"{o}/{long_stem}.png", *FAST],
             expect="error", absent=[f"{o}/{long_stem}.png"], folders=[o]),
        Case("name at NAME_MAX, --save-latents", ["t2i", "x", "-o", f"{o}/{'m' * 240}.png", "--save-latents", *FAST],
             expect="error", absent=[f"{o}/{'m' * 240}.png"], folders=[o]),
        Case("encode name at NAME_MAX", ["encode", str(PHOTO), "-o", f"{o}/{'e' * 243}.safetensors", "--size", "64"],
             expect="ok", present=[f"{o}/{'e' * 243}.safetensors"], folders=[o]),
        Case("convert folder name at NAME_MAX", ["convert", f"{o}/tiny", "-o", f"{o}/{'c' * 255}"], expect="ok",
             present=[f"{o}/{'c' * 255}/config.json"], folders=[o]),
        Case("init folder name at NAME_MAX", ["init", "-o", f"{o}/{'i' * 255}"], expect="ok",
             present=[f"{o}/{'i' * 255}/config.json"], folders=[o]),
        Case("train run name at NAME_MAX", ["train", str(f["train"]), "-o", f"{o}/{'r' * 255}", "--max-steps", "1"],
             expect="ok", folders=[o]),
        Case("path past PATH_MAX", ["t2i", "x", "-o", deep + "/x.png", *FAST], code=5),
        Case("output is a link to elsewhere, --overwrite", [], expect="ok", keep=[f"{o}/afile"],
             shell=f"ln -sf {o}/afile {o}/ln.png && {{showo2}} t2i x -o {o}/ln.png --overwrite " + " ".join(FAST)),
        # ------------------------------------------------------------ the environment
        Case("HF_HOME is a file, demo", ["t2i", "x", "-o", f"{o}/hf1.png", *FAST], expect="ok",
             env={"HF_HOME": f"{o}/afile"}),
        Case("HF_HUB_CACHE is a file, models", ["models"], expect="ok", env={"HF_HUB_CACHE": f"{o}/afile"}),
        Case("HF_HUB_CACHE is a file, a repo id", ["info", "-m", "acme/show-o2-tiny"], code=4,
             env={"HF_HUB_CACHE": f"{o}/afile", "HF_HUB_OFFLINE": "1"}),
        Case("refs/main names a missing snapshot", ["info", "-m", "acme/show-o2-tiny"], code=4,
             env={"HF_HOME": f"{o}/hf_missing", "HF_HUB_OFFLINE": "1"}),
        Case("snapshot of dangling links", ["info", "-m", "acme/show-o2-tiny"], code=4,
             env={"HF_HOME": f"{o}/hf_dangling", "HF_HUB_OFFLINE": "1"}),
        Case("snapshot of dangling links, models", ["models"], expect="ok",
             env={"HF_HOME": f"{o}/hf_dangling", "HF_HUB_OFFLINE": "1"}),
        Case("LC_ALL=C, a non-ASCII prompt and path", ["t2i", "un café crème", "-o", f"{o}/café.png", *FAST],
             expect="ok", env={"LC_ALL": "C", "LANG": "C"}, present=[f"{o}/café.png"]),
        Case("LC_ALL=C, caption a non-ASCII path", [], expect="ok", env={"LC_ALL": "C", "LANG": "C"},
             shell=f"cp {PHOTO} {o}/été.jpg && {{showo2}} caption {o}/été.jpg --max-new-tokens 2"),
        Case("COLUMNS=5 TERM=dumb NO_COLOR, t2i", ["t2i", "x", "-o", f"{o}/col.png", *FAST], expect="ok",
             env={"COLUMNS": "5", "TERM": "dumb", "NO_COLOR": "1"}),
        Case("COLUMNS=5, --help", ["t2i", "--help"], expect="ok", env={"COLUMNS": "5"}),
        Case("COLUMNS=-3 LINES=x", ["t2i", "x", "-o", f"{o}/col2.png", *FAST], expect="ok",
             env={"COLUMNS": "-3", "LINES": "x"}),
        Case("all three streams closed", [], expect="ok", present=[f"{o}/closed.png"],
             shell="{showo2} t2i x -o " + f"{o}/closed.png " + " ".join(FAST) + " <&- >&- 2>&-"),
        Case("reader leaves early", [], expect="ok",
             shell="{showo2} caption " + f"{PHOTO} -q a -q b -q c --max-new-tokens 3 | head -c 1 >/dev/null; "
                   "test ${PIPESTATUS[0]} = 0 -o ${PIPESTATUS[0]} = 141"),
        # ------------------------------------------------------------ signals at each phase
        Case("SIGTERM in the sampler", ["t2i", "x", "-o", f"{o}/old.png", "--overwrite", "--steps", "400"], code=143,
             signal_after=(signal.SIGTERM, 14.0), keep=[f"{o}/old.png", f"{o}/old.json"], folders=[o]),
        Case("SIGINT in the sampler", ["t2i", "x", "-o", f"{o}/s2.png", "--steps", "400"], code=130,
             signal_after=(signal.SIGINT, 14.0), absent=[f"{o}/s2.png", f"{o}/s2.json"], folders=[o]),
        Case("SIGTERM while a checkpoint is written", ["train", str(f["train"]), "-o", f"{o}/run2", "--max-steps", "50"],
             expect="error", signal_when=f"{o}/run2/checkpoint-000001", folders=[o, f"{o}/run2"]),
        Case("SIGTERM while convert --overwrite stages the folder", ["convert", "demo", "-o", f"{o}/tiny", "--overwrite"],
             expect="error", signal_when=f"{o}/.tiny.*.tmp/*", keep=[f"{o}/tiny"], folders=[o]),
        Case("SIGTERM while init stages the folder", ["init", "-o", f"{o}/i2"],
             expect="error", signal_when=f"{o}/.i2.*.tmp/*", absent=[f"{o}/i2"], folders=[o]),
        Case("SIGTERM while a checkpoint is staged", ["train", str(f["train"]), "-o", f"{o}/run3", "--max-steps", "50"],
             expect="error", signal_when=f"{o}/run3/.checkpoint-*.tmp/*", folders=[o, f"{o}/run3"]),
        Case("SIGTERM while encode writes", ["encode", str(PHOTO), "-o", f"{o}/e2.safetensors", "--size", "64"],
             expect="whole-or-none", signal_when=f"{o}/.e2.safetensors.*", absent=[f"{o}/e2.safetensors"], folders=[o]),
        Case("stdin closed, t2i -", [], code=3, shell="{showo2} t2i - -o " + f"{o}/sc.png <&-"),
        Case("stdin closed, chat", [], code=3, shell="{showo2} chat --quiet <&-"),
        Case("models into a closed pipe", [], expect="ok",
             shell="{showo2} models | head -c 1 >/dev/null; test ${PIPESTATUS[0]} = 0 -o ${PIPESTATUS[0]} = 141"),
        Case("PYTHONIOENCODING=ascii, a non-ASCII output", ["t2i", "café", "-o", f"{o}/asc-é.png", *FAST],
             expect="ok", env={"PYTHONIOENCODING": "ascii"}, present=[f"{o}/asc-é.png"]),
        Case("garbage thread variables", ["t2i", "x", "-o", f"{o}/omp.png", *FAST], expect="ok",
             env={"OMP_NUM_THREADS": "abc", "MKL_NUM_THREADS": "-1", "CUDA_VISIBLE_DEVICES": "zz"}),
    ]
    return c


def run_case(case: Case, d: Path) -> tuple[bool, str]:
    env = base_env()
    env.update(case.env)
    before = {p: digest(Path(p)) for p in case.keep}
    cmd = [PY, "-m", "showo2_cli", *case.argv]
    if case.shell:
        line = case.shell.replace("{showo2}", f"{PY} -m showo2_cli")
        cmd = ["bash", "-c", line]
    if case.unprivileged:
        cmd = ["unshare", "--user", "--map-user=1000", "--map-group=1000", *cmd]
    limit = case.fsize

    def child():
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # (a harness run in the background has it ignored)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    t0 = time.time()
    p = subprocess.Popen(cmd, env=env, cwd=d, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=child)
    if case.signal_after or case.signal_when:
        import threading  # noqa: PLC0415

        def sender():
            if case.signal_after:
                time.sleep(case.signal_after[1])
                sig = case.signal_after[0]
            else:
                sig = signal.SIGTERM
                while not glob.glob(case.signal_when) and p.poll() is None and time.time() - t0 < TIMEOUT:
                    time.sleep(0.005)
            if p.poll() is None:
                p.send_signal(sig)

        threading.Thread(target=sender, daemon=True).start()
    try:
        out, err = p.communicate(case.stdin, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return False, f"hang (over {TIMEOUT:.0f} s)"
    rc = p.returncode
    text = err.decode("utf-8", "replace")
    lines = [x for x in text.splitlines() if x.strip()]
    why = []
    if "Traceback" in text:
        why.append("traceback: " + text[-600:])
    if case.expect == "whole-or-none":  # a signal that may come after the write: exit 0 and the file, or none
        if rc == 0:
            case.absent = []
        elif rc != 143 or not lines or lines[-1] != "showo2: error: terminated":
            why.append(f"exit {rc}: {lines[-1:]}")
    elif case.expect == "ok":
        if rc != 0:
            why.append(f"exit {rc}: {text.strip()[-400:]}")
    else:
        if rc == 0 or rc < 0:
            why.append(f"exit {rc}")
        if case.code is not None and rc != case.code:
            why.append(f"exit {rc}, wanted {case.code}")
        errors = [x for x in lines if x.startswith("showo2: error:")]
        if any(k in x for x in errors for k in RAW_ERRNO):
            why.append(f"an error said in errno's words or naming a hidden temporary: {errors[-1][-160:]}")
        if len(errors) != 1 or (case.signal_after is None and not case.signal_when and lines and lines[-1] != errors[-1]):
            why.append(f"not one error line: {lines[-3:]}")
    if case.not_in_err and case.not_in_err in text:
        why.append(f"stderr holds {case.not_in_err!r}")
    for p_ in case.keep:
        if digest(Path(p_)) != before[p_]:
            why.append(f"changed: {Path(p_).name[:40]}")
    for p_ in case.absent:
        if os.path.lexists(p_):
            why.append(f"left: {Path(p_).name[:40]}")
    for p_ in case.present:
        if not os.path.lexists(p_):
            why.append(f"missing: {Path(p_).name[:40]}")
    for folder in case.folders:
        left = leftovers(Path(folder))
        if left:
            why.append(f"temporaries left in {Path(folder).name[:30]}: {left[:3]}")
    first = (lines[-1] if lines else "")[:160]
    return not why, "; ".join(why) or f"exit {rc} {first}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="showo2-kd-"))
    try:
        f = prepare(d) if not a.list else {"train": d / "train.toml"}
        todo = cases(d, f)
        if a.only:
            keys = a.only.split(",")
            todo = [c for c in todo if any(k in c.name for k in keys)]
        if a.list:
            print("\n".join(c.name for c in todo))
            return 0
        ok = n = 0
        skipped = 0
        have = {w: can(w) for w in ("userns", "root-userns")}
        for case in todo:
            if case.needs and not have[case.needs]:
                skipped += 1
                print(f"SKIP  {case.name} (no {case.needs})", flush=True)
                continue
            t0 = time.time()
            good, why = run_case(case, d)
            n += 1
            ok += good
            print(f"{'PASS' if good else 'FAIL'}  {case.name} ({time.time() - t0:.0f} s): {why}", flush=True)
        print(f"\n{ok}/{n} passed, {n - ok} failed, {skipped} skipped")
        return 0 if ok == n else 1
    finally:
        if a.keep:
            print(f"kept {d}")
        else:
            os.chmod(d / "ro", 0o755) if (d / "ro").exists() else None
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
