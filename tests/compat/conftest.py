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
