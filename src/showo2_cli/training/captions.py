"""Caption text of ``pairs`` sources: reading ``.txt`` caption files and the caption cleanup.

The official image-text dataset (``datasets/image_text_dataset.py``) prepares a caption as
``data['prompt'].replace('\\n', '')`` (line breaks deleted: the lines are joined without a space)
and, for text-to-image rows only, ``remove_prefix`` (``datasets/utils.py``): a fixed list of
stock phrases of machine-written captions ("The image features ", "In this image, ", "This is ",
...) each deleted with ``str.replace``, wherever it occurs. Captioning (mmu) targets keep their
phrases. A ``pairs`` source's ``captions`` setting picks the rule:

* ``"official"`` (the default): exactly that, so a fine-tune sees the captions the released
  weights were trained on;
* ``"openings"``: the same phrases, removed only where they open the caption, and line breaks
  read as spaces (the official rule also cuts "a sign reading This is Sparta" to "a sign reading
  Sparta" and joins "a cat\\non a mat" into "a caton a mat");
* ``"verbatim"``: the caption as written.
"""

from __future__ import annotations

from pathlib import Path

from .schema import CAPTION_RULES

#: ``remove_prefix``'s phrases, in its order (each applied to the result of the ones before)
OFFICIAL_PHRASES = (
    "The image features ", "The image presents ", "The image you've sent is, ", "In the center of the image, ",
    "The image showcases ", "The image is ", "The image captures ", "In the given image ", "The image portrays ",
    "In the image, ", "In this image, we see ", "The image depicts ", "This is ", "In this image, ",
    "This image captures ", "This image showcases ", "This suggests ", "In the photo, we see ", "This is ",
    "This image is ", "In the photo, we have ", "The photo features ", "The photo depicts ",
    "The photo appears to be ",
)

#: A caption file larger than this is not a caption (a device such as /dev/zero, a wrong file)
MAX_CAPTION_BYTES = 1 << 20


def clean_caption(text: str, rule: str = "official", generation: bool = True) -> str:
    """A caption as a row of a ``pairs`` source trains on it (see the module's rules); the stock
    phrases are removed from ``generation`` (t2i, t2v) captions only, as officially."""
    text = str(text)
    if rule == "verbatim":
        return text
    if rule == "official":
        text = text.replace("\n", "")
        if generation:
            for phrase in OFFICIAL_PHRASES:
                text = text.replace(phrase, "")
        return text
    if rule != "openings":
        raise ValueError(f"unknown caption rule {rule!r} (one of {', '.join(CAPTION_RULES)})")
    text = " ".join(text.split())
    if generation:
        for phrase in OFFICIAL_PHRASES:
            if text.startswith(phrase):
                text = text[len(phrase):]
    return text


def read_caption_file(path: Path, where: str) -> str:
    """A caption file's text: "" when it is missing (a pair without a caption); a folder, a device,
    a FIFO or a file over :data:`MAX_CAPTION_BYTES` is an input error, checked before reading. UTF-8
    (its byte-order mark dropped: it was trained on as a character opening the caption) or UTF-16
    with its byte-order mark (Notepad's "Unicode": it was trained on as NULs and U+FFFD); bytes
    that are not text are read as U+FFFD; every line end is ``"\n"``."""
    from ..errors import InputError, one_line
    from ..media import decode_text, read_limited

    try:
        if not path.exists():  # a pair without a caption
            return ""
    except OSError as e:
        raise InputError(f"{where} '{path}' cannot be read: {one_line(e, 80)}") from None
    text = decode_text(read_limited(path, MAX_CAPTION_BYTES, where), errors="replace")
    # line ends read as Python's text mode reads them (a Windows file's "\r\n" is "\n"): the official
    # rule deletes "\n" only, and its lines came out joined by a carriage return
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()
