"""The `showo2` command line: parse, call the library, render.

Commands live in this package by group (generate, understand, latents, models,
train); each builds :mod:`showo2_cli.options` objects, validates them once, calls the library and
renders: results on stdout (plain, or one JSON object with ``--json``), notices and progress on
stderr. Errors are one line on stderr with a documented exit code (see ``errors.py``);
``--debug`` shows the traceback. What :func:`main` holds in place while a command runs is
:mod:`.signals`' (one signal policy) and :mod:`.streams`' (closed or narrow standard streams).
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import re
import sys
import traceback
import warnings
from typing import Annotated

import typer
import typer.core

from .. import __version__
from ..errors import Showo2Error, UsageError, is_out_of_memory, one_line
from ..launch import INTERRUPTS
from ..processes import process_rank
from .common import STATE, debug_from_env, held_notices, notice, safe_text, write
from .signals import TERMINATED, hold_signals, signal_policy
from .signals import Terminated as Terminated  # (re-exported: the policy's exception, where it was)
from .streams import closed_streams, escaping_output, quiet_stdout
from .usage_hints import dash_argument_hint, extra_argument_hint


class _Formatter(typer.core.TyperGroup.context_class.formatter_class):
    """Click's help layout, but on a narrow terminal the option-names column gives way (a long
    name's help then starts on the next line) before a word of the help text is broken in two."""

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        longest = max((len(word) for _, text in rows for word in text.split()), default=0)
        # click wraps the help in (width - names column - spacing - 2) characters
        super().write_dl(rows, max(0, min(col_max, self.width - col_spacing - 2 - longest)), col_spacing)


class _Context(typer.core.TyperGroup.context_class):
    formatter_class = _Formatter


class _Command(typer.core.TyperCommand):
    context_class = _Context


class _Group(typer.core.TyperGroup):
    """The root command. ``--help`` is click's plain layout (``rich_markup_mode=None`` below): Rich's
    six-column option tables cut option names and words with "…" at 80 columns. Ours: the command
    list by group (Generate, Understand, ...), each command's first paragraph in full (click's
    default cuts it to one line, with "..."), and :class:`_Formatter`."""

    context_class = _Context

    def format_commands(self, ctx, formatter) -> None:
        panels: dict[str, list[tuple[str, str]]] = {}
        names = [n for n in self.list_commands(ctx) if not getattr(self.get_command(ctx, n), "hidden", True)]
        width = max(map(len, names), default=0)  # one column for every group, as one table
        for name in names:
            cmd = self.get_command(ctx, name)
            text = inspect.cleandoc(cmd.short_help or cmd.help or "").split("\n\n")[0]
            panels.setdefault(getattr(cmd, "rich_help_panel", None) or "Commands", []).append(
                (name.ljust(width), " ".join(text.split())))
        for panel, rows in panels.items():
            with formatter.section(panel):
                formatter.write_dl(rows)

app = typer.Typer(
    name="showo2",
    help="Run the Show-o2 unified multimodal model: understand and generate images and videos.",
    cls=_Group,
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_ARGS: list[str] = []  # the arguments main() was called with (for errors raised before a command ran)

#: (panel, module, command names) in the order ``showo2 --help`` lists them.
GROUPS = [
    ("Generate", "generate", ("t2i", "t2v", "i2v")),
    ("Understand", "understand", ("caption",)),
    ("Latents", "latents", ("encode", "decode")),
    ("Models", "models", ("models", "pull", "info", "convert", "init")),
]


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and library warnings.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
):
    if debug:
        STATE["debug"] = True
    if version:
        write(sys.stdout, f"showo2 {__version__}\n")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None and not ctx.resilient_parsing:  # `showo2 --debug`: as `showo2`
        _main(["--help"], *_click_exceptions())
        raise typer.Exit(2)


def _register() -> None:
    import importlib

    for panel, module, names in GROUPS:
        mod = importlib.import_module(f".{module}", __package__)
        for name in names:
            app.command(name, cls=_Command, rich_help_panel=panel)(getattr(mod, name))
    from ..training.command import train as train_command

    app.command("train", cls=_Command, rich_help_panel="Train")(train_command)
    _register_extra()


def _register_extra() -> None:
    """Commands that hold a resident model: chat, serve (their heavy imports happen when they run)."""
    from .chat import chat
    from .serve import serve

    app.command("chat", cls=_Command, rich_help_panel="Understand")(chat)
    app.command("serve", cls=_Command, rich_help_panel="Serve")(serve)
    app.command("help", cls=_Command, hidden=True)(_help)


def _help(command: Annotated[list[str] | None, typer.Argument(help="A command.")] = None) -> int:
    """``showo2 help [COMMAND]``, as ollama, git and cargo take it: ``showo2 [COMMAND] --help``."""
    return _main([*(command or []), "--help"], *_click_exceptions())


_register()


# ---- entry point ------------------------------------------------------------------------------

# compiled at import: compiling it in _fail allocates, and an error report under a low `ulimit -v`
# failed with MemoryError (a traceback in place of the one line)
_LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")


# errors every process of a launch finds alike (it checks the whole run); the others (the model,
# memory, a write) may be one process's own
_SAID_BY_MAIN = frozenset({"interrupted", "usage", "input"})
_MAIN_GRACE_S = 5.0  # how long another process waits for the main one to say the same error


class _Ended(Exception):
    """The launcher's signal, during :func:`_main_said_it`'s wait."""


def _main_said_it() -> bool:
    """In a process other than the main one of a launch, with an error every process finds alike:
    wait (up to :data:`_MAIN_GRACE_S`) for the launcher to end this process, which it does once the
    main process has failed and said it. True then; False when nothing came (the main process did
    not fail alike, or no launcher watches): this process says it itself."""
    import signal
    import time

    def ended(signum, frame):
        raise _Ended

    if _MAIN_GRACE_S <= 0:
        return False
    before = {}
    try:
        for sig in INTERRUPTS:  # Python runs the handler in this thread, whichever thread the signal hit
            if signal.getsignal(sig) not in (None, signal.SIG_IGN):  # nohup's SIGHUP stays ignored
                before[sig] = signal.signal(sig, ended)
        time.sleep(_MAIN_GRACE_S)
        return False
    except _Ended:
        return True
    except (ValueError, OSError):  # not the main thread: no handler, no wait
        return False
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _rank() -> int:
    """This process's rank, for saying an error: 0 when the launch variables are themselves the error."""
    try:
        return process_rank()[0]
    except UsageError:
        return 0


def _fail(message: str, code: int, kind: str, alike: bool | None = None) -> int:
    alike = kind in _SAID_BY_MAIN if alike is None else alike
    if alike and _rank() != 0 and (kind == "interrupted" or _main_said_it()):
        # a launch's Ctrl-C or SIGTERM reaches every process, and a bad option or input fails each
        # alike (the launcher then ends the others): the main one says it, once, as training's
        # metrics and result lines come from process 0 alone; the exit code is the same everywhere
        return code
    for line in held_notices():  # kept for the main process of a launch, which will not say them now
        notice(line)
    # one line, whatever the message held (line and paragraph separators included), and no raw
    # control characters from file names reach the terminal
    try:
        message = safe_text(_LINE_BREAKS.sub(" ", message).strip() or kind)
    except MemoryError:  # no room even for the message: say what the exit code says
        message = kind
    done, listing = STATE.get("partial") or ({}, None)  # what the command finished before it failed
    try:
        if STATE["json"] or _json_requested(_ARGS):
            write(sys.stderr, f"showo2: error: {message}\n")
            write(sys.stdout, json.dumps({"error": {"kind": kind, "message": message, "exit_code": code}, **done},
                                         default=str) + "\n")
        else:
            if listing:  # on stdout as a finished run lists them, before the error
                write(sys.stdout, listing + "\n")
                sys.stdout.flush()
            write(sys.stderr, f"showo2: error: {message}\n")
        sys.stderr.flush()
        sys.stdout.flush()
    except (OSError, ValueError, MemoryError):  # a closed or broken stdout/stderr: the exit code still tells
        pass
    return code


def _click_exceptions():
    """Typer may vendor its own click; handle both its exception classes and click's."""
    exits, aborts, errors = [typer.Exit], [typer.Abort], []
    try:
        from typer._click import exceptions as vendored

        errors.append(vendored.ClickException)
    except ImportError:
        pass
    try:
        from click import exceptions as upstream

        exits.append(upstream.Exit)
        aborts.append(upstream.Abort)
        errors.append(upstream.ClickException)
    except ImportError:
        pass
    return tuple(exits), tuple(aborts), tuple(errors)


def main(argv: list[str] | None = None) -> int:
    exit_types, abort_types, click_types = _click_exceptions()

    args = list(sys.argv[1:] if argv is None else argv)
    debug_at = _option_index(args, "--debug")
    if debug_at is not None and debug_at > 0:  # `showo2 t2i ... --debug`: the root option, moved to its place
        args = ["--debug", *args[:debug_at], *args[debug_at + 1:]]
    _ARGS[:] = args
    # fresh state for every call (main() may run several times in one process)
    STATE.update(debug=debug_from_env() or debug_at is not None, json=False, quiet=False,
                 emitted=False, partial=None, held=None, said=None)
    if not STATE["debug"]:  # the libraries' own logging stays quiet unless --debug
        for var in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "HF_HUB_VERBOSITY"):
            os.environ.setdefault(var, "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if _folder_gone() and args and args[0] != "help" and not {"-h", "--help", "--version"} & set(args):
        # torch's own libraries cannot load there either (oneMKL: "FATAL ERROR: Cannot load
        # libtorch_cpu.so", exit 2): say what is wrong before anything imports it
        return _fail("the current folder no longer exists (it was deleted or moved): cd to an existing folder "
                     "and run the command again", 5, "output")
    with warnings.catch_warnings(), signal_policy(), closed_streams(), escaping_output():
        if not STATE["debug"]:  # stderr carries notices and one error line; library warnings only with --debug
            warnings.simplefilter("ignore")
        TERMINATED[0] = 0
        try:
            return _main(args, exit_types, abort_types, click_types)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP while a failure was being reported (the
            # error line, the outputs written): the report stops there, with the interruption's code
            hold_signals()
            return 128 + TERMINATED[0] if TERMINATED[0] else 130


def _interrupted() -> int:
    hold_signals()  # a second Ctrl-C while this one is reported changes nothing
    if STATE.get("emitted"):  # it came after the command's result was out: the command succeeded
        return 0
    if TERMINATED[0]:
        import signal

        said = "hung up" if TERMINATED[0] == getattr(signal, "SIGHUP", None) else "terminated"
        return _fail(said, 128 + TERMINATED[0], "interrupted")
    return _fail("interrupted", 130, "interrupted")


def _main(args: list[str], exit_types, abort_types, click_types) -> int:
    try:
        rv = app(args=args, prog_name="showo2", standalone_mode=False)
        if rv == 130:  # typer turns Ctrl-C into a returned 130 when not in standalone mode
            return _interrupted()
        return rv if isinstance(rv, int) else 0
    except exit_types as e:
        return e.exit_code
    except abort_types:
        return _interrupted()
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:  # the reader went away (`| head -c1`): stop quietly, as Unix tools do
        quiet_stdout()
        return 141
    except SystemExit as e:  # typer catches a broken pipe itself and exits 1: still the reader gone
        if isinstance(e.__context__, OSError) and e.__context__.errno == errno.EPIPE:
            quiet_stdout()
            return 141
        raise
    except click_types as e:
        if STATE["debug"]:
            traceback.print_exc()
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.stderr.write(e.format_message() + "\n")
            return 2
        # pydantic's refusal opens "Value error, "; click quotes what was typed whole (a pasted paragraph: 100 KB)
        message = one_line(e.format_message().replace(": Value error, ", ": "), 500, word=200)
        ctx = getattr(e, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        return _fail(message + dash_argument_hint(e, args) + extra_argument_hint(e, args) + where, 2, "usage")
    except Showo2Error as e:
        if isinstance(e.__cause__, BrokenPipeError):
            quiet_stdout()
            return 141
        if STATE["debug"]:  # the traceback, then the same line and exit code as without --debug
            traceback.print_exc()
        return _fail(*describe(e), e.alike)
    except Exception as e:  # out of memory, a full disk, or a bug: still one line unless --debug
        if STATE["debug"]:
            traceback.print_exc()
        return _fail(*describe(e))


def describe(e: Exception) -> tuple[str, int, str]:
    """The message, exit code and kind the command line reports for a failure (another process
    of a launch reports one of these for the process that met it)."""
    if isinstance(e, Showo2Error):
        return " ".join(str(e).split("\n")), e.exit_code, e.kind
    if isinstance(e, MemoryError):
        return "out of memory", 6, "resource"
    if is_out_of_memory(e):  # torch's allocators raise RuntimeError
        return f"out of memory{_memory_advice(_ARGS)}", 6, "resource"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        # a full disk met outside the project's own writes (click's --help > /dev/full): an output
        # error (exit 5), as common.write makes it, not a bug
        return f"cannot write the output ({e.strerror or e})", 5, "output"
    return (f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
            "(run with --debug for the traceback)", 1, "internal")


def _json_requested(args: list[str]) -> bool:
    """Whether ``--json`` is one of the options in args (for errors raised before the command set
    its output state): not the value of another option (``-q --json`` asks the question
    "--json"), nor an argument after ``--``."""
    return _option_index(args, "--json") is not None


def _option_index(args: list[str], flag: str) -> int | None:
    """Where ``flag`` (a flag taking no value) is one of the options in args: before the command, or
    among the command's options but not the value of another option, nor after ``--``."""
    if flag not in args:
        return None
    try:
        import typer.main

        group = typer.main.get_command(app)
        commands = getattr(group, "commands", {})
        command = None
        for i, arg in enumerate(args):
            if arg == "--":
                return None
            if arg in commands:
                command, start = commands[arg], i + 1
                break
            if arg == flag:  # before any command: a root option (or an unknown one, still asked for)
                return i
        if command is None:
            return None
        # options that take a value (arguments have no is_flag; flags and counters take none)
        takes_value = {o for p in command.params if getattr(p, "is_flag", None) is False
                       and not getattr(p, "count", False) for o in p.opts}
    except Exception:  # introspection only: fall back to the plain test
        return args.index(flag)
    skip = False
    for i in range(start, len(args)):
        arg = args[i]
        if skip:
            skip = False
        elif arg == "--":
            return None
        elif arg == flag:
            return i
        elif arg in takes_value:
            skip = True
    return None


def _memory_advice(args: list[str]) -> str:
    """What the command that ran out of memory can do about it: only options it has."""
    try:
        import typer.main

        group = typer.main.get_command(app)
        command = next((group.commands[a] for a in args if a in getattr(group, "commands", {})), None)
        opts = {o for p in (command.params if command else []) for o in getattr(p, "opts", ())}
    except Exception:  # advice only: never a second error
        return ""

    def either(names: list[str]) -> str:
        return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]

    lower = [o for o in ("--size", "--frames", "--batch-size", "--max-new-tokens") if o in opts]
    other = [o for o in ("--offload", "--quantize", "--vae-tiling") if o in opts]
    parts = ([f"lower {either(lower)}"] if lower else []) + ([f"try {either(other)}"] if other else []) + \
        (["keep the memory guard on: --max-memory"] if "--max-memory" in opts else [])
    return f" ({'; '.join(parts)})" if parts else ""


def _folder_gone() -> bool:
    """Whether the current folder was deleted under the shell that started us."""
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    except OSError:  # unreadable, or a path longer than the system returns: still there
        return False
    return False
