"""The official `anthropic` Python client, unchanged, pointed at herd's /v1/messages with the real model."""

import anthropic
import pytest

from conftest import MODEL, WORKED_EXAMPLES

WEATHER_TOOL = {"name": "get_weather", "description": "The weather in a city",
                "input_schema": {"type": "object", "required": ["city"],
                                 "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 30}}}}
# The SDK no longer takes sampling parameters as arguments; the Messages API still does.
GREEDY = {"temperature": 0, "top_k": 1}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(herd_with_model):
    return anthropic.Anthropic(base_url=herd_with_model, api_key="herd", max_retries=0)


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_message(client):
    message = client.messages.create(model=MODEL, max_tokens=12, extra_body=GREEDY,
                                     messages=[{"role": "user", "content": "Why is the sky blue?"}])
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.model == MODEL
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 12 and message.usage.input_tokens > 5
    again = client.messages.create(model=MODEL, max_tokens=12, extra_body=GREEDY,
                                   messages=[{"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]}])
    assert text_of(again) == text_of(message)


def test_streamed_message_matches_the_whole_one(client):
    request = dict(model=MODEL, max_tokens=10, extra_body=GREEDY,
                   system=[{"type": "text", "text": "You are terse."}],
                   messages=[{"role": "user", "content": "Name a colour."}])
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text_of(whole) == text_of(final)
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 10
    events = [event.type for event in client.messages.create(**request, stream=True)]
    assert events[0] == "message_start" and events[-2:] == ["message_delta", "message_stop"]
    assert events[1] == "content_block_start" and events[-3] == "content_block_stop"
    assert set(events[2:-3]) == {"content_block_delta"}


def test_stop_sequences_end_the_turn(client):
    request = dict(model=MODEL, max_tokens=24, extra_body=GREEDY,
                   messages=[{"role": "user", "content": "Tell me about the moon."}])
    free = text_of(client.messages.create(**request))
    # A stop sequence taken from the middle of the greedy answer cuts it just before.
    stop = free.split()[len(free.split()) // 2]
    cut = client.messages.create(**request, stop_sequences=[stop])
    assert text_of(cut) == free[:free.index(stop)]
    assert cut.stop_reason == "end_turn"


def test_forced_tool_use(client, tools_model):
    message = client.messages.create(model=tools_model, max_tokens=80, messages=ASK, tools=[WEATHER_TOOL],
                                     tool_choice={"type": "any"})
    assert message.stop_reason == "tool_use"
    call = next(block for block in message.content if block.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input["city"], str) and call.input["city"]
    # The next turn carries the call and its result back; the server takes both.
    followup = ASK + [{"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
                      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                    "content": "18 degrees and sunny"}]}]
    answer = client.messages.create(model=tools_model, max_tokens=12, messages=followup, tools=[WEATHER_TOOL],
                                    tool_choice={"type": "none"})
    assert text_of(answer) and all(block.type == "text" for block in answer.content)
    # Streamed, the SDK assembles the input from the input_json_delta.
    with client.messages.stream(model=tools_model, max_tokens=80, messages=ASK, tools=[WEATHER_TOOL],
                                tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        final = stream.get_final_message()
    streamed_call = next(block for block in final.content if block.type == "tool_use")
    assert streamed_call.name == "get_weather" and streamed_call.input["city"]
    assert final.stop_reason == "tool_use"
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=MODEL, max_tokens=8, messages=ASK, tools=[WEATHER_TOOL])
    assert "does not support tools" in err.value.message


def test_errors_map_to_the_clients_exceptions(client):
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="no-such-model", max_tokens=8, messages=ASK)
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "not_found_error"
    assert "not found" in err.value.message
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=MODEL, max_tokens=0, messages=ASK)
    assert "max_tokens" in err.value.message
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=MODEL, max_tokens=8, messages=[])
    assert "messages is required" in err.value.message
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": [image]}])
    assert "base64" in err.value.message
    image["source"]["data"] = "iVBORw0KGgo="
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": [image]}])
    assert "does not support vision" in err.value.message
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=MODEL, max_tokens=8, messages=ASK, tools=[{"description": "no name"}])
    assert "tools[0]" in err.value.message


def anthropic_history():
    history = []
    for m in WORKED_EXAMPLES:
        if "thinking" in m:
            history.append({"role": "assistant", "content": [{"type": "thinking", "thinking": m["thinking"], "signature": ""},
                                                              {"type": "text", "text": m["content"]}]})
        else:
            history.append({"role": m["role"], "content": m["content"]})
    return history


def test_thinking_blocks(client, think_model):
    request = dict(model=think_model, max_tokens=16, extra_body=GREEDY, messages=anthropic_history(),
                   thinking={"type": "enabled", "budget_tokens": 1024})
    message = client.messages.create(**request)
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking and "</think>" not in message.content[0].thinking
    with client.messages.stream(**request) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking == message.content[0].thinking
    assert final.content[1].type == "text" and final.content[1].text
    # Agents ask every model to think; one that cannot answers without, as in Ollama.
    plain = client.messages.create(model=MODEL, max_tokens=8, messages=ASK, thinking={"type": "enabled", "budget_tokens": 1024})
    assert [block.type for block in plain.content] == ["text"]
