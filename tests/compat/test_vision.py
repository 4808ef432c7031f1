"""Images through the official clients: the ollama client's `images`, OpenAI's `image_url` and
`input_image` data URIs, Anthropic's base64 image blocks, on a model with a vision projector
(the synthetic one of the integration tests: its answers mean nothing, but every image is
decoded, encoded and evaluated for real, so it takes its tokens in the prompt and changes the
greedy answer), and the 400s of each layer for images that cannot be used."""

import base64

import anthropic
import ollama
import openai
import pytest

from conftest import MODEL, png

# The projector's tokens per image, and the <start_of_image> / <end_of_image> around them
# (PROJECTOR_IMAGE_TOKENS and IMAGE_WRAPPING_TOKENS in the integration tests).
IMAGE_TOKENS = 4 + 2
GREEDY = {"temperature": 0, "num_predict": 8}
# The anthropic SDK no longer takes sampling parameters as arguments; the Messages API still does.
ANTHROPIC_GREEDY = {"temperature": 0, "top_k": 1}

RED = png(32, 32, lambda x, y: (220, 30, 30))
BOARD = png(64, 48, lambda x, y: (0, 0, 0) if (x // 8 + y // 8) % 2 == 0 else (255, 255, 255))


def data_uri(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


@pytest.fixture(scope="module")
def clients(vision_model, herd_with_model):
    return (ollama.Client(host=herd_with_model),
            openai.OpenAI(base_url=herd_with_model + "/v1", api_key="herd", max_retries=0),
            anthropic.Anthropic(base_url=herd_with_model, api_key="herd", max_retries=0))


def test_the_ollama_client_sends_images_to_generate_and_chat(clients, vision_model):
    client = clients[0]
    assert "vision" in client.show(vision_model).capabilities
    ask = "Describe the picture."
    plain = client.generate(model=vision_model, prompt=ask, options=GREEDY)
    red = client.generate(model=vision_model, prompt=ask, images=[RED], options=GREEDY)
    board = client.generate(model=vision_model, prompt=ask, images=[BOARD], options=GREEDY)
    assert red.prompt_eval_count == plain.prompt_eval_count + IMAGE_TOKENS
    assert red.response != board.response, "the image changed nothing"
    streamed = "".join(c.response for c in client.generate(model=vision_model, prompt=ask, images=[RED],
                                                           options=GREEDY, stream=True))
    assert streamed == red.response

    def chat(images, stream=False):
        message = {"role": "user", "content": "What is in it?", "images": images}
        return client.chat(model=vision_model, messages=[message], options=GREEDY, stream=stream)

    two = chat([RED, BOARD])
    assert two.prompt_eval_count == chat([]).prompt_eval_count + 2 * IMAGE_TOKENS
    assert "".join(c.message.content for c in chat([RED, BOARD], stream=True)) == two.message.content


def test_the_ollama_client_gets_400s_for_images_that_cannot_be_used(clients, vision_model):
    client = clients[0]
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=vision_model, prompt="hi", images=[b"plain text, not a picture"])
    assert err.value.status_code == 400 and "images[0] is not a PNG, JPEG, WebP, GIF or BMP image" in err.value.error
    # A PNG cut short passes the server's check and fails in the runner: a 400 still, streamed too.
    truncated = RED[:40]
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as err:
            reply = client.chat(model=vision_model, stream=stream,
                                messages=[{"role": "user", "content": "hi", "images": [truncated]}])
            if stream:
                list(reply)
        assert err.value.status_code == 400 and "could not be decoded" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=MODEL, prompt="hi", images=[RED])
    assert err.value.status_code == 400 and "does not support vision" in err.value.error
    # The runner goes on.
    assert client.generate(model=vision_model, prompt="hi", images=[RED], options=GREEDY).done


def test_openai_chat_and_responses_take_data_uris(clients, vision_model):
    client = clients[1]
    question = {"type": "text", "text": "What is in it?"}
    image = {"type": "image_url", "image_url": {"url": data_uri(BOARD)}}
    seen = client.chat.completions.create(model=vision_model, temperature=0, max_tokens=8,
                                          messages=[{"role": "user", "content": [question, image]}])
    plain = client.chat.completions.create(model=vision_model, temperature=0, max_tokens=8,
                                           messages=[{"role": "user", "content": [question]}])
    assert seen.usage.prompt_tokens == plain.usage.prompt_tokens + IMAGE_TOKENS
    streamed = client.chat.completions.create(model=vision_model, temperature=0, max_tokens=8, stream=True,
                                              messages=[{"role": "user", "content": [question, image]}])
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == seen.choices[0].message.content
    response = client.responses.create(model=vision_model, temperature=0, max_output_tokens=8, input=[
        {"role": "user", "content": [{"type": "input_text", "text": "What is in it?"},
                                     {"type": "input_image", "image_url": data_uri(BOARD)}]}])
    assert response.usage.input_tokens == seen.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=vision_model, messages=[{"role": "user", "content": [
            question, {"type": "image_url", "image_url": {"url": data_uri(RED[:40])}}]}], stream=True)
    assert "could not be decoded" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [question, image]}])
    assert "does not support vision" in err.value.message


def test_anthropic_messages_take_base64_image_blocks(clients, vision_model):
    client = clients[2]

    def asking(*images):
        blocks = [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                               "data": base64.b64encode(i).decode()}} for i in images]
        return {"model": vision_model, "max_tokens": 8, "extra_body": ANTHROPIC_GREEDY,
                "messages": [{"role": "user", "content": blocks + [{"type": "text", "text": "What is in it?"}]}]}

    seen = client.messages.create(**asking(BOARD))
    assert seen.usage.input_tokens == client.messages.create(**asking()).usage.input_tokens + IMAGE_TOKENS
    with client.messages.stream(**asking(BOARD)) as stream:
        assert stream.get_final_text() == "".join(b.text for b in seen.content if b.type == "text")
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(**asking(RED[:40]))
    assert "could not be decoded" in err.value.message
