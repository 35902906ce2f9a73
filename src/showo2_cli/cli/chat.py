"""``chat``: a multi-turn conversation with one resident model, on a terminal or over a pipe.

On a terminal: line editing and history (prompt_toolkit when installed, else readline), answers
streamed as they are produced, Ctrl-C stops an answer, Ctrl-D or ``/quit`` leaves. When stdin is
not a terminal, every line is a question (or a slash command) and stdout carries one answer per
line and nothing else. Notices and errors (one line each) go to stderr and the chat goes on.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError, ResourceError, is_out_of_memory, one_line, rename_options
from ..options import DEFAULT_MAX_NEW_TOKENS, RuntimeOptions, check_max_context
from . import common
from .chat_input import MULTILINE, LineTooLong, Message, Unclosed, input_lines
from .common import (
    LoraOpt,
    LoraWeightOpt,
    MaskMode,
    ModelOpt,
    QuietOpt,
    Template,
    VaeOpt,
)

COMMANDS = {
    "/image PATH": "attach an image or a video to the next question (also /video)",
    "/t2i PROMPT [-o FILE] [--seed N] [--steps N] [--size N|WIDTHxHEIGHT] [--guidance G] [--shift S] [-n N] "
    "[--negative-prompt TEXT] [--sampler NAME] [--sigmas S,...] [--timesteps T,...] [--save-latents] [--overwrite]":
        "generate with the same model",
    "/reset": "forget the conversation (the system prompt stays; also /clear)",
    "/save FILE [--overwrite]": "write the transcript as JSON",
    "/load FILE": "go on with a transcript /save wrote (its media read again)",
    "/quit": "leave (also /exit, /bye, Ctrl-D)",
    "/help": "this list",
    MULTILINE: f"several lines as one message, up to a line ending with {MULTILINE}",
}
#: what a question or command that ran out of memory says (the chat goes on)
OUT_OF_MEMORY = "out of memory (a shorter conversation needs less: /reset, or a lower --max-context)"
#: /help pads the usages to the longest one up to this many characters
HELP_WIDTH = 30


class ChatSession:
    """The chat loop's state and its line handler (everything but reading lines)."""

    def __init__(self, conversation, out=None, err=None, interactive: bool = False):
        self.conv = conversation
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.interactive = interactive

    # ---- output -------------------------------------------------------------------------------
    def error(self, message: str) -> None:
        self.err.write(f"showo2: error: {common.safe_text(one_line(message, 10_000))}\n")
        self.err.flush()

    def info(self, message: str) -> None:
        common.notice(message)

    # ---- one line -----------------------------------------------------------------------------
    def handle(self, line: str) -> bool:
        """Act on one input line (a :class:`Message` is a question, never a command); False when the chat
        should end. Errors are reported, never raised (except Ctrl-C when not on a terminal)."""
        from ..errors import ContextTooLong, Showo2Error

        command = not isinstance(line, Message)
        line = line.strip()
        if not line:
            return True
        try:
            if command and line.startswith("/"):
                return self.command(line)
            if command and (path := _dropped_file(line)) is not None:  # '/home/me/my photo.png', ~/a.png
                self.attach(path)
                return True
            self.answer(line)
        except ContextTooLong as e:  # a failed question keeps its media: each next one would fail alike
            n = len(self.conv.pending)
            self.error(f"{e} ({n} attached file{'s stay' if n > 1 else ' stays'} for your next question: /reset "
                       "drops it with the conversation)" if n else str(e))
        except Showo2Error as e:
            self.error(str(e))
        except KeyboardInterrupt:
            if not self.interactive:
                raise
            self.info("(interrupted)")
        except MemoryError:
            self.error(OUT_OF_MEMORY)
        except BrokenPipeError:  # the reader of the answers went away: the chat ends (exit 141)
            raise
        except Exception as e:  # a bug: one line (the traceback with --debug), the chat goes on
            if common.STATE.get("debug"):
                traceback.print_exc(file=self.err)
            if is_out_of_memory(e):  # torch's allocators raise RuntimeError (CUDA's OutOfMemoryError)
                self.error(OUT_OF_MEMORY)
                return True
            self.error(f"internal error: {type(e).__name__}: {one_line(e)} "
                       "(run with --debug for the traceback)")
        return True

    def answer(self, question: str) -> None:
        started = [False]

        def on_text(piece: str) -> None:
            started[0] = True
            common.write(self.out, common.one_answer_line(piece))
            self.out.flush()

        # the conversation's notices (a turn left the context, the answer was shortened) come when the
        # answer is done, before its line ends: held until it has, so a terminal never shows
        # "redcontext budget of 80 tokens reached ..." on the answer's line
        held: list[str] = []
        tell, self.conv.on_notice = self.conv.on_notice, held.append
        try:
            self.conv.ask(question, on_text=on_text)
        except BaseException:
            if started[0]:
                self.out.write("\n")
                self.out.flush()
            raise
        finally:
            self.conv.on_notice = tell
        self.out.write("\n")
        self.out.flush()
        for text in held:
            if tell is not None:
                tell(text)

    def command(self, line: str) -> bool:
        from ..errors import UsageError

        name, _, rest = line.partition(" ")
        name, rest = name.lower(), rest.strip()
        if name in ("/quit", "/exit", "/q", "/bye"):  # /bye and /clear: what ollama's users type
            return False
        if name in ("/help", "/?"):
            # a usage longer than HELP_WIDTH (/t2i's options) has its line, its description the next:
            # padding every line to it made each one 160 columns wide, a wrapped mess on a terminal
            width = max(len(k) for k in COMMANDS if len(k) <= HELP_WIDTH)
            for usage, what in COMMANDS.items():
                if len(usage) > width:
                    self.err.write(f"  {usage}\n  {'':<{width}}  {what}\n")
                else:
                    self.err.write(f"  {usage:<{width}}  {what}\n")
            self.err.flush()
        elif name in ("/image", "/video", "/attach"):
            if not rest:
                raise UsageError("/image needs a file: /image PATH")
            self.attach(_attached_path(rest))
        elif name == "/t2i":
            self.t2i(rest)
        elif name in ("/reset", "/clear"):
            if rest:
                raise UsageError(f"{name} takes no argument")
            self.conv.reset()
            self.info("conversation reset")
        elif name == "/save":
            args = _split(rest)
            overwrite = "--overwrite" in args
            files = [a for a in args if a != "--overwrite"]
            if len(files) != 1:
                raise UsageError("/save needs one file: /save FILE [--overwrite]")
            path = _user_path(files[0], "/save")
            self.conv.save(path, overwrite=overwrite)
            self.info(f"transcript saved to {path}")
        elif name == "/load":
            if not rest:
                raise UsageError("/load needs a file: /load FILE")
            path = _attached_path(rest)
            n = self.conv.load(path)
            self.info(f"loaded {n} turn{'s' if n != 1 else ''} from {path}")
        elif (path := _dropped_file(line)) is not None:  # a file dropped on the terminal: /home/me/a.png
            self.attach(path)
        else:
            raise UsageError(f"unknown command '{name[:40]}' "
                             "(commands: /image, /t2i, /reset, /save, /load, /quit, /help; a question that opens "
                             f"with / goes between {MULTILINE} marks)")
        return True

    def attach(self, path: Path) -> None:  # (a video the checkpoint was not trained for: the conversation's notice)
        visual = self.conv.attach(path, name=str(path))
        self.info(f"attached {path} ({visual.kind}): it goes with your next question")

    def t2i(self, rest: str) -> None:
        """``/t2i PROMPT [OPTIONS]``: ``showo2 t2i``'s output (image with its parameters inside, plus
        the sidecar JSON) from the resident model; the options are the command's own
        (:data:`T2I_IN_CHAT`), parsed by its definitions."""
        from .. import media as M
        from ..options import random_seed
        from ..pipelines import GenerateOptions, text_to_image
        from ..saving import plan_outputs, save_results
        from .generate import grid_options

        prompt, p = parse_t2i(rest)
        seed = random_seed() if p["seed"] is None else p["seed"]
        opts = GenerateOptions(seed=seed, steps=p["steps"], guidance=p["guidance"], shift=p["shift"],
                               size=M.parse_size(p["size"], self.conv.model.spec.latent_multiple),
                               num_per_prompt=p["num_images"], method=common.value(p["sampler"]),
                               negative_prompt=p["negative_prompt"], **grid_options(p["sigmas"], p["timesteps"]))
        opts.validate(self.conv.model.spec)  # the sizes the resident model takes (its patch_size)
        output = None if p["output"] is None else os.path.expanduser(p["output"])  # as text: a final '/' is seen
        if output is not None:
            _user_path(output, "/t2i -o")  # a NUL is refused
        plans = plan_outputs("t2i", output, [prompt], [0], opts.num_per_prompt, seed, p["overwrite"],
                             save_latents=p["save_latents"])  # checked before work
        if self.interactive:
            self.info(f"generating (seed {seed}) ...")
        try:
            items = text_to_image(self.conv.model, [prompt], opts)
        except ResourceError as e:  # its advice names t2i's --batch-size, which /t2i does not take
            raise ResourceError(rename_options(str(e), {"--batch-size": "-n"})) from e
        save_results(items, plans, "t2i", overwrite=p["overwrite"])
        for note in dict.fromkeys(n for item in items for n in item.unused_prompt_notes()):  # as `showo2 t2i`
            self.info(note)
        for plan, item in zip(plans, items, strict=True):
            self.info(f"saved {plan.path} (seed {item.seed}); attach it with /image {plan.path}")


#: the t2i options a chat's ``/t2i`` takes; the others choose the model and where it runs (set
#: when the chat starts) or read files of prompts and noise
T2I_IN_CHAT = ("output", "size", "steps", "guidance", "shift", "seed", "num_images", "negative_prompt", "sampler",
               "sigmas", "timesteps", "save_latents", "overwrite")


def parse_t2i(rest: str) -> tuple[str, dict]:
    """The prompt and the option values of a ``/t2i`` line, by the ``t2i`` command's own option
    definitions (names, types, ranges, defaults): the words that are not options make the prompt,
    ``--`` ends the options."""
    from typer.main import get_command

    from ..errors import UsageError
    from . import app

    command = get_command(app).get_command(None, "t2i")
    options = {o: q for q in command.params if getattr(q, "param_type_name", "") == "option"
               for o in (*q.opts, *q.secondary_opts) if q.name in T2I_IN_CHAT}
    others = {o for q in command.params for o in getattr(q, "opts", ()) if q.name not in T2I_IN_CHAT}
    names = ", ".join(sorted({q.opts[0] for q in options.values()}))
    args, words, given, i = _prompt_words(rest), [], [], 0
    while i < len(args):
        a = args[i]
        flag = a.split("=", 1)[0] if a.startswith("--") else a
        if a == "--":  # the rest is prompt text, options or not
            words += args[i + 1:]
            break
        if flag in options:
            if options[flag].is_flag or "=" in a:
                given.append(a)
                i += 1
                continue
            if i + 1 >= len(args):
                raise UsageError(f"/t2i {a} needs a value")
            given += [a, args[i + 1]]
            i += 2
            continue
        if flag in others:
            raise UsageError(f"/t2i takes no {flag}: the model and where it runs are set when the chat starts "
                             f"(/t2i options: {names})")
        if re.match(r"--?[A-Za-z]", a):  # was taken into the prompt: "a cat --size 128"
            raise UsageError(f"/t2i has no option '{a[:30]}' (options: {names}; after -- it is prompt text)")
        words.append(a)
        i += 1
    prompt = " ".join(words).strip()
    if not prompt:
        raise UsageError("/t2i needs a prompt: /t2i a red circle on a white background [-o out.png]")
    try:
        ctx = command.make_context("/t2i", [*given, "--", prompt])
    except Exception as e:  # click's own errors (typer may vendor click): one line
        say = getattr(e, "format_message", None)
        raise UsageError(f"/t2i: {say() if callable(say) else e}") from None
    return prompt, ctx.params


def _user_path(text: str, what: str) -> Path:
    """A file name typed in the chat: ``~`` expanded (an unknown ``~user`` stays as typed)."""
    from ..errors import UsageError

    if "\0" in text:
        raise UsageError(f"{what}: a file name cannot contain a NUL character")
    return Path(os.path.expanduser(text))


def _attached_path(text: str) -> Path:
    """The file of ``/image TEXT``: the name as typed (quotes around it removed) when that is a file;
    else the one word a shell reads in it, which is how terminals paste a file dropped on them
    (macOS Terminal and iTerm escape its spaces, ``My\\ Photo.jpg``; GNOME's terminal quotes it,
    ``'it'\\''s.jpg'``), or the path of a ``file://`` URL (a file manager's copied file), when
    that is one. A name that is none of these is said missing as typed."""
    from urllib.parse import unquote, urlsplit

    typed = _unquote(text)
    tried = [typed]
    try:
        words = _shell_words(text)
    except ValueError:  # an unbalanced quote: a name is as typed
        words = []
    if len(words) == 1:
        tried.append(words[0])
    for name in list(tried):
        url = urlsplit(name) if name[:7].lower() == "file://" else None
        if url is not None and url.netloc in ("", "localhost"):
            tried.append(unquote(url.path))
    for name in tried:
        path = _user_path(name, "/image")
        try:
            if path.exists():
                return path
        except (OSError, ValueError):  # a name too long for the file system: said by the reader
            pass
    return _user_path(typed, "/image")


def _dropped_file(line: str) -> Path | None:
    """The file a line names whole, as a terminal pastes a file dropped on it (``/home/me/a.png``,
    ``'/home/me/my photo.png'``, ``My\\ Photo.jpg`` with its folder, a ``file://`` URL), when it is one;
    else None. Only a name with a ``/``: a word that happens to name a file here stays a question."""
    if "/" not in line or len(line) > 4 * 4096 or "\0" in line:  # PATH_MAX, quoted: a question is not read as words
        return None
    path = _attached_path(line)
    try:
        return path if path.is_file() else None
    except (OSError, ValueError):  # a name too long for the file system
        return None


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


#: an option's value glued to it (``--output="a b.png"``): a quoted word may follow it
_OPTION_PREFIX = re.compile(r"""-[^\s='"]+=""")
#: a quote that closes a quoted word: one followed by a blank or the end of the line
_CLOSING = {q: re.compile(q + r"(?=\s|$)") for q in "'\""}
_BLANK = re.compile(r"\s*")
_PLAIN_WORD = re.compile(r"(?:\\\s|\S)+")  # a backslash keeps a space in its word (`my\ file.png`)


def _prompt_words(text: str) -> list[str]:
    """The words of a ``/t2i`` line as a prompt needs them: a word quoted whole (``'a red circle'``,
    ``"out file.png"``, ``-o="a b.png"``: from a quote opening a word to the same quote closing one)
    is the text between its quotes, as a shell reads it, but a quote or a backslash inside a word is
    the word's own character. ``shlex.split`` took the apostrophes of ``a cat's hat and a dog's
    bone`` for a quoted span ("a cats hat and a dogs bone"), an inch mark ``5"`` likewise, and
    dropped the backslashes of ``C:\\Users``. Linear in the line: each quote's closing one is
    searched once per stretch of the line (a regular expression looking for it from every word
    that opens with a quote took 13 s over the 48 KB line ``'x 'x 'x ...``, hours over 1 MiB)."""
    words, pos, closing = [], 0, {}  # closing[quote]: (searched from, the first closing quote there or None)
    while (pos := _BLANK.match(text, pos).end()) < len(text):
        prefix = _OPTION_PREFIX.match(text, pos)
        start = prefix.end() if prefix is not None else pos
        quote = text[start:start + 1]
        end = _closing_quote(text, quote, start + 1, closing) if quote in _CLOSING else None
        if end is not None:
            words.append(text[pos:start] + text[start + 1:end])
            pos = end + 1
        else:
            plain = _PLAIN_WORD.match(text, pos)
            words.append(re.sub(r"\\(\s)", r"\1", plain.group()))
            pos = plain.end()
    return words


def _closing_quote(text: str, quote: str, start: int, found: dict) -> int | None:
    """Where the first ``quote`` closing a word at or after ``start`` is (None: nowhere), from the
    last search for it (``found``) when that began at or before ``start`` and ended at or after it."""
    since, at = found.get(quote, (len(text) + 1, None))
    if since > start or (at is not None and at < start):
        match = _CLOSING[quote].search(text, start)
        since, at = start, (match.start() if match is not None else None)
        found[quote] = (since, at)
    return at


#: The longest text read as shell words: ``shlex`` builds a word a character at a time, quadratic
#: in its length (a 1 MiB ``/image`` or ``/save`` line of ``a\ a\ ...`` took about a minute); no
#: file name a shell quotes is longer (PATH_MAX is 4096 bytes, quoting at most quadruples it).
MAX_SHELL_TEXT = 1 << 16


def _shell_words(text: str) -> list[str]:
    """``shlex.split(text)``, or plain blank-separated words for a text over :data:`MAX_SHELL_TEXT`
    (a ValueError for an unbalanced quote, as shlex's)."""
    return shlex.split(text) if len(text) <= MAX_SHELL_TEXT else text.split()


def _split(text: str) -> list[str]:
    """Shell-like words; an unbalanced quote (``a cat's hat``) falls back to plain spaces."""
    try:
        return _shell_words(text)
    except ValueError:
        return text.split()


@common.with_runtime_options
def chat(
    media: Annotated[list[Path] | None, typer.Argument(
        help="Images or videos for the first question.")] = None,
    system: Annotated[str | None, typer.Option(
        "--system", "-s", help="The system prompt (default: 'You are a helpful assistant.').")] = None,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", help="At most this many tokens per answer.")] = DEFAULT_MAX_NEW_TOKENS,
    temperature: Annotated[float, typer.Option(
        "--temperature", help="0 = greedy (default); > 0 samples.")] = 0.0,
    top_p: Annotated[float | None, typer.Option(
        "--top-p", help="Nucleus sampling (with --temperature).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Top-k sampling (with --temperature); 0: no top-k.")] = None,
    min_p: Annotated[float | None, typer.Option(
        "--min-p", help="Min-p sampling (with --temperature): drop tokens less likely than this times the most "
        "likely one.")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed for sampling (random if absent; printed, and recorded by /save).")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(
        "--repetition-penalty", help="Above 1 discourages repeating the answer's tokens (transformers' "
        "penalty; 1.1 is usual).")] = None,
    frames: Annotated[int | None, typer.Option(
        "--frames", help="Video: frames sampled uniformly (default: the model's).")] = None,
    max_context: Annotated[int | None, typer.Option(
        "--max-context", help="Prompt + answer token budget; beyond it the oldest turns leave the context "
        "(default: the model's position range).")] = None,
    mask: Annotated[MaskMode | None, typer.Option("--mask", help="official or training: the first turn's mask "
                                                  "(default: the checkpoint's).")] = None,
    template: Annotated[Template | None, typer.Option("--template", help="official or training: the first "
                                                      "turn's template (default: the checkpoint's).")] = None,
    model: ModelOpt = None, vae: VaeOpt = None, lora: LoraOpt = None, lora_weight: LoraWeightOpt = None,
    runtime: RuntimeOptions = None,
    quiet: QuietOpt = False,
):
    """Chat about images and videos, and generate images, with one resident model.

    Slash commands: /image PATH, /t2i PROMPT [-o FILE], /reset, /save FILE, /load FILE, /quit, /help; a line
    opening with \"\"\" starts a message of several lines, one ending with \"\"\" sends it.
    """
    C = common
    C.setup(False, quiet, result="the answers")
    lora = C.adapters(lora, lora_weight)  # (a weight per adapter: checked before anything else)
    from .. import media as M
    from ..options import CaptionOptions

    opts = CaptionOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                          seed=seed, frames=frames, mask_mode=C.value(mask), template=C.value(template),
                          repetition_penalty=repetition_penalty, min_p=min_p, max_memory_gb=runtime.max_memory_gb)
    opts.validate()
    C.notice_unused_sampling(opts)
    if max_context is not None:  # before the model loads
        check_max_context(max_context)
    for path in media or []:  # a bad file fails before the model loads
        if M.probe_kind(path) == "image":
            M.read_image(path, min_side=1)  # (a JPEG over the limit: read reduced, as understanding does)
        else:
            M.check_video(path)
    if sys.stdin is None:  # (`showo2 chat <&-`: "internal error: TypeError" once the model had loaded)
        raise InputError("cannot read the questions: standard input is closed (run the chat in a terminal, "
                         "or pipe the questions in)")

    bundle = C.load_model(model, runtime, vae=vae, lora=lora, vae_parts=("encoder",),
                          heads=("lm_head",))  # the decoder and flow head on the first /t2i
    from ..chat import Conversation  # torch: after load_model's check of the model's name
    if opts.seed is None and opts.sampling().sampled:  # every answer of the chat is drawn with it: printed
        # as caption prints its seed, so --seed N repeats the chat (each turn's transcript records it)
        from ..options import random_seed

        opts.seed = random_seed()
        C.notice(f"seed {opts.seed}")
    conv = Conversation(bundle, system, options=opts, max_context=max_context, on_notice=C.notice)
    for path in media or []:
        conv.attach(path, name=str(path))
    interactive = sys.stdin is not None and sys.stdin.isatty()
    show_prompt = interactive and sys.stdout.isatty()
    if interactive:
        n = len(conv.pending)
        attached = f", {n} file{'s' if n > 1 else ''} attached" if n else ""
        C.notice(f"chatting with {conv.name}{attached}; /help lists the commands, /quit or Ctrl-D leaves")
    session = ChatSession(conv, interactive=interactive)
    # a line longer than any question the context takes (4 bytes a character at most) is never held whole
    limit = 4 * conv.max_chars + 2
    for line in input_lines(interactive, show_prompt, limit):
        if isinstance(line, LineTooLong):
            session.error(f"a line of {line.size} bytes is longer than any question the context of "
                          f"{conv.max_context} tokens takes (at most {conv.max_chars} characters): skipped")
            continue
        if isinstance(line, Unclosed):
            session.error(f'the input ended inside a {MULTILINE} message ({line.lines} '
                          f'line{"" if line.lines == 1 else "s"}): not asked (a line ending with {MULTILINE} sends it)')
            break
        if not session.handle(line):
            break
