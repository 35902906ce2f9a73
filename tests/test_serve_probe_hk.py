"""The Responses API against hostile clients (probe HK): values a client sent that look like the
chat's own names of its messages."""

from __future__ import annotations

import pytest

from showo2_cli.serve import ApiError, ServerConfig
from showo2_cli.serve.responses import parse_responses


@pytest.mark.parametrize("key", ["messages[4]", "messages[0]", "messages[99999999999999999999]"])
def test_a_value_naming_a_chat_message_is_not_renamed(key):
    """A ``logit_bias`` key ``'messages[4]'`` (the chat's refusal quotes it) was looked up among the
    request's input items: an IndexError, a 500. The client's own value is quoted back as sent."""
    with pytest.raises(ApiError) as e:
        parse_responses({"input": "hi", "logit_bias": {key: 1}}, ServerConfig())
    assert (e.value.status, e.value.param) == (400, "logit_bias")
    assert e.value.message.startswith(f"'logit_bias' keys must be token ids, got '{key[:20]}")


def test_the_chat_names_of_input_items_still_become_theirs():
    """The chat's names of its messages, unquoted, are still the request's items."""
    with pytest.raises(ApiError) as e:
        parse_responses({"instructions": "Be brief.", "input": [
            {"role": "user", "content": "hi"}, {"role": "user", "content": [{"type": "input_text", "text": 5}]}]},
            ServerConfig())
    assert e.value.param.startswith("input[1].content[0]") and "messages" not in e.value.message
