"""``chat``'s input: lines from a terminal (an editing prompt) or a pipe, the lines of a message
typed between \"\"\" marks joined into one.

Nothing here knows the model: :mod:`showo2_cli.cli.chat` acts on what these yield.
"""

from __future__ import annotations

import codecs
import sys
from dataclasses import dataclass

from ..errors import InputError
from ..media.files import text_encoding

#: a line opening with it starts a message of several lines, one ending with it ends the message (ollama's way)
MULTILINE = '"""'


class LineTooLong:
    """A stdin line over the chat's limit (its text is not kept): the session says so and goes on."""

    def __init__(self, size: int):
        self.size = size


def pipe_lines(stream, max_bytes: int):
    """Lines of a binary stream of UTF-8 text, none held longer than ``max_bytes``: a longer one
    (``/dev/zero`` has no line end) is read on in ``max_bytes`` pieces and dropped, given as a
    :class:`LineTooLong`. A byte-order mark opening the stream (a script saved by Notepad) is
    dropped, as a prompts file's is: ``\ufeff/image x.png`` was asked as a question. Lines end at
    ``\n``, ``\r\n`` or a lone ``\r``. Bytes that are not UTF-8 text, or a NUL, raise
    :class:`~showo2_cli.errors.InputError` where they come (``chat < photo.png`` asked the image's
    bytes as questions): as Python refuses such a script, and a prompts file is refused."""
    first, at = True, 0  # (at: the stream's bytes before this line)
    while True:
        raw = stream.readline(max_bytes + 1)
        if not raw:
            return
        opening, first = first, False
        check = codecs.getincrementaldecoder("utf-8")()
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            size = len(raw)
            while raw:
                _check_text(check, raw, at + size - len(raw), opening and size == len(raw))
                if raw.endswith(b"\n"):
                    break
                raw = stream.readline(max_bytes)
                size += len(raw)
            _check_text(check, b"", at + size, False, final=True)
            at += size
            yield LineTooLong(size)
            continue
        text = _check_text(check, raw, at, opening, final=True)
        at += len(raw)
        text = text.rstrip("\r\n")
        # a lone CR ends a line too (a classic Mac OS script), as in a prompts file and as Python's
        # text stdin reads it: the whole script was asked as one question, its commands included
        yield from (text.removeprefix("\ufeff") if opening else text).split("\r")


def _check_text(decoder, raw: bytes, at: int, opening: bool, final: bool = False) -> str:
    """``raw`` (the stream's bytes from ``at``) decoded by ``decoder`` (strict UTF-8, the line's so
    far); not UTF-8, or a NUL: one line naming the byte, and what to do instead."""
    instead = ("chat reads questions and commands a line each; give an image or a video as a file "
               "(`showo2 chat -m MODEL FILE`, or `/image FILE`)")
    try:
        text = decoder.decode(raw, final)
    except UnicodeDecodeError as e:
        if opening and text_encoding(raw).startswith("utf-16"):
            raise InputError("standard input is UTF-16 text: chat reads UTF-8 (convert it, e.g. with "
                             "`iconv -f UTF-16 -t UTF-8`)") from None
        where = at - (len(e.object) - len(raw)) + e.start  # (object: the bytes held from the last piece, then raw)
        raise InputError(f"standard input is not UTF-8 text (byte {where} is 0x{e.object[e.start]:02x}): "
                         + instead) from None
    if b"\x00" in raw:
        raise InputError(f"standard input is not text (byte {at + raw.index(0)} is a NUL): " + instead)
    return text


class Message(str):
    """A message of several lines, typed between :data:`MULTILINE` marks: a question, even when it
    opens with ``/``."""


@dataclass
class Unclosed:
    """The input ended inside a :data:`MULTILINE` message (its ``lines`` are not asked)."""
    lines: int


_CLEARED = object()  #: what the line reader yields for Ctrl-C at the prompt (a message being typed is dropped)


def _messages(lines, max_bytes: int, typing=None):
    """Lines, a ``\"\"\"`` message's joined into one :class:`Message` as ollama reads them: a line
    opening with the mark starts it (``\"\"\"one line\"\"\"`` too), the first line ending with it
    ends it. One over ``max_bytes`` is read to its end, not held: a :class:`LineTooLong`; input ending
    inside one: :class:`Unclosed`. ``typing(on)`` says when one is being typed (the prompt shows it)."""
    typing = typing or (lambda _on: None)
    block, size, count = None, 0, 0  # (count: its lines, also those past the limit, not held)
    for line in lines:
        if line is _CLEARED:
            if block is not None:
                block = None
                typing(False)
            continue
        if block is None:
            opening = line.lstrip() if isinstance(line, str) else ""
            if not opening.startswith(MULTILINE):
                yield line
                continue
            line, block, size, count = opening[len(MULTILINE):], [], 0, 0
            if line.rstrip().endswith(MULTILINE):
                yield Message(line.rstrip()[:-len(MULTILINE)])
                block = None
                continue
            typing(True)
        if isinstance(line, LineTooLong):
            size, count = size + line.size, count + 1
            continue
        closes = line.rstrip().endswith(MULTILINE)
        if closes:
            line = line.rstrip()[:-len(MULTILINE)]
        if line.strip() or not closes and (block or size):  # the marks' own lines add no blank line
            size, count = size + len(line.encode("utf-8", "surrogatepass")) + 1, count + 1
            if size <= max_bytes:
                block.append(line)
        if closes:
            typing(False)
            yield Message("\n".join(block)) if size <= max_bytes else LineTooLong(size)
            block = None
    if block is not None:
        typing(False)
        yield Unclosed(count)


def input_lines(interactive: bool, show_prompt: bool, max_bytes: int = 2**20):
    """Input lines: an editing prompt on a terminal, else plain lines of stdin (undecodable bytes
    replaced; a line over ``max_bytes`` bytes is a :class:`LineTooLong`), a message's joined
    (:func:`_messages`; the prompt ``... ``). Ctrl-C at the prompt clears the line (and a message); Ctrl-D ends."""
    more = [False]
    yield from _messages(_raw_lines(interactive, show_prompt, more, max_bytes), max_bytes,
                         lambda on: more.__setitem__(0, on))


def _raw_lines(interactive: bool, show_prompt: bool, more: list, max_bytes: int):
    if not interactive:
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            for i, line in enumerate(sys.stdin):
                yield (line.removeprefix("\ufeff") if i == 0 else line).rstrip("\r\n")
            return
        yield from pipe_lines(stream, max_bytes)
        return
    read = None
    prompt = (lambda: "... " if more[0] else ">>> ") if show_prompt else (lambda: "")
    try:
        from prompt_toolkit import PromptSession

        session = PromptSession()
        read = lambda: session.prompt(prompt())  # noqa: E731
    except Exception:  # not installed, or no usable terminal
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        read = lambda: input(prompt())  # noqa: E731
    while True:
        try:
            yield read()
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            yield _CLEARED
            continue
        except EOFError:
            if show_prompt:
                sys.stdout.write("\n")
            return
