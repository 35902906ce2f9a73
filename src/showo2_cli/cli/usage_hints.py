"""Hints added to click's usage errors: what the words a user typed were likely meant as (a prompt
to quote, a question for ``-q``, an output for ``-o``, an argument that starts with '-')."""

from __future__ import annotations

import os

from ..errors import short
from .common import is_file


def dash_argument_hint(e: Exception, args: list[str]) -> str:
    """For "No such option: -a" when the user wrote a prompt or question such as ``"-a cat"``
    (no option holds a space): where such an argument goes."""
    import shlex

    name = getattr(e, "option_name", None)
    if type(e).__name__ != "NoSuchOption" or not name:
        return ""
    for arg in args:
        if arg == "--":
            break
        if arg.startswith(name) and any(ch.isspace() for ch in arg):
            return (f"; an argument that starts with '-' goes after '--', which ends the options (give them "
                    f"before it): -- {shlex.quote(arg)}")
    return ""


def extra_argument_hint(e: Exception, args: list[str]) -> str:
    """For "Got unexpected extra argument": what the words were likely meant as (``t2i a red circle``:
    a prompt to quote; ``caption x.png What color``: a question for -q; ``out.png``: an output for -o)."""
    import shlex

    def q(text: str) -> str:  # as typed, within a one-line message
        return short(shlex.quote(text), 120)

    ctx = getattr(e, "ctx", None)
    if type(e).__name__ != "UsageError" or ctx is None or "extra argument" not in e.format_message():
        return ""
    try:  # the command's own parser, over its own arguments, tells the extra words from the rest
        from .. import media as M

        rest = args[args.index(ctx.info_name) + 1:]
        values, extras, _ = ctx.command.make_parser(ctx).parse_args(args=list(rest))
        opts = {o for p in ctx.command.params for o in getattr(p, "opts", ())}
    except Exception:  # a hint only: never a second error
        return ""
    after = rest[rest.index("--") + 1:] if "--" in rest else []
    if extras and len(extras) <= len(after) and any(word in opts for word in extras):
        # `t2i -- '-a cat' -o x.png`: after '--' an option is one more argument (the dash hint says to
        # put such a prompt there): the options go before it
        return f"; '--' ends the options, so give them before it: {_options_first(ctx, rest, len(extras))}"
    outputs = M.IMAGE_WRITE_EXTS + M.VIDEO_WRITE_EXTS + (".safetensors",)
    out = extras.pop() if extras and "-o" in opts and os.path.splitext(extras[-1])[1].lower() in outputs else None
    hints = []
    media = values.get("media")
    if len(extras) == 1 and isinstance(media, str) and "-q" in opts and is_file(extras[0]) and not is_file(media):
        hints.append(f"the image or video comes first: {q(extras[0])} -q {q(media)}")
    elif extras and isinstance(values.get("prompt"), str):
        hints.append(f"quote a prompt of several words: {q(' '.join([values['prompt'], *extras]))}")
    elif extras and "-q" in opts:  # right after a -q's value (`-q What color`): that question's words
        last = max((i for i, a in enumerate(rest) if a in ("-q", "--question")), default=len(rest))
        words = rest[last + 1:last + 2] if rest[last + 2:last + 2 + len(extras)] == extras else []
        hints.append(f"{'quote a question of several words' if words else 'ask a question with -q'}: "
                     f"-q {q(' '.join([*words, *extras]))}")
    if out is not None:
        hints.append(f"name the output with -o: -o {q(out)}")
    return "; " + ", and ".join(hints) if hints and (out is None or not extras or len(hints) == 2) else ""


def _options_first(ctx, rest: list[str], extra: int) -> str:
    """The command line ``rest`` (a command's arguments) with the options among its last ``extra``
    words (after its ``--``, left over by the arguments) moved before the ``--``, shell-quoted (for a hint)."""
    import shlex

    cut = rest.index("--")
    values = {o for p in ctx.command.params if getattr(p, "is_flag", None) is False
              and not getattr(p, "count", False) for o in getattr(p, "opts", ())}
    flags = {o for p in ctx.command.params for o in getattr(p, "opts", ())} - values
    moved, kept, tail = [], rest[cut + 1:len(rest) - extra], rest[len(rest) - extra:]
    i = 0
    while i < len(tail):
        word = tail[i]
        take = 2 if word in values else 1 if word in flags else 0
        (moved if take else kept).extend(tail[i:i + max(take, 1)])
        i += max(take, 1)
    words = [ctx.command_path, *rest[:cut], *moved, *(["--", *kept] if kept else [])]
    return short(" ".join(shlex.quote(w) if i else w for i, w in enumerate(words)), 160)
