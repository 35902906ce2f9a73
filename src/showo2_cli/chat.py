"""A multi-turn conversation with a loaded Show-o2 model (the object behind ``showo2 chat``).

    from showo2_cli import load
    from showo2_cli.chat import Conversation

    chat = Conversation(load("demo"))
    chat.attach("circle.png")                     # goes with the next question
    chat.ask("What color is the shape?")          # 'red'
    chat.ask("What shape is it?", on_text=print)  # streamed pieces, then the answer
    chat.to_json()                                # the transcript

The prompt is the model's chat format repeated across turns (see :mod:`showo2_cli.dialogue`):
a one-question conversation is exactly the :func:`~showo2_cli.pipelines.caption` prompt. When
the prompt plus the answer's token budget would outgrow the model's sequence budget, the oldest
turns leave the context (the transcript keeps them, their media's tokens let go) with a notice;
the most recent medium of a dropped turn stays in the context when no later turn has one, so the
conversation keeps its subject. Nothing here prints: notices go to ``on_notice``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from .chat_transcript import (
    MAX_MEDIA_PER_TURN,
    ChatTranscript,
    Turn,
    sampling_record,
)
from .chat_transcript import MAX_TRANSCRIPT_BYTES as MAX_TRANSCRIPT_BYTES  # (re-exported: it was here)
from .dialogue import (
    DEFAULT_SYSTEM,
    Cancelled,
    PromptPieces,
    TextSampling,
    TurnTokens,
    VisualInput,
    answer_room,
    check_streamer,
    conversation_layout,
    encode_media,
    encode_user_text,
    ending,
    generate_answer,
    prompt_length,
)
from .errors import ContextTooLong, UsageError, short
from .loading import Showo2, require_model
from .options import CaptionOptions, check_max_context, check_unicode, seed_from_torch
from .pipelines.understand import video_note
from .runtime import cpu_by_default

#: what :class:`Conversation` does when a question and its answer do not fit the context
OVERFLOW_POLICIES = ("drop", "shorten", "refuse")
#: texts longer than this many characters per token of the context cannot fit it (a token of
#: Qwen2.5's vocabulary holds at most a few dozen characters): refused before tokenizing
CHARS_PER_TOKEN = 32


def context_budget(model: Showo2) -> int:
    """The longest sequence (prompt + answer) the model takes: its LLM's position range."""
    return int(model.spec.max_position_embeddings)


class Conversation(ChatTranscript):
    """System prompt, turns and pending media of one chat with one model.

    ``options`` are the understanding options of :class:`~showo2_cli.pipelines.CaptionOptions`
    (template, mask mode, video frames, size; its sampling fields are the default ``sampling``).
    ``max_context`` caps prompt + answer tokens (default :func:`context_budget`). ``overflow``
    says what happens when prompt + ``max_new_tokens`` exceed it: ``"drop"`` (the chat's way) lets
    the oldest turns leave the context; ``"shorten"`` keeps every turn and shortens the answer to
    the room left; ``"refuse"`` (an API request that set ``max_tokens``, as OpenAI answers) raises
    :class:`~showo2_cli.errors.ContextTooLong`, as both do when the prompt alone does not fit.
    Texts (system prompt, questions, answers) are capped at :data:`CHARS_PER_TOKEN` characters a
    token of the budget, before anything is tokenized.
    """

    def __init__(self, model: Showo2, system: str | None = None, *, options: CaptionOptions | None = None,
                 max_context: int | None = None, on_notice: Callable[[str], None] | None = None,
                 name: str | None = None, overflow: str = "drop"):
        self.model = require_model(model)
        self.options = options or CaptionOptions()
        self.options.validate()
        self.name = name or (model.files.name if model.files else model.spec.name)
        budget = context_budget(model) if max_context is None else max_context
        check_max_context(budget)
        self.max_context = budget
        if overflow not in OVERFLOW_POLICIES:
            raise UsageError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {short(overflow)}")
        self.overflow = overflow
        self.max_chars = budget * CHARS_PER_TOKEN
        self.on_notice = on_notice
        self.turns: list[Turn] = []  # every turn (the transcript)
        self.pending: list[VisualInput] = []  # media for the next question
        self.notices: list[str] = []
        self._first = 0  # index of the oldest turn still in the context
        self._carried: list[VisualInput] = []  # media kept from dropped turns
        #: media of turns in the context that a /load left unread (records only, by id): read when a
        #: prompt holds their turn (:meth:`_read_unread`), never counted as let go
        self._unread: dict[int, VisualInput] = {}
        self._lock = threading.Lock()
        self.system = DEFAULT_SYSTEM if system is None else system
        if budget > context_budget(model):  # allowed (RoPE runs on), but said: past what it was trained on
            self._notice(f"a context budget of {budget} tokens is past the model's position range of "
                         f"{context_budget(model)}: prompts longer than that get positions it was not trained on")

    # ---- state ----------------------------------------------------------------------------------
    @property
    def system(self) -> str:
        return self._system

    @system.setter
    def system(self, text: str) -> None:
        if not isinstance(text, str):
            raise UsageError("the system prompt must be text")
        self._check_length(text, "the system prompt")
        self._system = text
        self._pieces = PromptPieces.of(self.model, text)

    @property
    def mask_mode(self) -> str:
        return self.options.mask_mode or self.model.spec.und_mask_mode

    @property
    def template(self) -> str:
        return self.options.template or self.model.spec.und_template

    @property
    def context_turns(self) -> list[Turn]:
        """The turns the model sees now (the oldest may have left, see :meth:`ask`)."""
        return self.turns[self._start:]

    @property
    def _start(self) -> int:
        """The oldest turn in the context: turns removed from ``turns`` (an app's undo or retry)
        may leave fewer turns than had left the context, and a new turn must not start outside it.
        A turn whose media were let go (it left a context: turns moved from another conversation)
        cannot come back into it (but those :meth:`load` left unread, read when a prompt holds them)."""
        start = min(self._first, len(self.turns))
        for i in range(len(self.turns) - 1, start - 1, -1):
            if any(m.released and id(m) not in self._unread for m in self.turns[i].media):
                return i + 1
        return start

    def reset(self) -> None:
        """Forget every turn and pending medium (the system prompt stays)."""
        self.turns.clear()
        self.pending.clear()
        self._carried.clear()
        self.notices.clear()
        self._first = 0
        self._unread = {}

    def attach(self, source, name: str | None = None, max_pixels: int | None = None) -> VisualInput:
        """Encode an image or video now (a path, a PIL image, an array or tensor, or a list of frames:
        :func:`~showo2_cli.dialogue.encode_media`); it goes with the next question."""
        if len(self.pending) >= MAX_MEDIA_PER_TURN:
            raise UsageError(f"at most {MAX_MEDIA_PER_TURN} media per question")
        visual = encode_media(self.model, source, self.options, max_pixels=max_pixels, name=name)
        self.pending.append(visual)
        note = video_note(self.model, visual.kind)
        if note:  # (the command line's chat says it, the server's answer lists it)
            self._notice(note)
        return visual

    def _question_ids(self, question: str) -> list[int]:
        if not isinstance(question, str) or not question.strip():
            raise UsageError("empty question: give some text")
        self._check_length(question, "a question")
        return encode_user_text(self.model.require_tokenizer(), question.strip())

    def add_turn(self, question: str | None, answer: str, media: list[VisualInput] | None = None) -> Turn:
        """Record an earlier exchange (from a saved chat or an API request) without generating;
        ``question=None`` records an assistant message that opens the conversation (a greeting)."""
        if not isinstance(answer, str):
            raise UsageError("an answer must be text")
        self._check_length(answer, "an answer")
        media = list(self.pending if media is None else media)
        if question is None:
            if self.turns or media:
                raise UsageError("an assistant message without a question can only open the conversation, "
                                 "before any media")
            turn = Turn("", answer.strip(), [], None, encode_user_text(self.model.require_tokenizer(), answer.strip()))
            self.turns.append(turn)
            return turn
        turn = Turn(question.strip(), answer.strip(), media, self._question_ids(question),
                    encode_user_text(self.model.require_tokenizer(), answer.strip()))
        self.pending = []
        self.turns.append(turn)
        return turn

    def _check_length(self, text: str, what: str) -> None:
        """Text that cannot fit the context whatever its tokens, or is not UTF-8 text (a lone
        surrogate): refused before tokenizing it."""
        if len(text) > self.max_chars:
            raise ContextTooLong(f"{what} of {len(text)} characters cannot fit the context of {self.max_context} "
                                 f"tokens (at most {self.max_chars} characters)")
        check_unicode(text, what)

    # ---- asking ---------------------------------------------------------------------------------
    def _context(self, current: TurnTokens, first: int | None = None,
                 carried: list[VisualInput] | None = None) -> list[TurnTokens]:
        first = self._start if first is None else first
        carried = self._carried if carried is None else carried
        turns = [t.tokens() for t in self.turns[first:]] + [current]
        if carried:
            turns[0] = replace(turns[0], visuals=[*carried, *turns[0].visuals])
        return turns

    def _fit(self, current: TurnTokens, max_new_tokens: int) -> tuple[int, list[VisualInput], int, int, list[str]]:
        """Drop the oldest turns until prompt + answer fit. Return the context's first turn, the media
        carried from dropped turns, the prompt's length, the answer's token budget and the notices saying so; the
        conversation itself (notices included) is changed only when the answer is done
        (:meth:`ask`), so a refused or cancelled question changes nothing."""
        start = self._start

        def carried_from(first: int) -> list[VisualInput]:
            """The media carried when the turns before ``first`` have left: the last image of the
            turns that left (else the one carried already), unless a later turn or the question has media."""
            if first == start:
                return self._carried
            if current.visuals or any(t.media for t in self.turns[first:]):
                return []
            return next((list(t.media[-1:]) for t in reversed(self.turns[start:first]) if t.media),
                        self._carried[-1:])

        def length_from(first: int) -> int:
            return prompt_length(self._context(current, first, carried_from(first)), self._pieces, self.template)

        first, length = start, length_from(start)
        if length + max_new_tokens > self.max_context and self.overflow == "drop" and first < len(self.turns):
            # the fewest oldest turns to drop, by bisection: dropping turns never lengthens the prompt, and
            # one turn at a time recounted the whole prompt per turn (a transcript /load-ed with 100,000
            # turns in its context had not answered after 7 minutes)
            lo, hi = start, len(self.turns)  # lo does not fit; hi is where dropping stops, fit or not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if length_from(mid) + max_new_tokens <= self.max_context:
                    hi = mid
                else:
                    lo = mid
            first, length = hi, length_from(hi)
        carried, dropped = carried_from(first), first - start
        limit, shortened = answer_room(length, max_new_tokens, self.max_context, self.overflow == "refuse")
        notices = []
        if dropped:
            kept = " (its image stays)" if carried else ""
            notices.append(f"context budget of {self.max_context} tokens reached: the oldest {dropped} "
                           f"turn{'s' if dropped > 1 else ''} left the context{kept}")
        if shortened:
            notices.append(shortened)
        return first, carried, length, limit, notices

    def check_text_fits(self, question: str, max_new_tokens: int, history=(), prefix: str = "") -> None:
        """Refuse (:class:`~showo2_cli.errors.ContextTooLong`) a question whose text cannot fit the context
        whatever its media, before any medium is read: ``history`` (``(question, answer)`` pairs to be
        added first, ``None`` for a greeting's question), the turns in the context now, ``question`` and
        the answer's ``prefix``, as :meth:`ask` would count them without their media (turns ``"drop"``
        would let go are not counted). A server request reads and encodes its images before it asks."""
        tokenizer = self.model.require_tokenizer()

        def ids(text: str) -> list[int]:
            self._check_length(text, "a message")
            return encode_user_text(tokenizer, text.strip())

        turns = [] if self.overflow == "drop" else [t.tokens() for t in self.context_turns] + [
            TurnTokens(None if q is None else ids(q), [], ids(a)) for q, a in history]
        turns.append(TurnTokens(ids(question), [], prefix=ids(prefix.rstrip()) if prefix.rstrip() else []))
        answer_room(prompt_length(turns, self._pieces, self.template), max_new_tokens, self.max_context,
                    self.overflow == "refuse", counted="before their media")

    def _check_memory(self, prompt_tokens: int, answer_tokens: int, media: bool = True) -> None:
        """Refuse (:class:`~showo2_cli.errors.ResourceError`) a question whose prompt and answer would
        not fit the memory limit (``options.max_memory_gb``, else ``$SHOWO2_MAX_MEMORY_GB``, else
        the memory available), as a caption is checked: the forward over the prompt grows with its
        square, the KV cache with prompt + answer; the weights, the VAE's encoder only when the
        prompt holds media (``media``)."""
        from .pipelines.understand import check_answer_memory

        check_answer_memory(self.model, prompt_tokens, answer_tokens,
                            f"a conversation of {prompt_tokens} prompt tokens", self.options.max_memory_gb,
                            "shorten the conversation (fewer or shorter turns)", media)

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        if self.on_notice is not None:
            self.on_notice(text)

    def sampling(self) -> TextSampling:
        return self.options.sampling()

    @cpu_by_default
    def ask(self, question: str, sampling: TextSampling | None = None,
            on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
            prefix: str = "", streamer=None) -> str:
        """Answer ``question`` (with the pending media) given the turns before it; return the answer.

        ``prefix`` starts the answer and the model continues it (a prefill, as an API request that
        ends with an assistant message asks): the text returned and streamed is the continuation,
        the turn recorded holds the whole answer.

        ``sampling`` defaults to the options' (greedy). Sampled without a seed, the answer's seed is
        drawn (from torch's generator, so ``torch.manual_seed`` repeats a chat, as
        :func:`~showo2_cli.pipelines.caption` does); the turn records it with the other sampling
        values (``Turn.sampling``, the transcript's ``sampling``). ``on_text(piece)`` streams the answer;
        setting ``cancel`` stops generation (:class:`~showo2_cli.dialogue.Cancelled` is raised and
        the turn is not recorded). ``streamer``: transformers' streaming object, fed as
        :func:`~showo2_cli.pipelines.caption` feeds it (the prompt's ids ``(1, L)``, each new id
        ``(1,)``, then ``end()``, also when the question fails). The finished turn is ``self.turns[-1]``.

        A question that fails (refused as :class:`~showo2_cli.errors.ContextTooLong`, cancelled,
        any error) changes nothing: no turn leaves the context and the pending media stay for the
        next question, as an unsent message keeps its attachments (``pending.clear()`` drops them).
        """
        check_streamer(streamer)
        with ending(streamer):
            return self._ask(question, sampling, on_text, cancel, prefix, streamer)

    def _ask(self, question, sampling, on_text, cancel, prefix, streamer) -> str:
        with self._lock:
            start = time.perf_counter()
            sampling = sampling or self.sampling()
            sampling.validate()
            if sampling.sampled and sampling.seed is None:  # recorded below: the transcript repeats it
                sampling = replace(sampling, seed=seed_from_torch())
            q_ids = self._question_ids(question)
            if not isinstance(prefix, str):
                raise UsageError("an answer prefix must be text")
            self._check_length(prefix, "the answer to continue")
            # trailing whitespace stays out of the prompt: a lone space token is not how the model
            # writes the next word (" red"), and it answered nothing after "It is a "
            head = prefix.rstrip()
            p_ids = encode_user_text(self.model.require_tokenizer(), head) if head else []
            current = TurnTokens(q_ids, list(self.pending), prefix=p_ids)
            first, carried, length, limit, notices = self._fit(current, sampling.max_new_tokens)
            while self._read_unread(first, carried):  # their tokens may not be those recorded: fit again
                first, carried, length, limit, notices = self._fit(current, sampling.max_new_tokens)
            context = self._context(current, first, carried)
            # before the prompt's mask and activations are allocated; a prompt of text alone runs no VAE
            self._check_memory(length, limit, any(t.visuals for t in context))
            layout, visuals = conversation_layout(context, self._pieces, self.mask_mode, self.template)
            out = generate_answer(self.model, layout, visuals, replace(sampling, max_new_tokens=limit),
                                  on_text=on_text, cancel=cancel, prefix=p_ids,
                                  prefix_spaced=bool(head) and head != prefix, streamer=streamer)
            turn = Turn(question.strip(), prefix + out.text, list(self.pending), q_ids, p_ids + out.token_ids,
                        out.stopped, out.prompt_tokens, time.perf_counter() - start, out.generated,
                        sampling_record(sampling))
            self._first, self._carried, self.pending = first, carried, []
            self.turns.append(turn)
            self._release_dropped_media()
            for text in notices:
                self._notice(text)
            return out.text

    def _release_dropped_media(self) -> None:
        """Let go of the tokens of media whose turns left the context (but the one carried): they are
        never in a prompt again, and a long chat with an image now and then would otherwise hold
        every image it was shown (2.2 MB each for the 1.5B model at 432 px in bfloat16, on its
        device). The transcript keeps describing them."""
        keep = {id(v) for v in self._carried}
        for turn in self.turns[:self._start]:
            for m in turn.media:  # left unread, and now left the context as the chat's own turns do
                self._unread.pop(id(m), None)
            if any(not (m.released or id(m) in keep) for m in turn.media):
                turn.media = [m if id(m) in keep else m.release() for m in turn.media]

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the context now (without a next question)."""
        turns = self._context(TurnTokens([], list(self.pending)))
        return prompt_length(turns, self._pieces, self.template)


__all__ = ["Cancelled", "Conversation", "MAX_MEDIA_PER_TURN", "Turn", "context_budget", "sampling_record"]
