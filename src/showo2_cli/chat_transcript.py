"""Chat transcripts as :meth:`~showo2_cli.chat.Conversation.save` writes them: a conversation's
:class:`Turn` and its record (:meth:`Turn.describe`, :func:`sampling_record`), the checks of one
read back (:meth:`~showo2_cli.chat.Conversation.load`) and the record of a medium not read again.
:mod:`showo2_cli.chat` re-exports ``Turn`` and ``sampling_record``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .dialogue import TextSampling, TurnTokens, VisualInput
from .errors import UsageError, short
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
