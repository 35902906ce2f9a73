"""The Qwen2.5 tokenizer with Show-o2's additions (spec §2), and a byte-level one for tiny models."""

from __future__ import annotations

import os
import secrets
import sys
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelError, error_detail, short

if TYPE_CHECKING:  # (torch-free to import: the server's request checks use its template tags)
    from .sequences import SpecialTokens

# The Qwen2.5 special tokens in id order (151643...151664), then Show-o2's four additions.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)


#: Qwen2.5's added tokens from ``<tool_call>`` (151657) on are not special ("special": false in its
#: tokenizer.json and tokenizer_config.json): a reply's tool call survives ``skip_special_tokens``
QWEN_ORDINARY_FROM = QWEN_SPECIAL_TOKENS.index("<tool_call>")


def add_showo2_tokens(tokenizer) -> SpecialTokens:
    """Apply the official additions in their exact order and return the ids Show-o2 uses.

    ``[PAD]`` becomes a new special pad token; ``<image>``, ``<|vid_start|>``, ``<|vid_end|>``
    are added as ordinary tokens. Adding is idempotent, so a tokenizer saved after this step
    (as ``showo2 convert`` and ``init`` do) keeps the same ids.
    """
    from .sequences import SpecialTokens

    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    for token in ("<image>", "<|vid_start|>", "<|vid_end|>"):
        tokenizer.add_tokens(token)
    ids = {}
    vocab = tokenizer.get_vocab()
    for role, text in SpecialTokens.TOKEN_STRINGS.items():
        if text not in vocab:
            raise ModelError(f"tokenizer has no '{text}' token: it is not a Qwen2.5 tokenizer")
        ids[role] = vocab[text]
    if ids["eos"] != ids["bos"] + 1:  # every Qwen2.5 tokenizer: <|im_start|> then <|im_end|> (151644, 151645)
        raise ModelError(f"tokenizer's <|im_start|> and <|im_end|> are ids {ids['bos']} and {ids['eos']}, not "
                         "consecutive as in Qwen2.5's: its special tokens were removed or reordered")
    own = tokenizer.eos_token_id  # the official eos_id: the tokenizer's eos_token, looked up by name
    return SpecialTokens(**ids, eos_token=own if own is not None and own != ids["eos"] else None)


#: tokenizer.json larger than this is not a Qwen2.5 tokenizer (Qwen2.5's is 7.0 MB, Qwen3's 11 MB). The
#: tokenizers library takes about 40 times a file's size while parsing it: 113 MiB of merges took 48 s
#: and over 3.4 GB, a 32 MiB one 6.8 s and 1.3 GB.
MAX_TOKENIZER_FILE_BYTES = 32 * 2**20
#: merges.txt (Qwen2.5's is 1.7 MB) is denser still: a merge may take 4 bytes of it
MAX_MERGES_FILE_BYTES = 8 * 2**20


def tokenizer_file_limit(name: str) -> int:
    """The most bytes the tokenizer file ``name`` may have (the rest are configs and vocabularies:
    :data:`~showo2_cli.options.MAX_CONFIG_BYTES`, 16 MiB; Qwen2.5's vocab.json is 2.8 MB)."""
    from .options import MAX_CONFIG_BYTES

    return {"tokenizer.json": MAX_TOKENIZER_FILE_BYTES, "merges.txt": MAX_MERGES_FILE_BYTES}.get(name,
                                                                                                 MAX_CONFIG_BYTES)


def load_tokenizer(path: Path):
    """A fast tokenizer from a local folder, never touching the network and never running code
    from it (a config's ``auto_map`` naming a Python file is refused, not prompted for)."""
    from .hub import TOKENIZER_FILES
    from .media import LFS_ADVICE, lfs_pointer

    for name in TOKENIZER_FILES:  # sizes before anything is read
        file = Path(path) / name
        try:
            size = file.stat().st_size if file.is_file() else 0
            odd = size == 0 and file.exists() and not file.is_file()
        except OSError:
            size, odd = 0, False
        if odd:  # transformers passes over what is not a file: another tokenizer, or none, without a word
            raise ModelError(f"cannot load the tokenizer in '{path}': {name} is not a regular file "
                             "(a FIFO, a device or a folder)")
        if size and lfs_pointer(file, size):  # (Qwen2.5's tokenizer.json is an LFS file): was "Expecting value"
            raise ModelError(f"cannot load the tokenizer in '{path}': {name} is a Git LFS pointer, not the file "
                             f"({LFS_ADVICE})")
        limit = tokenizer_file_limit(name)
        if size > limit:
            raise ModelError(f"cannot load the tokenizer in '{path}': {name} is {size / 2**20:.0f} MiB, more than "
                             f"{limit // 2**20} MiB: not a Qwen2.5 tokenizer file")
    lacking = [n for n in ("tokenizer.json", "vocab.json", "merges.txt") if not os.path.isfile(Path(path) / n)]
    if lacking[:1] == ["tokenizer.json"] and len(lacking) > 1 and not os.path.isfile(Path(path) / "tokenizer.model"):
        # (was transformers' "Couldn't instantiate the backend tokenizer from one of: (1) ...", no file named)
        raise ModelError(f"cannot load the tokenizer in '{path}': tokenizer.json is missing, and so "
                         f"{'are' if len(lacking) > 2 else 'is'} {' and '.join(lacking[1:])} to build it from"
                         f"{_refetch_hint(Path(path))}")
    try:
        with _native_stdout_on_stderr():
            tok = _load_fast(Path(path))
    except Exception as e:  # transformers raises many types for a broken folder
        if "custom code" in str(e) or "trust_remote_code" in str(e):
            raise ModelError(f"the tokenizer in '{path}' asks to run Python code from its folder (auto_map): "
                             "showo2 never runs code from model files") from None
        raise ModelError(f"cannot load the tokenizer in '{path}': {error_detail(e)}") from e
    length = tok.model_max_length  # tokenizer_config.json's, taken as it is: compared with every text's length
    if isinstance(length, bool) or not isinstance(length, (int, float)) or length != length:
        raise ModelError(f"cannot load the tokenizer in '{path}': tokenizer_config.json's model_max_length must be "
                         f"a number, got {short(repr(length))}")
    return tok


def _load_fast(path: Path):
    from .runtime import quiet_imports

    with quiet_imports():  # (transformers' first import, one thread at a time)
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (path / "tokenizer.json").is_file():
        # tokenizer.json as written: its normalizer, pre-tokenizer and added tokens, as the official
        # code's transformers 4.47 loads it (PreTrainedTokenizerFast and Qwen2TokenizerFast alike).
        # transformers 5's AutoTokenizer rebuilds a Qwen2 tokenizer from the vocabulary with its own
        # NFC normalizer and pre-tokenizer: other ids for the same text (a decomposed accent, a
        # tokenizer.json without NFC or with another normalizer) and tokenizer.json's added tokens lost.
        return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True, trust_remote_code=False,
                                         config=_model_config_for_tokenizer(path))


#: the loads under way in this process (``[count, saved fd 1]``): fd 1 is one per process, so the first load
#: in points it at 2 and the last one out points it back (two threads each keeping "its" fd 1 left stdout on
#: stderr for good when the first out restored it and the second then restored what it had saved: fd 2)
_REDIRECT = [0, None]
_REDIRECT_LOCK = threading.Lock()


@contextmanager
def _native_stdout_on_stderr():
    """File descriptor 1 pointed at 2 while the block runs. The Rust ``tokenizers`` library prints on
    the process's stdout (``println!``, past Python's ``sys.stdout``) when transformers hands it a key
    it does not know: "Ignored unknown kwarg option X" for an added token's entry in tokenizer.json
    or tokenizer_config.json with an unknown key, or a ``tokenizer_padding`` one. Said on stderr
    instead, a ``--json`` answer's stdout stays the answer alone. Loads in several threads at once
    share one redirection (the process's stdout comes back when the last ends)."""
    with _REDIRECT_LOCK:
        if _REDIRECT[0] == 0:
            _REDIRECT[1] = _point_stdout_at_stderr()
        _REDIRECT[0] += 1
    try:
        yield
    finally:
        with _REDIRECT_LOCK:
            _REDIRECT[0] -= 1
            saved = _REDIRECT[1]
            if _REDIRECT[0] == 0 and saved is not None:
                _REDIRECT[1] = None
                with suppress(OSError, ValueError, AttributeError):
                    sys.stdout.flush()
                os.dup2(saved, 1)
                os.close(saved)


def _point_stdout_at_stderr() -> int | None:
    """fd 1 pointed at fd 2; the saved fd 1, or None where there is none to keep clean or no fd 2."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no fd 1 (a closed stdout): nothing to keep clean
        return None
    try:
        os.dup2(2, 1)
    except OSError:  # no fd 2: stdout as it is
        os.close(saved)
        return None
    return saved


def _refetch_hint(folder: Path) -> str:
    """How to get a Hugging Face cache snapshot's tokenizer.json back (a file deleted by hand:
    the snapshot still counts as cached, so no pull fetches it); "" for another folder."""
    from .hub import snapshot_revision

    commit = snapshot_revision(folder)
    if commit is None:
        return ""
    repo = folder.parent.parent.name.removeprefix("models--").replace("--", "/", 1)
    return f"; fetch it again with: hf download {repo} tokenizer.json --revision {commit}"


def _model_config_for_tokenizer(path: Path):
    """What a tokenizer takes from its folder's model ``config.json`` (which tokenizer class the
    model type means), without the rest: transformers builds the whole model config otherwise, and
    a config class allocates from its sizes (Qwen2's a list of ``num_hidden_layers`` entries: a
    declared 10**12 took all memory before any check). The file is read by
    :func:`~showo2_cli.weights.read_json` (a regular file, sized); None when there is none."""
    from .runtime import quiet_imports
    from .weights import read_json

    with quiet_imports():
        from transformers import CONFIG_MAPPING, PretrainedConfig

    file = path / "config.json"
    if not file.is_file():
        return None
    data = read_json(file)
    keep = {k: data[k] for k in ("tokenizer_class",) if isinstance(data.get(k), str)}
    model_type = data.get("model_type")
    config = None
    if isinstance(model_type, str) and model_type in CONFIG_MAPPING:
        try:
            config = CONFIG_MAPPING[model_type](**keep)  # the type's defaults, none of the file's sizes
        except Exception:  # a type that needs more than defaults: the generic config says as much
            config = None
    if config is None:
        config = PretrainedConfig(**keep)
    config._name_or_path = str(path)
    return config


def byte_level_tokenizer():
    """A tokenizer whose text ids are UTF-8 byte values, followed by the Qwen2.5 special tokens.

    Used by tiny test models; after :func:`add_showo2_tokens` it has 282 entries with the same
    id pattern as the parity fixtures (real id = tiny id + 151387 for every special token).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    # GPT-2's byte -> printable-character map, ordered by byte value
    mapping = _bytes_to_unicode()
    vocab = {mapping[b]: b for b in range(256)}
    assert set(vocab) == set(byte_chars)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return _with_qwen_tokens(tok)


def _with_qwen_tokens(tok):
    """A fast tokenizer over the ``tokenizers`` object ``tok``, its learned or byte vocabulary
    followed by the Qwen2.5 special tokens (in Qwen order), ``<|im_end|>`` ending a turn and
    ``<|endoftext|>`` padding, as a Qwen2.5 tokenizer has them: the one finish of the small
    tokenizers that tiny and from-scratch models use. As in Qwen2.5's configs, ``<tool_call>`` and
    the tokens after it are not special: decoding that skips special tokens keeps them."""
    from tokenizers import AddedToken

    from .runtime import quiet_imports

    with quiet_imports():
        from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False)
    fast.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[:QWEN_ORDINARY_FROM])})
    fast.add_tokens([AddedToken(t, normalized=False, special=False) for t in QWEN_SPECIAL_TOKENS[QWEN_ORDINARY_FROM:]])
    fast.eos_token = "<|im_end|>"
    fast.pad_token = "<|endoftext|>"
    return fast


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with special tokens written in the text recognised, no BOS/EOS added
    (the template's own pieces; a user's text goes through :func:`encode_user_text`)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


#: Written around a chat template's own tag (``<tool_call>``) inside text that also holds a client's:
#: a secret of this process, so no client can write it. :func:`encode_user_text` makes a tag so marked
#: its added token (where the tokenizer has it as one, as Qwen2.5 has ``<tool_call>``), as HF's and
#: vLLM's ``apply_chat_template`` tokenize the template's text, while the same tag typed by a client
#: stays plain text. Strip it with :func:`plain_text` wherever such text is shown.
TEMPLATE_MARK = "\u2063" + secrets.token_hex(16) + "\u2063"


def template_tag(tag: str) -> str:
    """``tag`` as the template writes it into text that holds a client's (see :data:`TEMPLATE_MARK`)."""
    return TEMPLATE_MARK + tag + TEMPLATE_MARK


def plain_text(text: str) -> str:
    """Text with the template's tags as their characters (what a tokenizer without them reads)."""
    return text.replace(TEMPLATE_MARK, "")


def encode_user_text(tokenizer, text: str) -> list[int]:
    """Ids of text a user typed (a question, a prompt, a system prompt): the strings of the
    tokenizer's added tokens in it stay plain text, so it cannot close its turn, forge another or
    pose as an image or video position. That is the special ones (``<|im_end|>``,
    ``<|image_pad|>``: transformers' ``split_special_tokens``) and the ordinary ones Show-o2 adds
    (``<image>``, ``<|vid_start|>``, ``<|vid_end|>``: ``<|vid_start|>`` typed in a prompt was the
    video block's opening token), which ``split_special_tokens`` leaves matched. Ordinary text
    gives the same ids as :func:`encode_text`. The template's own tags (:func:`template_tag`) are
    their tokens."""
    added = getattr(tokenizer, "added_tokens_encoder", None) or {}
    if TEMPLATE_MARK in text:
        return _encode_with_template_tags(tokenizer, text, added)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and any(token in text for token in added):
        return _encode_without_added_tokens(backend, text)
    try:
        return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    except TypeError:  # pragma: no cover - a tokenizer without split_special_tokens
        return encode_text(tokenizer, text)


def _encode_with_template_tags(tokenizer, text: str, added: dict) -> list[int]:
    """Ids of text whose marked tags are the template's: each an added token's id (where it is one),
    the text between them a client's. A tag the tokenizer has no token for is text, read with its
    neighbours as HF reads the template (``<tools>``, ``<tool_response>`` in Qwen2.5's)."""
    ids: list[int] = []
    text_run = ""
    for k, piece in enumerate(text.split(TEMPLATE_MARK)):
        if k % 2 and piece in added:  # (odd pieces: the marked tags)
            ids += encode_user_text(tokenizer, text_run) if text_run else []
            ids.append(added[piece])
            text_run = ""
        else:
            text_run += piece
    return ids + (encode_user_text(tokenizer, text_run) if text_run else [])


def _encode_without_added_tokens(backend, text: str) -> list[int]:
    """The ids of a `tokenizers` pipeline (normalizer, pre-tokenizer, model) run as if it had no
    added tokens: what the tokenizer's own vocabulary makes of the text."""
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    pieces = [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)] if backend.pre_tokenizer else [text]
    return [token.id for piece in pieces for token in backend.model.tokenize(piece)]


#: the most characters one token of a Qwen2.5-style vocabulary spans (its longest tokens are runs
#: of a few dozen spaces or symbols): the first N tokens of a text lie in its first N * this
MAX_CHARS_PER_TOKEN = 64


def encode_prefix(tokenizer, text: str, limit: int) -> list[int]:
    """``encode_text(text)[:limit]`` without tokenizing what lies past those tokens: a text of
    any length (a 60 MB answer in a dataset) costs work for ``limit`` tokens only."""
    return encode_text(tokenizer, text[:max(limit, 0) * MAX_CHARS_PER_TOKEN])[:limit]


def train_bpe_tokenizer(texts: list[str], vocab_size: int = 512):
    """A small byte-level BPE trained on ``texts``, with the Qwen2.5 special tokens after the
    learned vocabulary (in Qwen order) so that :func:`add_showo2_tokens` gives the same roles.

    Used for small models trained from scratch (the bundled demo): words of the training
    captions become single tokens, so answers take a few decoding steps instead of one per byte.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return _with_qwen_tokens(tok)
