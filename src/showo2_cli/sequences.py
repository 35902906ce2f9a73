"""Token layouts for understanding and generation (spec §8), as plain id lists and tensors.

A :class:`Layout` carries what a forward pass needs besides the pixels: ``input_ids`` (B, L),
``slots`` (B, M, 2) = (position of the time token, 1 + number of visual tokens) where visual
content is written, and ``blocks`` (B, M, 2) = the (offset, length) spans that the omni mask
makes bidirectional. For generation and training the two are equal; the official understanding
demos shift the mask block by one (the "official" mask mode reproduces it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UsageError

SYSTEM_PROMPT = "system\nYou are a helpful assistant.<|im_end|>"
USER_PREFIX = "\n<|im_start|>user\n"
ASSISTANT_PREFIX = "\n<|im_start|>assistant\n"

MASK_MODES = ("official", "training")
TEMPLATES = ("official", "training")


@dataclass(frozen=True)
class SpecialTokens:
    """The ids Show-o2 uses (spec §2); real Qwen2.5 values in the comments."""

    bos: int  # <|im_start|> 151644
    eos: int  # <|im_end|> 151645
    boi: int  # <|vision_start|> 151652
    eoi: int  # <|vision_end|> 151653
    img_pad: int  # <|image_pad|> 151655
    vid_pad: int  # <|video_pad|> 151656
    pad: int  # [PAD] 151665
    img: int  # <image> 151666
    bov: int  # <|vid_start|> 151667
    eov: int  # <|vid_end|> 151668
    # the tokenizer's own eos_token where it is another token than <|im_end|> (a base Qwen2.5
    # tokenizer's <|endoftext|>): the official code's eos_id, which ends a generation row and
    # stops an answer; None: <|im_end|> (every Qwen2.5-Instruct tokenizer)
    eos_token: int | None = None

    @property
    def end(self) -> int:
        """The id that ends a generation row's text and stops an answer (the official eos_id)."""
        return self.eos if self.eos_token is None else self.eos_token

    TOKEN_STRINGS = {
        "bos": "<|im_start|>", "eos": "<|im_end|>", "boi": "<|vision_start|>", "eoi": "<|vision_end|>",
        "img_pad": "<|image_pad|>", "vid_pad": "<|video_pad|>", "pad": "[PAD]", "img": "<image>",
        "bov": "<|vid_start|>", "eov": "<|vid_end|>",
    }


@dataclass
class Layout:
    input_ids: torch.Tensor  # (B, L) long
    slots: torch.Tensor  # (B, M, 2): time-token position, 1 + visual tokens
    blocks: torch.Tensor  # (B, M, 2): omni-mask blocks

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def trimmed(self) -> Layout:
        """Drop every position after the last visual block (eoi/eos/pads): velocities are unchanged
        because nothing before a position can see it (spec §6.2, §13.21)."""
        end = int((self.slots[..., 0] + self.slots[..., 1]).max())
        end = max(end, int((self.blocks[..., 0] + self.blocks[..., 1]).max()))
        return Layout(self.input_ids[:, :end], self.slots, self.blocks)


def generation_layout(prompts: list[list[int]], num_visual: int, tokens: SpecialTokens,
                      max_seq_len: int | None, video: bool = False,
                      negatives: list[list[int]] | None = None) -> Layout:
    """Conditional rows then unconditional rows for t2i/t2v/i2v (spec §8.1, §8.4).

    Row: ``[bos] prompt[:max_text_len] [boi|bov] [pad_visual]*P [eoi|eov] [eos] [PAD]*...`` where
    ``P = num_visual`` counts the time token. The unconditional rows use an empty prompt (the
    official recipe), or ``negatives[i]`` for prompt ``i`` (a negative prompt: the same row with
    other text, cut at the same budget). With ``max_seq_len=None`` the rows are as long as the
    longest prompt needs (no truncation).
    """
    begin, end = (tokens.bov, tokens.eov) if video else (tokens.boi, tokens.eoi)
    visual_pad = tokens.vid_pad if video else tokens.img_pad
    if negatives is None:
        negatives = [[] for _ in prompts]
    if len(negatives) != len(prompts):
        raise UsageError(f"{len(negatives)} negative prompt(s) for {len(prompts)} prompt(s): give one per prompt")
    longest = max((len(p) for p in [*prompts, *negatives]), default=0)
    if max_seq_len is None:
        max_seq_len = longest + num_visual + 4
    max_text_len = max_seq_len - num_visual - 4
    if max_text_len < 0:
        raise UsageError(f"sequence budget {max_seq_len} is too short for {num_visual} visual positions "
                         f"(needs at least {num_visual + 4})")
    rows, blocks = [], []
    for prompt in [*prompts, *negatives]:
        text = list(prompt)[:max_text_len]
        row = [tokens.bos, *text, begin, *([visual_pad] * num_visual), end, tokens.end]
        row += [tokens.pad] * (max_seq_len - len(row))
        rows.append(row)
        blocks.append([[len(text) + 2, num_visual]])
    blocks_t = torch.tensor(blocks, dtype=torch.long)
    return Layout(torch.tensor(rows, dtype=torch.long), blocks_t, blocks_t.clone())


def understanding_layout(question: list[int], num_visual_tokens: int, tokens: SpecialTokens,
                         system: list[int], user_prefix: list[int], assistant_prefix: list[int],
                         mask_mode: str = "official", template: str = "official",
                         newline: list[int] | None = None, official_block_len: int | None = None) -> Layout:
    """One understanding prompt (spec §8.2/§8.3) for an image or a video.

    Layout: ``[bos] system user_prefix [boi] (time) (visual * n) [eoi] question assistant_prefix``.
    ``template="training"`` adds the stage-2 whitespace (``\\n`` after ``eoi``, ``<|im_end|>``
    after the question). ``mask_mode="official"`` reproduces the official demos' block, which
    starts at the first visual token and has length ``official_block_len`` (1 + the config's
    image token count; for an image that is 1 + n); ``"training"`` makes the block exactly the
    time token plus the visual tokens, as in training.
    """
    if mask_mode not in MASK_MODES:
        raise UsageError(f"mask mode must be one of {MASK_MODES}, got '{mask_mode}'")
    if template not in TEMPLATES:
        raise UsageError(f"template must be one of {TEMPLATES}, got '{template}'")
    prefix = [tokens.bos, *system, *user_prefix]
    time_pos = len(prefix) + 1
    after = [tokens.eoi]
    if template == "training":
        after += list(newline or []) + list(question) + [tokens.eos] + list(assistant_prefix)
    else:
        after += list(question) + list(assistant_prefix)
    ids = prefix + [tokens.boi] + [tokens.img_pad] * (1 + num_visual_tokens) + after
    if mask_mode == "official":
        length = official_block_len if official_block_len is not None else 1 + num_visual_tokens
        block = [time_pos + 1, length]
    else:
        block = [time_pos, 1 + num_visual_tokens]
    return Layout(torch.tensor([ids], dtype=torch.long),
                  torch.tensor([[[time_pos, 1 + num_visual_tokens]]], dtype=torch.long),
                  torch.tensor([[block]], dtype=torch.long))


# ---- training rows (spec §12.2) -------------------------------------------------------------------

IGNORE = -100  # the label of a position that is not supervised
MAX_SOURCE_TOKENS = 512  # per-turn truncation of questions and answers (spec §12.2)
MAX_TARGET_TOKENS = 512


class TrainingRows:
    """Token ids and labels of every training row format (spec §8.1, §8.2, §12.2), written by the
    functions above: a t2i/t2v row is a :func:`generation_layout` row, and the prompt of a
    stage-2 ("tuning") understanding row with its image is exactly the prompt
    :func:`understanding_layout` gives inference (template and mask "training"), so a model is
    asked at inference what it was trained on."""

    def __init__(self, tokenizer, tokens: SpecialTokens):
        from .tokenizer import encode_prefix, encode_text  # (tokenizer imports this module)

        self.tokenizer, self.tokens, self._prefix = tokenizer, tokens, encode_prefix
        self.system = encode_text(tokenizer, SYSTEM_PROMPT)
        self.user = encode_text(tokenizer, USER_PREFIX)
        self.assistant = encode_text(tokenizer, ASSISTANT_PREFIX)
        self.newline = encode_text(tokenizer, "\n")

    def encode(self, text: str, limit: int) -> list[int]:
        """The first ``limit`` tokens of ``text``: a text of any length costs work for those only."""
        return self._prefix(self.tokenizer, text, limit) if text else []

    def generation(self, prompt: str, num_visual: int, max_seq_len: int, video: bool) -> tuple[list[int], tuple[int, int]]:
        layout = generation_layout([self.encode(prompt, max_seq_len)], num_visual, self.tokens, max_seq_len,
                                   video=video)
        offset, length = (int(v) for v in layout.slots[0, 0])
        end = offset + length + 2  # eoi, eos
        return layout.input_ids[0, :end].tolist(), (offset, length)

    def understanding(self, sample, num_visual: int, max_seq_len: int) -> tuple[list[int], list[int], tuple[int, int]]:
        """(ids, labels, slot) of an understanding row; slot (0, 0) without a visual input.

        ``sample`` has ``format`` (captioning | pretraining | tuning), ``turns`` [(question,
        answer)], ``text``, ``has_visual`` and ``source``; ``num_visual`` counts the time token.
        """
        tk = self.tokens
        block = [tk.boi] + [tk.img_pad] * num_visual + [tk.eoi] if sample.has_visual else []
        ids, labels = [tk.bos], [tk.bos]
        slot = (0, 0)

        def put(piece: list[int], supervised: bool):
            ids.extend(piece)
            labels.extend(piece if supervised else [IGNORE] * len(piece))

        if sample.format == "captioning":
            if block:
                slot = (len(ids) + 1, num_visual)
                ids.extend(block)
                labels.extend([tk.boi] + [IGNORE] * num_visual + [tk.eoi])
            answer = sample.text or (sample.turns[0][1] if sample.turns else "")
            # cut to the row's text budget so that its [eos] stays (the official max_text_len =
            # max_seq_len - P - 4): a caption cut with the row ended without one, unsupervised
            put(self.encode(answer, max_seq_len - len(ids) - 1) + [tk.eos], True)
        else:
            for i, (question, answer) in enumerate(sample.turns):
                q = question.replace("<image>", "").strip()
                if sample.format == "tuning" and i == 0 and block:  # the inference prompt itself
                    q_ids = self.encode(q, MAX_SOURCE_TOKENS - len(self.newline))
                    layout = understanding_layout(q_ids, num_visual - 1, tk, self.system, self.user, self.assistant,
                                                  mask_mode="training", template="training", newline=self.newline)
                    ids.clear()
                    labels.clear()
                    ids.extend(layout.input_ids[0].tolist())
                    labels.extend([tk.bos] + [IGNORE] * (len(ids) - 1))
                    slot = tuple(int(v) for v in layout.slots[0, 0])
                else:
                    if sample.format == "tuning" and i == 0:
                        put(self.system, False)
                    src: list[int] = []
                    if sample.format == "tuning":
                        src += self.user
                    if i == 0 and block:  # pretraining: the image block, then the text
                        slot = (len(ids) + len(src) + 1, num_visual)
                        src += block
                    elif q and not (sample.format == "pretraining" and "<image>" in question):
                        src += self.encode(q, MAX_SOURCE_TOKENS)
                    if sample.format == "tuning":
                        src += [tk.eos] + self.assistant
                    put(src, False)
                put(self.encode(answer, MAX_TARGET_TOKENS) + [tk.eos], True)
        if slot[1] and slot[0] + slot[1] + 1 > max_seq_len:
            raise UsageError(f"data[{sample.source}].max_seq_len: {max_seq_len} tokens cannot hold the "
                             f"{num_visual} visual positions of an understanding row and its prompt "
                             f"(needs at least {slot[0] + slot[1] + 2})")
        return ids[:max_seq_len], labels[:max_seq_len], slot
