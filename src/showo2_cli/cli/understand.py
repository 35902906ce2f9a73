"""``caption``: answer questions about an image or a video."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..options import DEFAULT_MAX_NEW_TOKENS, RuntimeOptions
from .common import (
    STATE,
    JsonOpt,
    LoraOpt,
    LoraWeightOpt,
    MaskMode,
    ModelOpt,
    ProgressReporter,
    QuietOpt,
    Template,
    VaeOpt,
    adapters,
    emit,
    flush,
    load_model,
    model_name,
    notice,
    notice_unused_sampling,
    one_answer_line,
    setup,
    value,
    with_runtime_options,
    write,
)


class AnswerFormat(str, Enum):
    json = "json"


@with_runtime_options
def caption(
    media: Annotated[Path, typer.Argument(help="An image or a video.")],
    question: Annotated[list[str] | None, typer.Option("--question", "-q", metavar="<str>", help="A question; repeat for several (default: describe it).")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="At most this many tokens per answer.")] = DEFAULT_MAX_NEW_TOKENS,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy (default); > 0 samples.")] = 0.0,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling (with --temperature).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Top-k sampling (with --temperature); 0: no top-k.")] = None,
    min_p: Annotated[float | None, typer.Option("--min-p", help="Min-p sampling (with --temperature): drop tokens less likely than this times the most likely one.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for sampling and for --vae-sample's noise (random if absent; printed and recorded).")] = None,
    repetition_penalty: Annotated[float | None, typer.Option("--repetition-penalty", help="Above 1 discourages repeating the answer's tokens (transformers' penalty; 1.1 is usual).")] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="Video: frames sampled uniformly (default 32 for the real models).")] = None,
    mask: Annotated[MaskMode | None, typer.Option("--mask", help="official (the demos' shifted block) or training (training-consistent block); default: what the checkpoint declares (official for the released ones).")] = None,
    template: Annotated[Template | None, typer.Option("--template", help="official (demo prompt) or training (stage-2 whitespace); default: what the checkpoint declares.")] = None,
    vae_sample: Annotated[bool, typer.Option("--vae-sample", help="Encode with the stochastic VAE sample, as the official demo.")] = False,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print tokens as they are produced.")] = True,
    answer_format: Annotated[AnswerFormat | None, typer.Option("--format", help="json: each answer is a JSON object (constrained decoding, as Ollama's --format json).")] = None,
    json_schema: Annotated[str | None, typer.Option("--json-schema", metavar="<file|json>", help="Each answer is JSON valid against this JSON schema (a file, or the schema's text), no property the schema does not declare; cut only by --max-new-tokens.")] = None,
    model: ModelOpt = None, vae: VaeOpt = None, lora: LoraOpt = None, lora_weight: LoraWeightOpt = None,
    runtime: RuntimeOptions = None,
    json_mode: JsonOpt = False, quiet: QuietOpt = False,
):
    """Answer questions about an image or a video (one answer per line on stdout)."""
    setup(json_mode, quiet, result="the answers")
    lora = adapters(lora, lora_weight)  # (a weight per adapter: checked before anything else)
    from .. import media as M
    from ..options import CaptionOptions
    from ..structured import JSON_OBJECT, read_schema, schema_grammar

    if answer_format is not None and json_schema is not None:
        raise UsageError("give --format json or --json-schema, not both")
    schema = read_schema(json_schema) if json_schema is not None else dict(JSON_OBJECT) if answer_format else None
    opts = CaptionOptions(questions=list(question or []), max_new_tokens=max_new_tokens, temperature=temperature,
                          top_k=top_k, top_p=top_p, seed=seed, frames=frames, mask_mode=value(mask),
                          template=value(template), vae_sample=vae_sample, max_memory_gb=runtime.max_memory_gb,
                          repetition_penalty=repetition_penalty, min_p=min_p, json_schema=schema,
                          strict_schema=json_schema is not None)
    opts.validate()
    if schema is not None:  # xgrammar's verdict (and whether it is installed) before the model loads
        schema_grammar(schema, opts.strict_schema)
    notice_unused_sampling(opts)
    kind = M.probe_kind(media)
    if kind == "image":
        # a broken or too large picture fails before the model loads (a JPEG over the limit is read
        # reduced, as understanding reads it: min_side, the model's size being unknown yet)
        M.read_image(media, min_side=1)
    else:
        M.check_video(media)  # so does a truncated or damaged video (without decoding it)

    from .generate import check_caption_before_loading

    model = model_name(model)  # (once: the default model's notice is one line)
    check_caption_before_loading(model, kind, opts, runtime, vae)  # the loaded check's verdict, before it
    bundle = load_model(model, runtime, vae=vae, lora=lora, vae_parts=("encoder",),
                        heads=("lm_head",))  # a caption never runs the flow head
    from .. import pipelines as P  # torch: after load_model's check of the model's name
    from ..pipelines.understand import video_note

    note = video_note(bundle, kind)  # (said before the answers: the result's notices hold it too)
    if note:
        notice(note)
    live = stream and not STATE["json"]

    open_line = [False]  # an answer's line is being streamed

    def on_text(i: int, piece: str) -> None:  # write(): a stdout that cannot hold a character gets it escaped
        open_line[0] = True
        write(sys.stdout, one_answer_line(piece))
        flush(sys.stdout)

    def on_done(i: int, answer: str) -> None:
        write(sys.stdout, "\n")
        flush(sys.stdout)
        open_line[0] = False

    with ProgressReporter() if not live else nullcontext() as bar:
        try:
            result = P.caption(bundle, media, opts, on_text=on_text if live else None, progress=bar,
                               on_done=on_done if live else None)
        except BaseException:  # Ctrl-C or a failure mid-answer: the error line starts a line of its own
            if open_line[0]:
                write(sys.stdout, "\n")
                flush(sys.stdout)
            raise
    from ..options import unused_sampling_note

    for line in result.notices:  # what the call found (an answer the context shortened): said once, after it
        if line not in (note, unused_sampling_note(opts)):  # (those two were said before the model ran)
            notice(line)
    if seed is None and result.options.get("seed") is not None:  # sampled: the seed drawn repeats the answers
        notice(f"seed {result.options.get('seed')}")
    if not live:
        emit({"media": str(media), "kind": result.kind, **bundle.record(),  # the load, as t2i's records say it
              "answers": [{"question": q, "answer": a, "tokens": n}
                          for q, a, n in zip(result.questions, result.answers, result.token_counts, strict=True)],
              "seconds": round(result.seconds, 3), "frames": result.frames, "options": result.options,
              **({"vae_tiles": result.vae_tiles} if result.vae_tiles is not None else {})},
             "".join(one_answer_line(a) + "\n" for a in result.answers))
