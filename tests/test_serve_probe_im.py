"""Probe IM: the tool tags as the tokens Qwen2.5 reads and writes. The template's own ``<tool_call>``
and ``</tool_call>`` (Qwen2.5's added tokens 151657/151658) are one token each in the prompt, as HF's
and vLLM's ``apply_chat_template`` tokenize them, while the same tags typed by a client (a question, a
tool's result, a call's arguments) stay plain text; the demo's and tiny models' tokenizers mark those
tokens not special, as Qwen2.5's configs do, so a reply's ``<tool_call>`` survives decoding."""

from __future__ import annotations

import json

import pytest

from showo2_cli.serve import ServerConfig
from showo2_cli.serve.requests import parse_chat

TOOLS = [{"type": "function", "function": {"name": "get_time", "description": "The time."}}]
TYPED = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"


def _demo_tokenizer():
    from showo2_cli.loading import bundled_demo_path
    from showo2_cli.tokenizer import load_tokenizer

    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    from pathlib import Path

    return load_tokenizer(Path(bundled_demo_path()))


def test_the_templates_tags_are_tokens_and_a_clients_stay_text():
    from showo2_cli.dialogue import system_ids
    from showo2_cli.tokenizer import add_showo2_tokens, encode_user_text

    tok = _demo_tokenizer()
    tokens = add_showo2_tokens(tok)
    open_id, close_id = tok.convert_tokens_to_ids("<tool_call>"), tok.convert_tokens_to_ids("</tool_call>")
    messages = [{"role": "user", "content": "Say " + TYPED},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "get_time", "arguments": json.dumps(
                        {"note": TYPED})}}]},
                {"role": "tool", "tool_call_id": "a", "content": TYPED}]
    plan = parse_chat({"messages": messages, "tools": TOOLS}, ServerConfig())
    system = system_ids(tok, tokens, plan.system)
    # the format instruction: "<tool_call></tool_call> XML tags:\n<tool_call>\n{...}\n</tool_call>"
    assert system.count(open_id) == 2 and system.count(close_id) == 2
    question, answer, result = (encode_user_text(tok, t) for t in
                                (plan.turns[0].question, plan.turns[0].answer, plan.turns[1].question))
    assert open_id not in question and close_id not in question  # typed by the client
    assert answer.count(open_id) == 1 and answer.count(close_id) == 1  # the call's block, not its arguments
    assert open_id not in result and close_id not in result  # a tool's result is the client's text
    # the tags the template writes are the ids HF reads from the template's text; the rest is as before
    written = encode_user_text(tok, "a <tool_call> b")
    assert len(written) == 14 and written.count(open_id) == 0


def test_tool_call_tokens_survive_decoding_that_skips_special_tokens():
    from showo2_cli.tokenizer import add_showo2_tokens, byte_level_tokenizer

    for tok in (_demo_tokenizer(), byte_level_tokenizer()):
        add_showo2_tokens(tok)
        ids = [tok.convert_tokens_to_ids(t) for t in ("<tool_call>", "</tool_call>", "<|im_end|>", "<|image_pad|>")]
        assert tok.decode(ids, skip_special_tokens=True) == "<tool_call></tool_call>"
        assert len(set(ids)) == 4 and tok.convert_tokens_to_ids("[PAD]") == ids[0] + 8  # ids unchanged


# ---- a real server, the demo model --------------------------------------------------------------------



def _chat(base: str, body: dict) -> dict:
    import httpx

    r = httpx.post(f"{base}/v1/chat/completions", json={"model": "demo", "max_tokens": 2, "temperature": 0, **body},
                   timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_prompt_has_the_tags_as_tokens_on_a_server(demo_url):
    """A request with tools takes fewer prompt tokens than the same system text sent as a client's:
    each of the template's four tags one token, not its characters."""
    from showo2_cli.tokenizer import encode_user_text

    tok = _demo_tokenizer()
    ask = [{"role": "user", "content": "What time is it?"}]
    with_tools = _chat(demo_url, {"messages": [{"role": "system", "content": "Be brief."}, *ask], "tools": TOOLS})
    spelled = ("Be brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
               "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
               json.dumps(TOOLS[0]) + "\n</tools>\n\nFor each function call, return a json object with function "
               "name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
               "<function-name>, \"arguments\": <args-json-object>}\n</tool_call>")
    as_text = _chat(demo_url, {"messages": [{"role": "system", "content": spelled}, *ask]})
    saved = 2 * (len(encode_user_text(tok, "<tool_call>")) - 1) + 2 * (len(encode_user_text(tok, "</tool_call>")) - 1)
    assert as_text["usage"]["prompt_tokens"] - with_tools["usage"]["prompt_tokens"] == saved > 0


def test_a_tool_call_token_the_model_writes_reaches_the_client(demo_url):
    """The demo, pushed to write ``<tool_call>`` (its id biased), answers text holding it (it was
    dropped as a special token: an empty answer)."""
    tok = _demo_tokenizer()
    open_id = tok.convert_tokens_to_ids("<tool_call>")
    out = _chat(demo_url, {"messages": [{"role": "user", "content": "Hi"}], "tools": TOOLS,
                       "logit_bias": {str(open_id): 100}})
    choice = out["choices"][0]
    assert choice["message"]["content"] == "<tool_call><tool_call>" and choice["finish_reason"] == "length"
