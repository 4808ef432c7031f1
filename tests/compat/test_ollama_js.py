"""The official `ollama` JavaScript client (npm, pinned in js/package-lock.json) against herd."""

import pathlib
import subprocess

from conftest import MODEL


def test_official_javascript_client(herd_with_model):
    """The `ollama` npm package (pinned in tests/compat/js) runs its smoke script against herd."""
    js = pathlib.Path(__file__).resolve().parent / "js"
    assert (js / "node_modules/ollama").is_dir(), "run scripts/js-clients to install the JavaScript client"
    done = subprocess.run(["node", "smoke.mjs", herd_with_model, MODEL], cwd=js, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ok"
