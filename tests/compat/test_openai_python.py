"""The official `openai` Python client, unchanged, pointed at herd's /v1 with the real model."""

import base64
import json
import struct

import openai
import pytest

from conftest import MODEL, WORKED_EXAMPLES


@pytest.fixture(scope="module")
def client(herd_with_model):
    return openai.OpenAI(base_url=f"{herd_with_model}/v1", api_key="herd", max_retries=0)


def test_chat_completion(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Why is the sky blue?"}],
                                       max_tokens=12, temperature=0, seed=3)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == MODEL
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12
    again = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Why is the sky blue?"}],
                                           max_completion_tokens=12, temperature=0, seed=3)
    assert again.choices[0].message.content == choice.message.content


def test_chat_completion_streamed_with_usage(client):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_stop_sequences_end_with_stop(client):
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4, 5, 6, 7,", max_tokens=40, temperature=0,
                                  stop=[","])
    # The prompt goes through the model's template, as Ollama's does; the answer counts on.
    assert r.choices[0].text and "," not in r.choices[0].text
    assert r.choices[0].finish_reason == "stop"


def test_json_schema_response_format(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "country": {"type": "string", "maxLength": 20}},
              "required": ["city", "country"], "additionalProperties": False}
    for seed in range(3):
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Where is the Eiffel tower?"}], seed=seed,
            max_tokens=80, response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
        value = json.loads(r.choices[0].message.content)
        assert set(value) == {"city", "country"}
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "JSON for Rome"}],
                                       max_tokens=40, temperature=0, response_format={"type": "json_object"})
    assert r.choices[0].message.content.lstrip().startswith("{")


def test_text_completion(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6
    streamed = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == r.choices[0].text


def test_models(client):
    models = client.models.list()
    entry = next(m for m in models.data if m.id == MODEL)
    assert entry.object == "model" and entry.owned_by == "library" and entry.created > 1_600_000_000
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model:1b")


def test_embeddings(client):
    r = client.embeddings.create(model=MODEL, input=["The cat sat on the mat.", "Stock prices fell."])
    assert r.object == "list" and [d.index for d in r.data] == [0, 1]
    assert len(r.data[0].embedding) == 640
    assert r.usage.prompt_tokens == r.usage.total_tokens > 5
    cut = client.embeddings.create(model=MODEL, input="The cat sat on the mat.", dimensions=32)
    assert len(cut.data[0].embedding) == 32
    # The client asks for base64 by default when numpy is absent and decodes it; check by hand too.
    raw = client.embeddings.with_raw_response.create(model=MODEL, input="hi", encoding_format="base64")
    encoded = json.loads(raw.text)["data"][0]["embedding"]
    floats = struct.unpack(f"<{len(base64.b64decode(encoded)) // 4}f", base64.b64decode(encoded))
    assert len(floats) == 640 and abs(sum(v * v for v in floats) - 1) < 1e-4


def test_errors_map_to_the_clients_exceptions(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert "not found" in err.value.message
    assert err.value.body["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[])
    assert "too short" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "data URI" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       response_format={"type": "json_schema", "json_schema": {
                                           "name": "x", "schema": {"type": "object", "required": "city"}}})
    assert "format.required" in err.value.message
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input=[[1, 2, 3]])


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 30}},
                   "required": ["city"]}}}


def test_forced_tool_calls(client, tools_model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model=tools_model, messages=messages, tools=[WEATHER_TOOL],
                                       tool_choice="required", max_tokens=80)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str) and arguments["city"]
    # The next turn carries the call and its result back; the server takes both.
    followup = messages + [choice.message.model_dump(exclude_none=True),
                           {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
    r = client.chat.completions.create(model=tools_model, messages=followup, tools=[WEATHER_TOOL],
                                       tool_choice="none", max_tokens=12)
    assert r.choices[0].message.content and not r.choices[0].message.tool_calls
    # Streamed, the call arrives whole in one delta.
    chunks = list(client.chat.completions.create(
        model=tools_model, messages=messages, tools=[WEATHER_TOOL], max_tokens=80, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) == 1 and deltas[0][0].function.name == "get_weather"
    json.loads(deltas[0][0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert "does not support tools" in err.value.message


CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"], "additionalProperties": False}


def test_responses(client):
    r = client.responses.create(model=MODEL, input="Why is the sky blue?", instructions="Answer briefly.",
                                max_output_tokens=12, temperature=0)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == MODEL
    # Cut by max_output_tokens: incomplete, as OpenAI reports it.
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text and r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.usage.output_tokens == 12 and r.usage.total_tokens == r.usage.input_tokens + 12
    items = client.responses.create(model=MODEL, max_output_tokens=12, temperature=0, input=[
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "input_text", "text": "Why is the sky blue?"}]}])
    assert items.output_text == r.output_text


def test_responses_streamed(client):
    request = dict(model=MODEL, input="Name a colour.", max_output_tokens=10, temperature=0)
    whole = client.responses.create(**request)
    events = list(client.responses.create(**request, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.incomplete"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    assert events[-1].response.output_text == whole.output_text
    # The SDK's own accumulator agrees on an answer that completes (the grammar ends it).
    request.update(max_output_tokens=60, input="Where is the Eiffel tower?",
                   text={"format": {"type": "json_schema", "name": "place", "schema": CITY}})
    whole = client.responses.create(**request)
    with client.responses.stream(**request) as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == whole.output_text


def test_responses_structured_and_tools(client, tools_model):
    schema = CITY
    r = client.responses.create(model=MODEL, input="Where is the Eiffel tower?", max_output_tokens=60, temperature=0,
                                text={"format": {"type": "json_schema", "name": "place", "schema": schema}})
    assert set(json.loads(r.output_text)) == {"city"}
    # The grammar ends the answer when the object closes: complete, not cut.
    assert r.status == "completed" and r.incomplete_details is None
    tool = {"type": "function", "name": "get_weather", "description": "The weather in a city",
            "parameters": WEATHER_TOOL["function"]["parameters"]}
    r = client.responses.create(model=tools_model, input="What is the weather in Paris?", tools=[tool],
                                tool_choice="required", max_output_tokens=80)
    call = next(item for item in r.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments)["city"]
    followup = [{"role": "user", "content": "What is the weather in Paris?"},
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees and sunny"}]
    answer = client.responses.create(model=tools_model, input=followup, tools=[tool], tool_choice="none",
                                     max_output_tokens=12)
    assert answer.output_text and all(item.type == "message" for item in answer.output)
    events = list(client.responses.create(model=tools_model, input="Weather in Rome?", tools=[tool],
                                          tool_choice={"type": "function", "name": "get_weather"},
                                          max_output_tokens=80, stream=True))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and json.loads(done[0].arguments)["city"]
    assert events[-1].type == "response.completed"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="hi", previous_response_id="resp_1")
    assert "previous_response_id" in err.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")


def openai_history():
    """The worked examples in OpenAI's shape: reasoning rides in `reasoning`, as in Ollama."""
    return [{"role": m["role"], "content": m["content"], **({"reasoning": m["thinking"]} if "thinking" in m else {})}
            for m in WORKED_EXAMPLES]


def test_reasoning(client, think_model):
    r = client.chat.completions.create(model=think_model, messages=openai_history(), max_tokens=16, temperature=0)
    message = r.choices[0].message
    assert message.reasoning and "</think>" not in message.reasoning and message.content
    chunks = list(client.chat.completions.create(model=think_model, messages=openai_history(), max_tokens=16,
                                                 temperature=0, stream=True))
    streamed = "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks if c.choices)
    assert streamed == message.reasoning
    off = client.chat.completions.create(model=think_model, messages=openai_history(), max_tokens=16,
                                         temperature=0, reasoning_effort="none")
    assert getattr(off.choices[0].message, "reasoning", None) is None
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=openai_history(), reasoning_effort="high")
    assert "does not support thinking" in err.value.message
    # In the Responses API, earlier reasoning comes back as reasoning items.
    items = []
    for m in WORKED_EXAMPLES:
        if "thinking" in m:
            items.append({"type": "reasoning", "summary": [], "encrypted_content": m["thinking"]})
        items.append({"role": m["role"], "content": m["content"]})
    response = client.responses.create(model=think_model, input=items, max_output_tokens=16, temperature=0)
    reasoning = next(item for item in response.output if item.type == "reasoning")
    assert reasoning.summary[0].text == message.reasoning
