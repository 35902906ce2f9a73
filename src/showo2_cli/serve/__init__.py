"""An OpenAI-compatible HTTP server over one resident Show-o2 model (``showo2 serve``).

Endpoints (JSON in and out, errors always ``{"error": {"message", "type", "param", "code"}}``):

* ``GET /health``: status, queue depth and counters (no key needed);
* ``GET /v1/models`` and ``GET /v1/models/{id}``: the one served model, under each of its names
  (``--served-model-name``);
* ``POST /v1/chat/completions``: system/user/assistant messages (an assistant message may open
  the chat; a closing one is a reply to continue, as Ollama does), text and ``image_url`` (or vLLM's ``video_url``) parts (``data:`` URLs only: the server never fetches
  anything; images or videos, judged by content, matching the declared ``image/*`` or ``video/*``), greedy unless ``temperature`` > 0, ``top_p``, ``max_tokens`` (or
  ``max_completion_tokens``), ``seed``, ``frequency_penalty``, ``presence_penalty``,
  ``logit_bias``, extra ``repetition_penalty``, ``stop``, ``stream`` (server-sent events in the
  OpenAI chunk format, ending with ``data: [DONE]``); fields that would change the reply and
  cannot be honoured (``logprobs``, ``tools``, ...) are refused (400);
* ``POST /v1/responses``: OpenAI's Responses API over the same chat (``input`` items, ``instructions``,
  ``max_output_tokens``, ``text.format``, ``truncation``, ``stream`` as the typed Responses events);
  nothing is stored: ``previous_response_id``, ``conversation`` and ``background`` are refused (400);
* ``POST /v1/images/generations``: ``prompt``, ``n``, ``size``, ``response_format=b64_json``, and
  the extra fields ``seed``, ``steps``, ``guidance``, ``negative_prompt`` (also under diffusers'
  names: ``num_inference_steps``, ``guidance_scale``, ``width``/``height``,
  ``num_images_per_prompt``); diffusers' arguments the pipeline refuses (``true_cfg_scale``,
  ...) and its ``shift``/``sampler``/``sigmas``/``timesteps`` are refused (400); returns PNGs carrying
  their parameters.

Browsers on other origins are let in only by ``--allow-origin`` (CORS).

One worker thread owns the model and runs one job at a time; requests wait in a bounded queue
(full: 429). A job whose client disconnects is dropped from the queue or stopped at its next
token / sampling step. Status codes: 400 malformed request or invalid value, 401 missing or
wrong API key, 404 unknown route or model, 408 body too slow (headers too slow: the connection is
closed), 413 body too large, 422 a valid request over a limit
of this server (``max_tokens``, ``n``, ``steps``, size, image pixels, image count), 429 queue full (or too many large bodies read at once),
503 shutting down, 500 a bug (one line in the log, never a crash).
"""

from .app import create_app, serve
from .connections import bind_socket
from .errors import ApiError, api_error_of
from .requests import (
           API_KEY_ENV,
           ORIGINS_ENV,
           ChatPlan,
           ImagePlan,
           ServerConfig,
           api_key_from,
           origins_from,
           parse_chat,
           parse_images,
)
from .worker import Job, QueueFull, Worker

__all__ = ["API_KEY_ENV", "ORIGINS_ENV", "ApiError", "ChatPlan", "ImagePlan", "Job", "QueueFull", "ServerConfig", "Worker",
           "api_error_of", "api_key_from", "bind_socket", "origins_from", "create_app", "parse_chat", "parse_images", "serve"]
