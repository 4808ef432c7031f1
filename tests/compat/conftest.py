"""Starts the real `herd serve` on a free port with a temp models dir, for the official clients."""

import os
import pathlib
import re
import signal
import subprocess
import tempfile
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = "gemma3:270m"


def _bin_dir() -> pathlib.Path:
    default = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/herd/target")) / "release"
    return pathlib.Path(os.environ.get("HERD_BIN_DIR", default))


def model_path() -> pathlib.Path:
    default = pathlib.Path.home() / ".cache/herd/models/gemma-3-270m-q4_k_m.gguf"
    path = pathlib.Path(os.environ.get("HERD_TEST_MODEL", default))
    assert path.is_file(), f"the real model is missing at {path}: run scripts/fetch-model"
    return path


def gemma_modelfile() -> str:
    return (ROOT / "scripts/gemma3-270m.Modelfile").read_text()


def modelfile_parts():
    """The template and parameters of the project's Modelfile for the real model."""
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


def create_model(client) -> list:
    """Uploads the real model's GGUF and creates MODEL with the official client; returns progress."""
    digest = client.create_blob(model_path())
    template, parameters = modelfile_parts()
    return list(client.create(model=MODEL, files={"gemma-3-270m-q4_k_m.gguf": digest}, template=template,
                              parameters=parameters, stream=True))


@pytest.fixture(scope="session")
def herd_with_model(herd_server):
    """The base URL of a running herd server that has MODEL."""
    import ollama

    progress = create_model(ollama.Client(host=herd_server))
    assert progress[-1].status == "success"
    return herd_server


def with_template(host: str, name: str, template_file: str) -> str:
    """Creates `name` from MODEL with a template from tests/data, through the official client."""
    import ollama

    template = (ROOT / "tests/data" / template_file).read_text()
    progress = list(ollama.Client(host=host).create(model=name, from_=MODEL, template=template, stream=True))
    assert progress[-1].status == "success"
    return name


TOOLS_MODEL = "gemma3-tools:270m"


@pytest.fixture(scope="session")
def tools_model(herd_with_model):
    """TOOLS_MODEL: the real model with a template that renders tools."""
    return with_template(herd_with_model, TOOLS_MODEL, "gemma3-tools.gotmpl")


THINK_MODEL = "gemma3-think:270m"
# Two worked examples teach the base model to close its reasoning (see tests/tests/thinking.rs).
WORKED_EXAMPLES = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "thinking": "Two plus two is four.", "content": "4"},
    {"role": "user", "content": "What is 3+3?"},
    {"role": "assistant", "thinking": "Three plus three is six.", "content": "6"},
    {"role": "user", "content": "What is 5+5?"},
]


@pytest.fixture(scope="session")
def think_model(herd_with_model):
    """THINK_MODEL: the real model with a template that reasons between <think> tags."""
    return with_template(herd_with_model, THINK_MODEL, "gemma3-think.gotmpl")


@pytest.fixture(scope="session")
def herd_server():
    """Yields the base URL of a running herd server; stops it afterwards."""
    models = tempfile.TemporaryDirectory()
    env = dict(os.environ, HERD_HOST="127.0.0.1:0", HERD_MODELS=models.name, HERD_RUNNER=str(_bin_dir() / "herd-runner"))
    env.pop("OLLAMA_HOST", None)
    proc = subprocess.Popen([str(_bin_dir() / "herd"), "serve"], env=env, stderr=subprocess.PIPE, text=True)
    address = None
    log = []
    for line in proc.stderr:
        log.append(line)
        match = re.search(r"listening on (\S+)", line)
        if match:
            address = match.group(1)
            break
    assert address, "herd serve did not start:\n" + "".join(log)
    # Keep draining the log so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    yield f"http://{address}"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    models.cleanup()


VISION_MODEL = "gemma3-vision:270m"
# Gemma 3 270M's embedding width, which the projector's output must have.
GEMMA_WIDTH = 640


def png(width: int, height: int, pixel) -> bytes:
    """An RGB PNG whose pixel (x, y) is `pixel(x, y)`, written with the standard library."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def vision_model(herd_with_model):
    """VISION_MODEL: the real model with the integration tests' synthetic vision projector
    (no small vision model is published on the package registries), created through the
    official client from two uploaded files."""
    import ollama

    projector = pathlib.Path(tempfile.mkdtemp()) / "mmproj.gguf"
    writer = _bin_dir() / "write-vision-projector"
    assert writer.is_file(), f"{writer} is missing: cargo test --release --workspace builds it"
    subprocess.run([str(writer), str(projector), str(GEMMA_WIDTH)], check=True)
    client = ollama.Client(host=herd_with_model)
    files = {"gemma-3-270m-q4_k_m.gguf": client.create_blob(model_path()), "mmproj.gguf": client.create_blob(projector)}
    projector.unlink()
    template, parameters = modelfile_parts()
    progress = list(client.create(model=VISION_MODEL, files=files, template=template, parameters=parameters,
                                  stream=True))
    assert progress[-1].status == "success"
    return VISION_MODEL
