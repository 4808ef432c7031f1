"""The official `ollama` Python client, unchanged, against the real herd server and model."""

import re

import ollama
import pytest

from conftest import MODEL, gemma_modelfile, model_path


def _modelfile_parts():
    text = gemma_modelfile()
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    parameters = {}
    for name, value in re.findall(r"^PARAMETER (\S+) (.+)$", text, re.M):
        value = value.strip().strip('"')
        if name == "stop":
            parameters.setdefault("stop", []).append(value)
        else:
            parameters[name] = float(value) if "." in value else int(value)
    return template, parameters


@pytest.fixture(scope="module")
def client(herd_server):
    c = ollama.Client(host=herd_server)
    digest = c.create_blob(model_path())
    template, parameters = _modelfile_parts()
    progress = list(c.create(model=MODEL, files={"gemma-3-270m-q4_k_m.gguf": digest}, template=template,
                             parameters=parameters, stream=True))
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
