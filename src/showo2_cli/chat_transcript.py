"""Chat transcripts as :meth:`~showo2_cli.chat.Conversation.save` writes them: a conversation's
:class:`Turn` and its record (:meth:`Turn.describe`, :func:`sampling_record`), the checks of one
read back (:meth:`~showo2_cli.chat.Conversation.load`) and the record of a medium not read again;
and :class:`ChatTranscript`, the conversation's base class that writes, loads and takes them up.
:mod:`showo2_cli.chat` re-exports ``Turn``, ``sampling_record`` and ``MAX_TRANSCRIPT_BYTES``."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

from . import __version__
from .dialogue import (
    DEFAULT_SYSTEM,
    PromptPieces,
    TextSampling,
    TurnTokens,
    VisualInput,
    encode_media,
    encode_user_text,
    prompt_length,
)
from .errors import InputError, UsageError, json_problem, short
from .options import is_finite_number

#: Media attached to one question, at most.
MAX_MEDIA_PER_TURN = 8

#: the largest transcript :meth:`Conversation.load` reads (a config's limit: JSON parsed whole)
MAX_TRANSCRIPT_BYTES = 16 << 20


@dataclass
class Turn:
    question: str
    answer: str
    media: list[VisualInput] = field(default_factory=list)
    question_ids: list[int] | None = field(default_factory=list)  # None: a greeting (no question)
    answer_ids: list[int] = field(default_factory=list)
    stopped: bool = True  # the answer ended with <|im_end|> (False: cut at max_new_tokens)
    prompt_tokens: int = 0  # prompt length when it was answered (0: history given, not generated)
    seconds: float = 0.0
    generated_tokens: int = 0  # tokens the model produced for it (a stop string's cut ones included)
    sampling: dict | None = None  # how it was decoded (seed included): None for a turn given, not generated

    def tokens(self, with_answer: bool = True, media: list[VisualInput] | None = None) -> TurnTokens:
        return TurnTokens(self.question_ids, media if media is not None else self.media,
                          self.answer_ids if with_answer else None)

    def describe(self) -> dict:
        return {"question": self.question, "answer": self.answer, "media": [m.describe() for m in self.media],
                "prompt_tokens": self.prompt_tokens, "answer_tokens": len(self.answer_ids),
                "finish_reason": "stop" if self.stopped else "length", "seconds": round(self.seconds, 3),
                "sampling": self.sampling}


def sampling_record(sampling: TextSampling) -> dict:
    """What repeats an answer's decoding, as JSON: every :class:`TextSampling` field but the stop
    token (the model's own)."""
    record = asdict(sampling)
    del record["stop_ids"]
    record["stop_strings"] = list(sampling.stop_strings)
    if sampling.logit_bias is not None:
        record["logit_bias"] = {str(k): v for k, v in sampling.logit_bias.items()}
    return record


def collapsed_notices(notices: list[str]) -> list[str]:
    """A conversation's notices as its transcript records them: a run of one notice repeated (a full
    context lets a turn go at each question: one line a turn) once, with its count."""
    out: list[str] = []
    run = 0
    for k, text in enumerate(notices):
        run += 1
        if k + 1 == len(notices) or notices[k + 1] != text:
            out.append(text if run == 1 else f"{text} ({run} times)")
            run = 0
    return out


def check_transcript_size(size: int, turns: int, limit: int = MAX_TRANSCRIPT_BYTES) -> None:
    """Refuse (:class:`UsageError`) to write a transcript of ``size`` bytes that a load would refuse."""
    if size > limit:
        raise UsageError(f"the transcript of {turns} turns would be {size / (1 << 20):.1f} MiB, more than the "
                         f"{limit / (1 << 20):g} MiB a transcript may be to be loaded again: not written (a "
                         "conversation of fewer turns can be saved; /reset starts a new one)")


def transcript_turns(record, path) -> tuple[list[dict], list[dict]]:
    """The turns and pending media of a transcript, their fields checked (a question and an answer
    text each, media with a file name, the turns that left the context before those in it)."""
    from .media.files import quote_path

    where = f"transcript {quote_path(path)}"
    if not isinstance(record, dict) or record.get("format") != "showo2-chat":
        raise UsageError(f"{where} is not a chat transcript (/save writes them)")
    if record.get("version") != 1:
        raise UsageError(f"{where} has version {short(record.get('version'))}; this showo2 reads version 1")

    def media(items) -> list[dict]:
        if not isinstance(items, list) or not all(
                isinstance(m, dict) and isinstance(m.get("source"), str)
                and all(type(m.get(k, 1)) is int and 0 < m.get(k, 1) <= 1 << 24 for k in ("tokens", "frames"))
                and m.get("kind", "image") in ("image", "video") and _tiles_field(m.get("vae_tiles"))
                for m in items):
            raise UsageError(f"{where}: media must be a list of objects with a 'source' file name "
                             "(and their 'kind', 'tokens' and 'frames' counts and 'vae_tiles')")
        if len(items) > MAX_MEDIA_PER_TURN:
            raise UsageError(f"{where}: at most {MAX_MEDIA_PER_TURN} media per question")
        return items

    turns, seen_in = [], False
    raw = record.get("turns")
    if not isinstance(raw, list):
        raise UsageError(f"{where}: 'turns' must be a list")
    for t in raw:
        if not isinstance(t, dict) or not isinstance(t.get("question"), str) or not isinstance(t.get("answer"), str):
            raise UsageError(f"{where}: every turn needs a 'question' and an 'answer' text")
        in_context = t.get("in_context", True) is not False
        if seen_in and not in_context:
            raise UsageError(f"{where}: a turn out of the context follows one in it")
        seen_in |= in_context
        # records only (never a length the chat computes with): one that cannot be a count or a time
        # (-5, 10**18 tokens, NaN or 10**400 seconds: float() raised on it, NaN was saved again as
        # JSON's invalid NaN) is not kept, as a missing one
        numbers = [t.get(k, 0) for k in ("prompt_tokens", "generated_tokens", "seconds")]
        turns.append({"question": t["question"], "answer": t["answer"], "media": media(t.get("media", [])),
                      "in_context": in_context, "stopped": t.get("finish_reason", "stop") != "length",
                      "prompt_tokens": numbers[0] if _count(numbers[0]) else 0,
                      "generated_tokens": numbers[1] if _count(numbers[1]) else 0,
                      "seconds": float(numbers[2]) if is_finite_number(numbers[2]) and numbers[2] >= 0 else 0.0,
                      "sampling": t["sampling"] if isinstance(t.get("sampling"), dict) else None})
    return turns, media(record.get("pending_media", []))


def _count(value) -> bool:
    """A token count a transcript may record (as media counts are bounded, 2^24)."""
    return type(value) is int and 0 <= value <= 1 << 24


def released_record(described: dict) -> VisualInput:
    """A medium of a turn that had left the context, as the chat keeps one (:meth:`VisualInput.release`):
    its record without tokens, the shape of its positions only (never in a prompt again)."""
    import torch

    tiles = described.get("vae_tiles")
    return VisualInput(described.get("kind", "image"), torch.empty((described.get("tokens", 1) - 1, 0),
                       device="meta"), None, described.get("frames", 1), described["source"],
                       None if tiles is None else tuple(tiles))


def _tiles_field(tiles) -> bool:
    """A medium's ``vae_tiles`` as :meth:`VisualInput.describe` writes it: absent (encoded whole, or
    saved before tiles were recorded), or four pixel counts."""
    return tiles is None or (isinstance(tiles, list) and len(tiles) == 4
                             and all(type(n) is int and 0 < n <= 1 << 24 for n in tiles))


class ChatTranscript:
    """The transcript side of :class:`~showo2_cli.chat.Conversation`, its base class: the record
    (:meth:`to_json`), written (:meth:`save`) and taken up again (:meth:`load`), and the media a load
    left unread, read when a prompt holds their turns again (:meth:`_read_unread`, which
    :meth:`Conversation.ask <showo2_cli.chat.Conversation.ask>` calls). It works on the
    conversation's state (``model``, ``options``, ``turns``, ``pending``, ``_first``, ``_carried``,
    ``_unread``, ``_lock``) and its checks (``_check_length``, ``_question_ids``, ``_notice``, ``reset``)."""

    def _read_unread(self, first: int, carried: list[VisualInput]) -> bool:
        """Read the media :meth:`load` left unread that the prompt from turn ``first`` holds (their
        turns came back into the context: turns removed from ``turns``, a larger ``max_context``),
        each file once, in place of their records (also in ``carried``). A file that cannot be read
        any more (gone, changed into something else) leaves its turn, and those before it, out of
        the context, as a medium let go does, with a notice. Return whether any prompt length may
        have changed (a medium read whose token count is not its record's, or one that could not
        be read), so the caller fits the prompt again."""
        wanted = [m for t in self.turns[first:] for m in t.media if id(m) in self._unread]
        wanted += [m for m in carried if id(m) in self._unread]
        if not wanted:
            return False
        read: dict[int, VisualInput] = {}
        by_source: dict[str, VisualInput] = {}
        changed = False
        try:
            for m in wanted:
                if id(m) in read or id(m) not in self._unread:
                    continue
                try:
                    if m.source not in by_source:
                        by_source[m.source] = encode_media(self.model, m.source, self.options, name=m.source)
                except (InputError, UsageError) as e:  # (what load says of a file it cannot read again)
                    del self._unread[id(m)]  # a record let go now: its turn cannot be in a prompt
                    self._notice(f"{m.source} (a turn /load left unread) can no longer be read ({e}): that "
                                 "turn and those before it stay out of the context")
                    changed = True
                    continue
                read[id(m)] = by_source[m.source]
                changed |= read[id(m)].positions != m.positions
        finally:  # what was read stays read (another error, a memory refusal: the rest stay unread)
            for key in read:
                del self._unread[key]
            for t in self.turns:
                if any(id(m) in read for m in t.media):
                    t.media = [read.get(id(m), m) for m in t.media]
            carried[:] = [read.get(id(m), m) for m in carried]
        return changed

    # ---- transcript -----------------------------------------------------------------------------
    def to_json(self) -> dict:
        """The transcript: the load that made its answers (the model, named as ``name`` says, its
        revision, the adapters merged with their weights, ``--vae``, ``--quantize``, the dtype: the
        one record generated files and ``caption --json`` carry, :meth:`Showo2.record`), system
        prompt, every turn (``in_context`` false once dropped), notices."""
        turns = []
        for i, t in enumerate(self.turns):
            turns.append({**t.describe(), "in_context": i >= self._start})
        return {"format": "showo2-chat", "version": 1, "showo2_version": __version__,
                **self.model.record(), "model": self.name, "system": self.system, "template": self.template,
                "mask_mode": self.mask_mode,
                "max_context": self.max_context, "turns": turns,
                "pending_media": [m.describe() for m in self.pending], "notices": collapsed_notices(self.notices),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def load(self, path: str | os.PathLike) -> int:
        """Go on with a transcript :meth:`save` wrote: its system prompt, its turns (which had left the
        context stay out of it), the image a dropped turn left in the context and the media
        attached for the next question, read again from their files. Checked and read whole before
        anything changes (a missing file, another format: :class:`~showo2_cli.errors.UsageError` or
        the media's error, the conversation as it was); return the number of turns.

        Of the turns in the context, only those the next prompt can hold (``max_context``) have their
        media read now; the older ones' media are read when a prompt holds them again (turns removed
        from ``turns``, a larger ``max_context``), so the context is the saved chat's either way. Such
        a file that cannot be read then leaves its turn, and those before it, out of the context,
        with a notice (:meth:`ask` goes on)."""
        import json

        from .media import read_limited
        from .media.files import quote_path

        # read outside the JSON check: its UsageError (missing, a folder, too large) is a ValueError too
        data = read_limited(path, MAX_TRANSCRIPT_BYTES, "transcript", UsageError)
        try:
            record = json.loads(data)
        except (ValueError, RecursionError) as e:  # bad JSON or UTF-8; Python's nesting and digit limits
            raise UsageError(f"transcript {quote_path(path)} {json_problem(e, 120)}") from None
        turns, pending = transcript_turns(record, path)
        first = sum(not t["in_context"] for t in turns)
        system = record.get("system", DEFAULT_SYSTEM)
        if not isinstance(system, str):
            raise UsageError(f"transcript {quote_path(path)}: 'system' is not text")
        self._check_length(system, "the system prompt")

        def media(items, read: bool) -> list[VisualInput]:
            for m in items if read else ():
                if m["source"] in ("<image>", "<frames>") and not os.path.lexists(m["source"]):
                    raise UsageError(  # (the names media given in memory are described by: no file)
                        f"transcript {quote_path(path)}: its {m['source']} was given in memory, not by a "
                        "file name, so it cannot be read again (a chat to take up attaches its media by their paths)")
            return [read_again(m["source"]) if read else released_record(m) for m in items]

        encoded: dict[str, VisualInput] = {}

        def read_again(source: str) -> VisualInput:
            """A recorded file encoded once however many turns name it (each encode reads and decodes
            it: 50 turns naming one photo took 16 s on the demo, 10^5 would have taken hours)."""
            if source not in encoded:
                encoded[source] = encode_media(self.model, source, self.options, name=source)
            return encoded[source]

        # the image a dropped turn left in the context (as ask() keeps it): the last one, when no turn
        # in the context has one (media attached since are not of the question that dropped it)
        later = any(t["media"] for t in turns[first:])
        source = next((i for i in range(first - 1, -1, -1) if turns[i]["media"]), None) if not later else None
        carried = [] if source is None else turns[source]["media"][-1:]
        restored, kept = [], media(carried, True)
        for i, t in enumerate(turns):
            turn = Turn(t["question"], t["answer"], [], None, [], t["stopped"],
                        t["prompt_tokens"], t["seconds"], t["generated_tokens"], t["sampling"])
            if t["question"] or i:
                turn.question_ids = self._question_ids(t["question"])
            self._check_length(t["answer"], "an answer")
            turn.answer_ids = encode_user_text(self.model.require_tokenizer(), t["answer"])
            restored.append(turn)
        # media read from the newest turn back: once the turns read hold the budget (counted as each
        # the first of a prompt, a lower bound of theirs), no prompt can hold an older one (ask drops it):
        # those keep their media's records, as a dropped turn does, but the one a drop would carry
        # (the last of the newest turn with media), so a transcript naming 10^5 files reads a context's worth
        pieces = PromptPieces.of(self.model, system)
        base = length = prompt_length([], pieces, self.template)  # each turn counted as a prompt's first (its least)
        oldest = first  # the oldest turn read
        for i in range(len(turns) - 1, first - 1, -1):
            turn, oldest = restored[i], i
            turn.media = media(turns[i]["media"], True)
            length += prompt_length([turn.tokens()], pieces, self.template) - base
            if length >= self.max_context:
                break
        newer = oldest < len(turns) and bool(turns[oldest]["media"])  # a turn read since has media
        for i in range(oldest - 1, -1, -1):
            items = turns[i]["media"]
            restored[i].media = media(items, False)
            if i >= first and items and not newer:  # (before first: the carried image, below)
                restored[i].media[-1:] = media(items[-1:], True)
            newer = newer or bool(items)
        if kept:  # the same record as the dropped turn's, as ask() keeps it
            restored[source].media[-1] = kept[0]
        waiting = media(pending, True)
        with self._lock:
            self.reset()
            self.system = system
            self.turns, self.pending, self._first, self._carried = restored, waiting, first, kept
            # the media of turns in the context left unread: read when a prompt holds them again
            self._unread = {id(m): m for t in restored[first:oldest] for m in t.media if m.released}
        return len(restored)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> str:
        """Write :meth:`to_json` atomically (never a half-written file); return the path. A transcript
        larger than :meth:`load` reads (``MAX_TRANSCRIPT_BYTES``) is a :class:`UsageError`, nothing written."""
        import json

        from . import media as M

        data = (json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        check_transcript_size(len(data), len(self.turns), MAX_TRANSCRIPT_BYTES)  # never a file load() refuses
        with M.atomic_output(path, overwrite=overwrite) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(data)
        return os.fspath(path)
