"""Chat message content as the chat APIs and data sets give it: a string, or a list of parts
(``{"type": "text", "text": ...}``, ``{"type": "image"}``, ``{"type": "image_url", ...}``), the
layout of OpenAI's chat API, of transformers' chat templates and of TRL's vision data sets. Torch-free:
the server's request parsing and the training records read it alike."""

from __future__ import annotations

from .errors import short

#: the parts that stand for a picture in a message (TRL's and transformers' ``image``/``video``,
#: OpenAI's ``image_url``, vLLM's ``video_url``)
PICTURE_PARTS = ("image", "video", "image_url", "video_url")


def text_of_part(part) -> str | None:
    """The text of a content part ``{"type": "text", "text": ...}``; None for a part of another type.

    Raises:
        TypeError: a text part whose ``text`` is not a string (naming the value).
    """
    if not isinstance(part, dict) or part.get("type") != "text":
        return None
    if not isinstance(part.get("text"), str):
        raise TypeError(f"text must be a string, got {short(part.get('text'))}")
    return part["text"]


def content_text(content, picture: str = "<image>") -> str:
    """A message's text: a string as it is, or a list of parts joined by newlines (as the server joins
    a message's text parts), each picture part written as ``picture`` where it stands (LLaVA's
    ``<image>``: the picture itself comes with the record).

    Raises:
        ValueError: content neither a string nor a list of parts, or a part neither text nor a
            picture (the message says which).
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(f"content must be a string or a list of parts, got {type(content).__name__}")
    out = []
    for j, part in enumerate(content):
        try:
            text = text_of_part(part)
        except TypeError as e:
            raise ValueError(f"content part {j}: {e}") from None
        if text is not None:
            out.append(text)
        elif isinstance(part, dict) and part.get("type") in PICTURE_PARTS:
            out.append(picture)
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ValueError(f"content part {j} is {short(kind, 40)}, not text or a picture")
    return "\n".join(out)
