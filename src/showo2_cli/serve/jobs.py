"""The jobs ``showo2 serve`` runs on its worker thread, one per request, over the resident model:
a chat answer (its images read and encoded, then the answer decoded, streamed as it comes), the
images of an image request, and the batch the answers of ``--parallel`` jobs decode in. The app
(:mod:`.app`) submits them; ``decoding_batch`` is importable from there too."""

from __future__ import annotations

import base64
import logging
import re
import tempfile
from pathlib import Path

from .. import __version__
from .. import media as M
from ..errors import Showo2Error
from .body import Upload
from .errors import ApiError, api_error_of
from .requests import ChatPlan, ImagePlan, ServerConfig
from .tools import split_answer
from .worker import Job

log = logging.getLogger("showo2.serve")  # (the app's logger: one name, one logger)
_SERVER_SIDE_HINT = re.compile(r"\s*\(set \w+ to raise [^)]*\)")


def chat_job(model, config: ServerConfig, plan: ChatPlan, job: Job) -> dict:
    from ..chat import Conversation
    from ..dialogue import Cancelled, TextSampling

    # OpenAI's way: a history is never cut; an answer without max_tokens gets the room left
    conv = Conversation(model, plan.system, name=config.model_id,
                        overflow=plan.overflow or ("refuse" if plan.max_tokens_given else "shorten"))
    # a text that cannot fit whatever its images: refused before they are read and encoded
    conv.check_text_fits(plan.turns[-1].question, plan.max_tokens, [(t.question, t.answer) for t in plan.turns[:-1]],
                         plan.turns[-1].prefix)
    with tempfile.TemporaryDirectory(prefix="showo2-serve-") as tmp:
        count = 0

        def attach(upload: Upload) -> None:
            nonlocal count
            param = upload.param
            path = Path(tmp) / f"image-{count}"
            try:
                path.write_bytes(upload.data)
            except OSError as e:  # a full disk, a file-size limit, a forbidden folder: the server's own
                raise M.write_failed(path, e) from e
            try:
                if upload.declared is not None:  # what its data URL says it is, it must be
                    found = M.probe_kind(path, config.max_image_pixels)
                    # an animated GIF, PNG or WebP is a video whose type is image/gif, png, webp
                    if found != upload.declared and not (upload.declared == "image" and M.animation_format(path)):
                        said = upload.expected or f"the data URL says {upload.declared}/*"
                        raise ApiError(400, f"{param}: {said}, but it holds "
                                            f"{'an' if found == 'image' else 'a'} {found}",
                                       "invalid_image_url", param)
                conv.attach(path, name=f"image {count + 1}", max_pixels=config.max_image_pixels)
            except Showo2Error as e:  # name the request's part, never the server's temporary file
                err = api_error_of(e)
                message = err.message.replace(f"'{path}'", param).replace(str(path), param)
                message = _SERVER_SIDE_HINT.sub("", message)  # an HTTP client cannot set the server's limits
                raise ApiError(err.status, f"{param}: {message}" if param not in message else message,
                               err.code, param) from None
            path.unlink()
            count += 1

        for turn in plan.turns:
            for upload in turn.images:
                if job.cancel.is_set():  # a client gone stops the rest of its images and videos, each read and
                    raise Cancelled("cancelled")  # encoded in turn (all of a message's went on: 8 videos, ~7 s)
                attach(upload)
            if job.cancel.is_set():
                raise Cancelled("cancelled")
            if turn.answer is not None:
                conv.add_turn(turn.question, turn.answer)
    sampling = TextSampling(plan.max_tokens, plan.temperature, plan.top_k, plan.top_p, plan.seed,
                            stop_strings=plan.stop, repetition_penalty=plan.repetition_penalty,
                            frequency_penalty=plan.frequency_penalty, presence_penalty=plan.presence_penalty,
                            logit_bias=plan.logit_bias, min_p=plan.min_p, json_schema=plan.json_schema,
                            strict_schema=plan.strict_schema, tool_calls=plan.tool_calls)
    answer = conv.ask(plan.turns[-1].question, sampling, on_text=lambda piece: job.emit("text", piece),
                      cancel=job.cancel, prefix=plan.turns[-1].prefix)
    turn = conv.turns[-1]
    for text in conv.notices:  # the operator's copy; the client's is the answer's "notices"
        log.info("notice to a chat request: %s", text)
    content, calls, finish = split_answer(plan.tools, answer, turn.stopped)
    return {"answer": answer, "content": content, "tool_calls": calls, "finish_reason": finish,
            "prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.generated_tokens,
            "notices": list(conv.notices)}


def images_job(model, plan: ImagePlan, job: Job) -> list[dict]:
    from .. import media as M
    from ..dialogue import Cancelled
    from ..options import GenerateOptions
    from ..pipelines import text_to_image

    def progress(phase: str, done: int, total: int) -> None:
        if job.cancel.is_set():
            raise Cancelled("cancelled")

    opts = GenerateOptions(size=plan.size, steps=plan.steps, guidance=plan.guidance, seed=plan.seed,
                           num_per_prompt=plan.n, batch_size=min(plan.n, 4), negative_prompt=plan.negative_prompt)
    results = text_to_image(model, [plan.prompt], opts, progress=progress)
    out = []
    with tempfile.TemporaryDirectory(prefix="showo2-serve-") as tmp:
        for k, item in enumerate(results):
            path = Path(tmp) / f"image-{k}.{plan.output_format}"
            meta = {**item.params, "showo2_version": __version__, "kind": "t2i"}
            M.write_image(path, item.frames[0], metadata=meta, quality=plan.output_compression)
            out.append({"b64_json": base64.b64encode(path.read_bytes()).decode("ascii"),
                        "revised_prompt": item.prompt_used(model.require_tokenizer()), "seed": item.seed})
    return out


def decoding_batch(model, prompt_budget: int = 512):
    """The batch the answers of ``--parallel`` jobs decode in, its memory guard the model's: a row
    joins when the batched KV cache (each row as wide as the longest, its copy while rows come and
    go) fits the memory limit beside the weights of an answer about text. ``prompt_budget``: prompt
    positions between two of its steps (``--max-num-batched-tokens``)."""
    from ..decoding_batch import DecodingBatch
    from ..errors import ResourceError
    from ..pipelines.understand import understanding_weights
    from ..runtime import check_memory

    spec = model.spec
    per_position = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * model.dtype.itemsize

    def fits(rows: int, width: int) -> bool:
        try:
            check_memory(2 * rows * width * per_position / 1e9, "a batch of answers", model.memory_limit(None),
                         model.network.device, weights=understanding_weights(model, False))
        except ResourceError:
            return False
        return True

    return DecodingBatch(model.network, fits, prompt_budget)
