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
                      max_seq_len: int | None, video: bool = False) -> Layout:
    """Conditional rows then unconditional rows for t2i/t2v/i2v (spec §8.1, §8.4).

    Row: ``[bos] prompt[:max_text_len] [boi|bov] [pad_visual]*P [eoi|eov] [eos] [PAD]*...`` where
    ``P = num_visual`` counts the time token. The unconditional rows use an empty prompt. With
    ``max_seq_len=None`` the rows are as long as the longest prompt needs (no truncation).
    """
    begin, end = (tokens.bov, tokens.eov) if video else (tokens.boi, tokens.eoi)
    visual_pad = tokens.vid_pad if video else tokens.img_pad
    longest = max((len(p) for p in prompts), default=0)
    if max_seq_len is None:
        max_seq_len = longest + num_visual + 4
    max_text_len = max_seq_len - num_visual - 4
    if max_text_len < 0:
        raise UsageError(f"sequence budget {max_seq_len} is too short for {num_visual} visual positions "
                         f"(needs at least {num_visual + 4})")
    rows, blocks = [], []
    for prompt in list(prompts) + [[] for _ in prompts]:
        text = list(prompt)[:max_text_len]
        row = [tokens.bos, *text, begin, *([visual_pad] * num_visual), end, tokens.eos]
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
