"""herd vs llama-server on the same model, machine and threads: decode speed, prompt speed
and time to first token, medians of several runs. Standard library only."""

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

THREADS = 2
CTX = 4096
PREDICT = 128
LONG_TEXT = ("The history of astronomy spans thousands of years, from ancient observers who tracked "
             "the motions of the planets to modern telescopes that image distant galaxies. ") * 40


NOTES = """
What moved these figures (2026-12-01, this machine, the same llama.cpp sources in both):
llama-cpp-sys-2 built llama.cpp as RelWithDebInfo (`-O2`) because herd's release profile
keeps line tables; built as Release (`-O3`), like llama-server, long-prompt prefill went
from 0.74-0.88x to 0.96x. Keeping only the sliding window in Gemma 3's SWA layers' cache
(llama-server's default, `swa_full = false`) took decode on a long prompt from 0.92x to
about 1.0x. This VM's speed drifts by 20% or more between minutes, so figures move from run
to run; the ratios, taken in turn, are what to compare.
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def stream(url: str, body: dict):
    """POSTs and yields (arrival time, parsed line) for NDJSON or SSE lines."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: "):
                line = line[6:]
            if line and line != "[DONE]":
                yield time.perf_counter(), json.loads(line)


def run_herd(base: str, prompt: str) -> dict:
    body = {"model": "bench", "prompt": prompt, "raw": True, "stream": True,
            "options": {"temperature": 0, "num_predict": PREDICT, "num_ctx": CTX}}
    start = time.perf_counter()
    first = None
    final = None
    for at, line in stream(base + "/api/generate", body):
        if first is None and line.get("response"):
            first = at
        if line.get("done"):
            final = line
    return {"ttft": first - start, "decode": final["eval_count"] / final["eval_duration"] * 1e9,
            "prefill": final["prompt_eval_count"] / final["prompt_eval_duration"] * 1e9,
            "prompt_tokens": final["prompt_eval_count"], "tokens": final["eval_count"]}


def run_peer(base: str, prompt: str) -> dict:
    body = {"prompt": prompt, "n_predict": PREDICT, "temperature": 0, "stream": True, "cache_prompt": True}
    start = time.perf_counter()
    first = None
    final = None
    for at, line in stream(base + "/completion", body):
        if first is None and line.get("content"):
            first = at
        if line.get("stop"):
            final = line
    t = final["timings"]
    return {"ttft": first - start, "decode": t["predicted_per_second"], "prefill": t["prompt_per_second"],
            "prompt_tokens": t["prompt_n"], "tokens": t["predicted_n"]}


def measure(targets: dict, runs: int) -> dict:
    """Runs each prompt on every target in turn, run after run, so that a machine that gets
    slower or faster during the benchmark shifts all targets alike. Returns medians."""
    samples = {name: {"short": [], "long": []} for name in targets}
    for run, base in targets.values():
        run(base, "Warm up.")
    for i in range(runs):
        for label, text in (("short", "Why is the sky blue?"), ("long", LONG_TEXT)):
            for name, (run, base) in targets.items():
                # A different first word each run: nothing is served from a prefix cache.
                samples[name][label].append(run(base, f"Run {i}. {text}"))
    return {name: {label: {k: statistics.median(s[k] for s in runs_of) for k in runs_of[0]}
                   for label, runs_of in by_label.items()}
            for name, by_label in samples.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--herd-bin", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--modelfile", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    herd_bin = pathlib.Path(a.herd_bin)

    models = tempfile.mkdtemp()
    herd_port = free_port()
    env = dict(os.environ, HERD_HOST=f"127.0.0.1:{herd_port}", HERD_MODELS=models,
               HERD_RUNNER=str(herd_bin / "herd-runner"), HERD_KEEP_ALIVE="-1")
    herd = subprocess.Popen([str(herd_bin / "herd"), "serve"], env=env, stderr=subprocess.DEVNULL)
    peer_port = free_port()
    peer = None
    try:
        base = f"http://127.0.0.1:{herd_port}"
        wait_http(base + "/")
        work = tempfile.mkdtemp()
        os.symlink(a.model, os.path.join(work, "gemma-3-270m-q4_k_m.gguf"))
        shutil.copy(a.modelfile, os.path.join(work, "Modelfile"))
        subprocess.run([str(herd_bin / "herd"), "create", "bench", "-f", os.path.join(work, "Modelfile")],
                       env=env, check=True, stderr=subprocess.DEVNULL)
        peer = subprocess.Popen([a.peer, "-m", a.model, "--host", "127.0.0.1", "--port", str(peer_port),
                                 "-t", str(THREADS), "-c", str(CTX), "--parallel", "1", "--cache-ram", "0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peer_base = f"http://127.0.0.1:{peer_port}"
        wait_http(peer_base + "/health")
        results = measure({"herd": (run_herd, base), "peer": (run_peer, peer_base)}, a.runs)
        herd_results, peer_results = results["herd"], results["peer"]
    finally:
        for proc in (herd, peer):
            if proc and proc.poll() is None:
                proc.kill()
        shutil.rmtree(models, ignore_errors=True)

    rows = []
    for label in ("short", "long"):
        h, l = herd_results[label], peer_results[label]
        rows.append(f"| decode tok/s, {label} prompt | {h['decode']:.1f} | {l['decode']:.1f} | {h['decode'] / l['decode']:.2f}x |")
        rows.append(f"| prefill tok/s, {label} prompt ({h['prompt_tokens']:.0f} / {l['prompt_tokens']:.0f} tok) | "
                    f"{h['prefill']:.0f} | {l['prefill']:.0f} | {h['prefill'] / l['prefill']:.2f}x |")
        rows.append(f"| time to first token, {label} prompt (s) | {h['ttft']:.3f} | {l['ttft']:.3f} | "
                    f"{h['ttft'] / l['ttft']:.2f}x |")
    cpu = re.search(r"model name\s*:\s*(.*)", pathlib.Path("/proc/cpuinfo").read_text())
    text = f"""# Benchmarks

herd against llama.cpp's own `llama-server` (built by `shared/peer/build-llama-server.sh`), same
machine, same run, same model (Gemma 3 270M Q4_K_M), {THREADS} threads, context {CTX}, one slot,
greedy decoding of {PREDICT} tokens. Medians of {a.runs} runs, herd's and llama-server's taken in
turn (both servers up, one busy at a time) so that drift in the machine's speed hits both
alike; every run starts with a different word, so no prompt is served from a cache. Rates come from each server's own timings; time to
first token is measured by the client over HTTP streaming. Ratio: herd / llama-server (for
time to first token lower is better). Targets: decode and long-prompt prefill at least 0.97x.
Regenerate with `scripts/bench`.

Machine: {cpu.group(1) if cpu else 'unknown CPU'}, {os.cpu_count()} cores. Date: {time.strftime('%Y-%m-%d')}.

| metric | herd | llama-server | ratio |
| --- | --- | --- | --- |
""" + "\n".join(rows) + "\n" + NOTES
    pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
