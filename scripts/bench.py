"""herd vs llama-server on the same model, machine and threads: decode speed, prompt speed
and time to first token with one slot; aggregate throughput of 1, 4 and 8 concurrent
clients with 8 slots; time to first token of a repeated long prompt against a cold one;
herd's own overhead per request against a direct runner call; herd's memory without a
model. Medians of several runs. Standard library only."""

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

THREADS = 2
CTX = 4096
PREDICT = 128
SLOTS = 8
CLIENTS = (1, 4, 8)
LONG_TEXT = ("The history of astronomy spans thousands of years, from ancient observers who tracked "
             "the motions of the planets to modern telescopes that image distant galaxies. ") * 40


NOTES = """
Why the pull misses 0.9x of plain curl here: on two cores the registry, herd's receiving,
its page-cache writes and its sha256 share what curl shares only with the registry. A
system-wide profile of repeated pulls (2026-12-07, Intel VM): the registry takes about 0.22
CPU-seconds a pull, herd about 0.5, of which sha256 is 0.2 (it runs at 1.73 GB/s on data in
the CPU's cache, about 1.2 GB/s as here; no crate or OpenSSL does better with the SHA
extensions), the page-cache copy 0.065, the socket copy 0.025. The registry's share plus the
hash alone already exceed two cores for curl's 0.18 s, so no order of the work reaches 0.9x on
this machine; with a core to spare for the hash, the hash (0.15 s hot) is shorter than curl's
fetch. Against the same work done by standard tools herd is faster (the last ratio). curl
fetched at 1.2-1.4 GB/s in most runs and at 0.54 GB/s in one of 2026-12-07 (herd 0.89x then).
2026-12-07: the fetches only receive, one thread writes and another hashes (from the pieces
in memory, no longer read back from the page cache), so the network never waits on the disk;
a pull starts on one connection and adds one every 0.2 s while it receives under 128 MiB/s
(up to 8), rather than 8 connections over 64 chunks from the start: each ranged GET costs
docker-registry about 2.5 ms of CPU (curl alone: 64 ranges over 8 connections 0.29 s, one GET
0.14 s). The weights' fetch, hash and flush went from 0.48-0.5 s to about 0.36 s. Then the
writer hashes the piece next in order itself, while it is in the CPU's cache: alternating
pulls at a slower moment of the VM (curl 0.44-0.63 s then), 16 each, median 0.465 s against
0.485 s.
The run above came at a slow moment of the VM: at 4 clients both servers gave 55-64 tok/s,
against 100-110 in a full run an hour before (herd 1.09x then, pull 0.52x, 0.94x of curl and
fsync).
2026-12-04: the weights are flushed while the hash catches up with the last chunks, instead of
after it.
2026-12-03: the template, parameters and config are fetched beside the weights instead of
after them (0.1 s less); the weights come in ordered chunks of size/64 (4-64 MiB) rather than
16 parts of which 8 ran in lockstep, so the hash trails the last byte by one chunk instead of
up to half the blob; writeback starts as each MiB lands (`sync_file_range`). Earlier, flushing
with `sync_data` every 32 MiB from the hashing thread measured no better and was not kept.

What moved these figures (the same llama.cpp sources in both). The machine changes between
tasks (an Intel Xeon VM with AMX on 2026-12-03, an AMD EPYC VM, about twice as fast, on
2026-12-04): only ratios taken in one run compare. 2026-12-02: a
repeated long prompt is served from the slot that holds it (a prefix in a busy slot is
copied to a free one); while slots generate, new prompts are read 128 tokens per step so
that they do not stall the streams. Two full runs that day gave 1.07x and 0.92x aggregate at
4 clients, 1.07x and 1.03x at 8, 0.68x and 0.50x for the repeated prompt's first token: at
4 clients the two servers are within this machine's noise of each other. 2026-12-01:
llama-cpp-sys-2 built llama.cpp as RelWithDebInfo (`-O2`) because herd's release profile
keeps line tables; built as Release (`-O3`), like llama-server, long-prompt prefill went
from 0.74-0.88x to 0.96x. Keeping only the sliding window in Gemma 3's SWA layers' cache
(llama-server's default, `swa_full = false`) took decode on a long prompt from 0.92x to
about 1.0x. 2026-12-07: a greedy slot (temperature 0, no penalties) takes the highest logit
straight from the logits instead of through llama.cpp's greedy sampler, which first builds a
candidate array of all 262,144 tokens each step (2.4% of the runner's profile at 4 clients).
Alternating 4-client runs with 8 slots, 5 each: 1.044x before, 1.048x after. A full run
earlier that day, before the change and at a slower moment of the VM (decode 36 tok/s rather
than 43), gave 0.91x at 4 clients; the run above, after it, 1.06x. This VM's speed drifts by 20% or more between minutes, so figures move from run
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


def timed_generation(url: str, body: dict, text_key: str, is_final) -> dict:
    """Streams one completion; returns the time to first text, the total time and the
    final line (the one `is_final` picks)."""
    start = time.perf_counter()
    first = None
    final = None
    for at, line in stream(url, body):
        if first is None and line.get(text_key):
            first = at
        if is_final(line):
            final = line
    total = time.perf_counter() - start
    return {"ttft": (first - start) if first else total, "total": total, "final": final}


def run_herd(base: str, prompt: str, predict: int = PREDICT) -> dict:
    body = {"model": "bench", "prompt": prompt, "raw": True, "stream": True,
            "options": {"temperature": 0, "num_predict": predict, "num_ctx": CTX}}
    g = timed_generation(base + "/api/generate", body, "response", lambda line: line.get("done"))
    f = g["final"]
    return {"ttft": g["ttft"], "total": g["total"],
            "decode": f["eval_count"] / max(f["eval_duration"], 1) * 1e9,
            "prefill": f["prompt_eval_count"] / max(f["prompt_eval_duration"], 1) * 1e9,
            "prompt_tokens": f["prompt_eval_count"], "tokens": f["eval_count"]}


def run_peer(base: str, prompt: str, predict: int = PREDICT) -> dict:
    body = {"prompt": prompt, "n_predict": predict, "temperature": 0, "stream": True, "cache_prompt": True}
    g = timed_generation(base + "/completion", body, "content", lambda line: line.get("stop"))
    t = g["final"]["timings"]
    return {"ttft": g["ttft"], "total": g["total"], "decode": t["predicted_per_second"],
            "prefill": t["prompt_per_second"], "prompt_tokens": t["prompt_n"], "tokens": t["predicted_n"]}


def aggregate(generate, base: str, clients: int, run: int) -> float:
    """Tokens per second over all of `clients` concurrent requests, first send to last token."""
    results = [None] * clients

    def client(i: int) -> None:
        results[i] = generate(base, f"Run {run}, client {i}. Tell me a story about a lighthouse.", PREDICT)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(r["tokens"] for r in results) / (time.perf_counter() - start)


def measure_concurrency(targets: dict, runs: int) -> dict:
    """Aggregate tok/s per client count, and time to first token of a long prompt cold and
    repeated; targets taken in turn, run after run. Returns medians."""
    samples = {name: {"agg": {n: [] for n in CLIENTS}, "cold": [], "warm": []} for name in targets}
    for generate, base in targets.values():
        generate(base, "Warm up.", 4)
    for i in range(runs):
        for n in CLIENTS:
            for name, (generate, base) in targets.items():
                samples[name]["agg"][n].append(aggregate(generate, base, n, i))
        for name, (generate, base) in targets.items():
            prompt = f"Cache run {i}. {LONG_TEXT}"
            samples[name]["cold"].append(generate(base, prompt, 4)["ttft"])
            samples[name]["warm"].append(generate(base, prompt, 4)["ttft"])
    med = statistics.median
    return {name: {"agg": {n: med(v) for n, v in s["agg"].items()}, "cold": med(s["cold"]), "warm": med(s["warm"])}
            for name, s in samples.items()}


class DirectRunner:
    """A herd-runner of its own, driven straight over its socket, as the server drives it."""

    SAMPLING = {"temperature": 0, "top_k": 40, "top_p": 0.9, "min_p": 0, "typical_p": 1, "repeat_last_n": 64,
                "repeat_penalty": 1, "presence_penalty": 0, "frequency_penalty": 0, "seed": 0}

    def __init__(self, runner_bin: str, model: str):
        self.work = tempfile.mkdtemp()
        sock_path = os.path.join(self.work, "runner.sock")
        self.proc = subprocess.Popen([runner_bin, "--model", model, "--socket", sock_path, "--ctx-size", str(CTX),
                                      "--parallel", "1", "--threads", str(THREADS)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not os.path.exists(sock_path):
            if time.time() > deadline:
                raise SystemExit("the runner did not open its socket")
            time.sleep(0.01)
        self.conn = socket.socket(socket.AF_UNIX)
        self.conn.connect(sock_path)
        assert self.read()["type"] == "hello"
        assert self.read()["type"] == "loaded"
        self.next_id = 0

    def read_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            if not chunk:
                raise SystemExit("the runner closed its socket")
            data += chunk
        return data

    def read(self) -> dict:
        (length,) = struct.unpack(">I", self.read_exactly(4))
        return json.loads(self.read_exactly(length))

    def round_trip(self, prompt: str) -> float:
        """Seconds for a one-token completion of `prompt`."""
        self.next_id += 1
        data = json.dumps({"type": "complete", "id": self.next_id, "prompt": prompt, "sampling": self.SAMPLING,
                           "num_predict": 1, "num_keep": 4, "stop": [], "return_tokens": False}).encode()
        start = time.perf_counter()
        self.conn.sendall(struct.pack(">I", len(data)) + data)
        while self.read()["type"] not in ("done", "failed"):
            pass
        return time.perf_counter() - start

    def close(self) -> None:
        self.conn.close()
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def round_trips(base: str, peer_base: str, direct: DirectRunner, runs: int) -> dict:
    """Median seconds of a one-token completion of "Hi": herd over HTTP, the direct runner,
    llama-server over HTTP, taken in turn (the first round is a warm-up)."""
    trips = {"herd": [], "direct": [], "peer": []}
    for i in range(runs + 1):
        herd = run_herd(base, "Hi", 1)["total"]
        alone = direct.round_trip("Hi")
        peer = run_peer(peer_base, "Hi", 1)["total"]
        if i > 0:
            trips["herd"].append(herd)
            trips["direct"].append(alone)
            trips["peer"].append(peer)
    return {name: statistics.median(values) for name, values in trips.items()}


def rss_bytes(pid: int) -> int:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


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


def measure_pull(herd_bin: pathlib.Path, work: str, runs: int) -> dict:
    """Pull throughput from a local docker-registry: herd's whole pull (manifest, parallel
    ranged parts, sha256 check, fsync) against curl fetching the same blob to a file."""
    storage, models = tempfile.mkdtemp(), tempfile.mkdtemp()
    reg_port, herd_port = free_port(), free_port()
    registry = subprocess.Popen(
        ["docker-registry", "serve", str(pathlib.Path(__file__).parent / "../../shared/registry/registry-config.yml")],
        env=dict(os.environ, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=storage,
                 REGISTRY_HTTP_ADDR=f"127.0.0.1:{reg_port}"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, HERD_HOST=f"127.0.0.1:{herd_port}", HERD_MODELS=models,
               HERD_RUNNER=str(herd_bin / "herd-runner"), HERD_REGISTRIES=f"127.0.0.1:{reg_port}")
    herd = subprocess.Popen([str(herd_bin / "herd"), "serve"], env=env, stderr=subprocess.DEVNULL)
    base, name = f"http://127.0.0.1:{herd_port}", f"127.0.0.1:{reg_port}/bench/gemma:latest"

    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
        return json.loads(urllib.request.urlopen(request, timeout=600).read() or b"{}")

    try:
        wait_http(base + "/")
        wait_http(f"http://127.0.0.1:{reg_port}/v2/")
        subprocess.run([str(herd_bin / "herd"), "create", name, "-f", os.path.join(work, "Modelfile")],
                       env=env, check=True, stderr=subprocess.DEVNULL)
        assert post("/api/push", {"model": name, "insecure": True, "stream": False})["status"] == "success"
        manifest = json.loads(pathlib.Path(models, "manifests", f"127.0.0.1:{reg_port}", "bench", "gemma",
                                           "latest").read_bytes())
        weights = max(manifest["layers"], key=lambda layer: layer["size"])
        blob_url = f"http://127.0.0.1:{reg_port}/v2/bench/gemma/blobs/{weights['digest']}"
        target = os.path.join(models, "curl-copy")
        herd_times, curl_times, synced_times, verified_times = [], [], [], []
        for _ in range(runs):
            request = urllib.request.Request(base + "/api/delete", data=json.dumps({"model": name}).encode(),
                                             method="DELETE")
            urllib.request.urlopen(request, timeout=60).read()
            start = time.perf_counter()
            assert post("/api/pull", {"model": name, "insecure": True, "stream": False})["status"] == "success"
            herd_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            subprocess.run(["curl", "-sf", "-o", target, blob_url], check=True)
            curl_times.append(time.perf_counter() - start)
            with open(target, "rb") as copy:
                os.fsync(copy.fileno())
            synced_times.append(time.perf_counter() - start)
            os.remove(target)
            # What herd does, with standard tools: the bytes hashed as they arrive, then flushed.
            start = time.perf_counter()
            subprocess.run(f"curl -sf '{blob_url}' | tee '{target}' | openssl dgst -sha256 >/dev/null",
                           shell=True, check=True)
            with open(target, "rb") as copy:
                os.fsync(copy.fileno())
            verified_times.append(time.perf_counter() - start)
            os.remove(target)
        size = weights["size"]
        return {"size": size, "herd": size / statistics.median(herd_times), "curl": size / statistics.median(curl_times),
                "curl_synced": size / statistics.median(synced_times),
                "curl_verified": size / statistics.median(verified_times)}
    finally:
        for proc in (herd, registry):
            proc.kill()
            proc.wait()
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(models, ignore_errors=True)


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

    work = tempfile.mkdtemp()
    os.symlink(a.model, os.path.join(work, "gemma-3-270m-q4_k_m.gguf"))
    shutil.copy(a.modelfile, os.path.join(work, "Modelfile"))
    procs = []

    def start_pair(slots: int):
        """herd and llama-server with `slots` slots of CTX tokens each; returns their URLs."""
        models = tempfile.mkdtemp()
        herd_port = free_port()
        env = dict(os.environ, HERD_HOST=f"127.0.0.1:{herd_port}", HERD_MODELS=models,
                   HERD_RUNNER=str(herd_bin / "herd-runner"), HERD_KEEP_ALIVE="-1", HERD_NUM_PARALLEL=str(slots))
        herd = subprocess.Popen([str(herd_bin / "herd"), "serve"], env=env, stderr=subprocess.DEVNULL)
        procs.append(herd)
        base = f"http://127.0.0.1:{herd_port}"
        wait_http(base + "/")
        subprocess.run([str(herd_bin / "herd"), "create", "bench", "-f", os.path.join(work, "Modelfile")],
                       env=env, check=True, stderr=subprocess.DEVNULL)
        peer_port = free_port()
        peer = subprocess.Popen([a.peer, "-m", a.model, "--host", "127.0.0.1", "--port", str(peer_port),
                                 "-t", str(THREADS), "-c", str(CTX * slots), "--parallel", str(slots),
                                 "--cache-ram", "0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(peer)
        peer_base = f"http://127.0.0.1:{peer_port}"
        wait_http(peer_base + "/health")
        return herd, base, peer_base

    def stop_all():
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        procs.clear()

    try:
        herd, base, peer_base = start_pair(1)
        idle_rss = rss_bytes(herd.pid)
        results = measure({"herd": (run_herd, base), "peer": (run_peer, peer_base)}, a.runs)
        herd_results, peer_results = results["herd"], results["peer"]
        overhead_runs = 20
        direct = DirectRunner(str(herd_bin / "herd-runner"), a.model)
        try:
            trips = round_trips(base, peer_base, direct, overhead_runs)
        finally:
            direct.close()
        # Unload, then see what the server keeps.
        urllib.request.urlopen(urllib.request.Request(
            base + "/api/generate", data=json.dumps({"model": "bench", "keep_alive": 0}).encode()), timeout=60).read()
        time.sleep(1)
        unloaded_rss = rss_bytes(herd.pid)
        stop_all()
        herd, base, peer_base = start_pair(SLOTS)
        concurrency = measure_concurrency({"herd": (run_herd, base), "peer": (run_peer, peer_base)},
                                          a.runs)
        stop_all()
        pull = measure_pull(herd_bin, work, a.runs)
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for label in ("short", "long"):
        h, l = herd_results[label], peer_results[label]
        rows.append(f"| decode tok/s, {label} prompt | {h['decode']:.1f} | {l['decode']:.1f} | {h['decode'] / l['decode']:.2f}x |")
        rows.append(f"| prefill tok/s, {label} prompt ({h['prompt_tokens']:.0f} / {l['prompt_tokens']:.0f} tok) | "
                    f"{h['prefill']:.0f} | {l['prefill']:.0f} | {h['prefill'] / l['prefill']:.2f}x |")
        rows.append(f"| time to first token, {label} prompt (s) | {h['ttft']:.3f} | {l['ttft']:.3f} | "
                    f"{h['ttft'] / l['ttft']:.2f}x |")
    h, l = concurrency["herd"], concurrency["peer"]
    more = []
    for n in CLIENTS:
        more.append(f"| aggregate tok/s, {n} client{'s' if n > 1 else ''} | {h['agg'][n]:.1f} | {l['agg'][n]:.1f} | "
                    f"{h['agg'][n] / l['agg'][n]:.2f}x |")
    more.append(f"| time to first token, long prompt cold (s) | {h['cold']:.3f} | {l['cold']:.3f} | "
                f"{h['cold'] / l['cold']:.2f}x |")
    more.append(f"| time to first token, same long prompt again (s) | {h['warm']:.3f} | {l['warm']:.3f} | "
                f"{h['warm'] / l['warm']:.2f}x |")
    mib = 1024 * 1024
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
""" + "\n".join(rows) + f"""

With {SLOTS} slots on both servers (herd `HERD_NUM_PARALLEL={SLOTS}`, llama-server `--parallel {SLOTS}
-c {CTX * SLOTS}`): clients send {PREDICT}-token requests at once, and the aggregate is their
tokens over the wall time from the first send to the last token. A long prompt (about 1,100
tokens) is then sent twice: cold, and again with its prefix in the cache (4 tokens generated).

| metric | herd | llama-server | ratio |
| --- | --- | --- | --- |
""" + "\n".join(more) + f"""

Per-request overhead (a one-token completion of "Hi", median of {overhead_runs}, the three taken
in turn): herd over HTTP {trips['herd'] * 1000:.1f} ms; the same on a herd-runner of its own, straight
over its socket, {trips['direct'] * 1000:.1f} ms, so herd's server adds
{(trips['herd'] - trips['direct']) * 1000:.1f} ms; llama-server over HTTP {trips['peer'] * 1000:.1f} ms.

herd's server process: {idle_rss / mib:.1f} MiB resident after start, without a model; {unloaded_rss / mib:.1f} MiB
after the benchmark, with the model unloaded (target: under 40 MB). Runners are separate processes.

Pull from a local `docker-registry` (the {pull['size'] / 1e6:.0f} MB weights blob, loopback, median of
{a.runs}): herd's whole `/api/pull` (manifest, every blob at once, the weights in ordered ranged
chunks on as many connections as the link needs, hashed as they land, fsync, manifest written) {pull['herd'] / 1e6:.0f} MB/s; `curl` fetching
the same blob to a file {pull['curl'] / 1e6:.0f} MB/s; ratio {pull['herd'] / pull['curl']:.2f}x (target: at
least 0.9x). curl then an fsync of its file: {pull['curl_synced'] / 1e6:.0f} MB/s (herd
{pull['herd'] / pull['curl_synced']:.2f}x). What herd does, with standard tools (`curl | tee FILE | openssl
dgst -sha256`, then fsync): {pull['curl_verified'] / 1e6:.0f} MB/s (herd {pull['herd'] / pull['curl_verified']:.2f}x).
""" + NOTES
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The soak figures come from tests/tests/soak.rs, not from this script: keep them.
    previous = out.read_text() if out.exists() else ""
    soak = previous.find("\n## Soak")
    if soak >= 0:
        text = text.rstrip("\n") + "\n" + previous[soak:]
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
