"""The official `ollama` Python client, unchanged, against the real herd server and model."""

import ollama
import pytest

from conftest import MODEL, create_model


@pytest.fixture(scope="module")
def client(herd_server):
    c = ollama.Client(host=herd_server)
    progress = create_model(c)
    assert progress[-1].status == "success"
    return c


def test_list_and_show(client):
    models = client.list().models
    entry = next(m for m in models if m.model == MODEL)
    assert entry.details.family == "gemma3"
    assert entry.details.quantization_level == "Q4_K_M"
    assert len(entry.digest) == 64
    info = client.show(MODEL)
    assert info.modelinfo["general.architecture"] == "gemma3"
    assert "<start_of_turn>" in info.template
    assert "completion" in info.capabilities


def test_generate(client):
    r = client.generate(model=MODEL, prompt="The capital of France is", options={"temperature": 0, "num_predict": 8})
    assert r.done and r.response
    assert r.eval_count == 8
    assert r.total_duration > r.eval_duration > 0
    chunks = list(client.generate(model=MODEL, prompt="Hello", stream=True, options={"num_predict": 8, "seed": 1}))
    assert chunks[-1].done and chunks[-1].done_reason in ("stop", "length")
    assert all(not c.done for c in chunks[:-1])


def test_chat(client):
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    r = client.chat(model=MODEL, messages=messages, options={"temperature": 0, "seed": 7, "num_predict": 16})
    assert r.message.role == "assistant" and r.message.content
    streamed = "".join(c.message.content for c in client.chat(
        model=MODEL, messages=messages, stream=True, options={"temperature": 0, "seed": 7, "num_predict": 16}))
    assert streamed == r.message.content


def test_copy_and_delete(client):
    client.copy(MODEL, "gemma-copy:test")
    assert any(m.model == "gemma-copy:test" for m in client.list().models)
    client.delete("gemma-copy:test")
    assert not any(m.model == "gemma-copy:test" for m in client.list().models)
    with pytest.raises(ollama.ResponseError) as err:
        client.show("gemma-copy:test")
    assert err.value.status_code == 404


def test_errors_are_response_errors(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404
    assert "not found" in err.value.error


def test_embed(client):
    r = client.embed(model=MODEL, input=["The cat sat on the mat.", "Stock prices fell."])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 640
    assert abs(sum(v * v for v in r.embeddings[0]) - 1.0) < 1e-4
    assert r.prompt_eval_count > 5
    cut = client.embed(model=MODEL, input="The cat sat on the mat.", dimensions=16)
    assert len(cut.embeddings[0]) == 16
    legacy = client.embeddings(model=MODEL, prompt="The cat sat on the mat.")
    assert len(legacy.embedding) == 640
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model=MODEL, input="word " * 400, truncate=False, options={"num_ctx": 128})
    assert err.value.status_code == 400
    assert err.value.error == "the input length exceeds the context length"


def test_structured_output_with_a_pydantic_schema(client):
    from pydantic import BaseModel, Field

    class City(BaseModel):
        name: str = Field(max_length=20)
        country: str = Field(max_length=20)
        population_millions: int = Field(ge=0, le=50)

    for seed in range(3):
        r = client.chat(model=MODEL, messages=[{"role": "user", "content": "Tell me about Paris."}],
                        format=City.model_json_schema(), options={"seed": seed, "temperature": 1.0, "num_predict": 120})
        city = City.model_validate_json(r.message.content)
        assert city.name
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=MODEL, prompt="hi", format={"type": "object", "properties": {"a": {"type": "int"}}})
    assert err.value.status_code == 400
    assert "format.properties.a.type" in err.value.error
