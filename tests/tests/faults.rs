//! Faults and lifecycle with real processes: a runner killed mid-stream, a hung runner, a
//! corrupt blob, a full disk (a small tmpfs as the models dir), the server killed and
//! restarted, clients that hang up, prompts longer than the context, unloading, and server
//! shutdown. (A registry killed mid-pull and a disk filling mid-pull: registry.rs.)

use std::io::BufRead;
use std::time::{Duration, Instant};

use herd_tests::{
    chat_body, gemma_modelfile, generate_body, has_exited, is_reaped, model_path, remaining_lines, seconds_until,
    send_signal, tree, SmallDisk, StreamReader, TestServer, MODEL,
};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use sha2::Digest as _;

#[test]
fn runner_killed_mid_stream_gives_an_error_line_and_the_next_request_works() {
    let s = TestServer::with_model();
    let mut reader = s.open_stream(
        "/api/generate",
        &generate_body("Tell me a long story.", json!({"options": {"num_predict": 2000}})),
    );
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let first: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(first["done"], false);
    let runners = s.runner_pids();
    assert_eq!(runners.len(), 1, "one runner expected: {runners:?}");
    send_signal(runners[0], Signal::SIGKILL);
    let rest: Vec<Value> = reader
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let last = rest.last().expect("a last line after the kill");
    let error = last["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error line, got {last}"));
    assert!(error.contains("unexpectedly stopped"), "{error}");
    s.wait_for("the dead runner to be reaped", Duration::from_secs(5), || {
        is_reaped(runners[0])
    });

    let (status, body) = s.post(
        "/api/generate",
        &generate_body("Hello", json!({"stream": false, "options": {"num_predict": 4}})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eval_count"], 4);
    assert_eq!(s.runner_pids().len(), 1);
    // The operator sees it: one runner failed, none was stopped on purpose.
    let metrics = s.http().get(s.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.lines().any(|l| l == "herd_runner_failures_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_client_that_hangs_up_cancels_its_generation() {
    let s = TestServer::with_model();
    // Warm up so that load time does not blur the measurement.
    s.post(
        "/api/generate",
        &generate_body("hi", json!({"stream": false, "options": {"num_predict": 1}})),
    );
    let mut reader = s.open_stream(
        "/api/generate",
        &generate_body(
            "Tell me a very long story.",
            json!({"options": {"num_predict": 3000, "temperature": 0.8}}),
        ),
    );
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    drop(reader);
    // One slot: the next request is served once the abandoned one is gone.
    let (status, body) = s.post(
        "/api/generate",
        &generate_body("Hello", json!({"stream": false, "options": {"num_predict": 4}})),
    );
    assert_eq!(status, 200, "{body}");
    // The runner stopped the generation, not ran it to its 3000 tokens (timing would say
    // the same, but a loaded machine makes timing lie).
    let cancelled = CancelledRequest::from_log(&s);
    assert!(cancelled.field("generated") < 3000, "{}", cancelled.line);
}

#[test]
fn a_client_that_hangs_up_during_prompt_evaluation_cancels_it() {
    let s = TestServer::with_model();
    let long_prompt = |word: &str| {
        format!(
            "{word}. {}",
            "The quick brown fox jumps over the lazy dog. ".repeat(160)
        )
    };
    let raw_once = |prompt: String| {
        generate_body(
            &prompt,
            json!({"raw": true, "stream": false, "options": {"num_predict": 1}}),
        )
    };
    // How long this machine takes to evaluate the whole prompt (a first word of its own, so
    // nothing of it is cached).
    s.post("/api/generate", &raw_once("Warm".into()));
    let started = Instant::now();
    let (status, body) = s.post("/api/generate", &raw_once(long_prompt("Measure")));
    assert_eq!(status, 200, "{body}");
    let full_evaluation = started.elapsed();
    assert!(body["prompt_eval_count"].as_u64().unwrap() > 1500, "{body}");

    // Hang up long before the prompt is evaluated: no token has been sent yet.
    let reader = s.open_stream(
        "/api/generate",
        &generate_body(
            &long_prompt("Abandon"),
            json!({"raw": true, "options": {"num_predict": 1}}),
        ),
    );
    std::thread::sleep(full_evaluation / 5);
    drop(reader);
    // One slot: the next request is served once the abandoned one is gone.
    let (status, body) = s.post("/api/generate", &raw_once("Hello".into()));
    assert_eq!(status, 200, "{body}");
    // The runner stopped in the middle of the prompt, not after it (timing would say the
    // same, but a loaded machine makes timing lie).
    let cancelled = CancelledRequest::from_log(&s);
    assert!(
        cancelled.field("prompt_evaluated") < cancelled.field("prompt_tokens"),
        "the prompt was evaluated to its end: {}",
        cancelled.line
    );
    assert_eq!(cancelled.field("generated"), 0, "{}", cancelled.line);
}

/// The runner's "request cancelled" log line, with its counters.
struct CancelledRequest {
    line: String,
}

impl CancelledRequest {
    /// Waits for the line to reach the server's log (the runner's stderr is forwarded).
    fn from_log(s: &TestServer) -> Self {
        s.wait_for("the runner to log the cancellation", Duration::from_secs(10), || {
            s.log().contains("request cancelled")
        });
        let line = s
            .log()
            .lines()
            .find(|l| l.contains("request cancelled"))
            .map(String::from)
            .expect("found above");
        CancelledRequest { line }
    }

    fn field(&self, name: &str) -> u64 {
        self.line
            .split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {}", self.line))
    }
}

#[test]
fn a_conversation_longer_than_the_context_is_cut_and_reported() {
    let s = TestServer::with_model();
    let filler = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
    for i in 0..6 {
        messages.push(json!({"role": "user", "content": format!("{i}: {filler}")}));
        messages.push(json!({"role": "assistant", "content": "Noted."}));
    }
    messages.push(json!({"role": "user", "content": "Summarise."}));
    let body = json!({"model": MODEL, "messages": messages, "stream": false,
        "options": {"num_ctx": 512, "num_predict": 8, "temperature": 0}});
    let (status, out) = s.post("/api/chat", &body);
    assert_eq!(status, 200, "{out}");
    let truncated = out["prompt_truncated_tokens"]
        .as_u64()
        .expect("prompt_truncated_tokens reported");
    assert!(truncated > 500, "{out}");
    assert!(out["prompt_eval_count"].as_u64().unwrap() <= 512, "{out}");
    assert!(
        s.log().contains("oldest messages dropped"),
        "the log does not say the prompt was cut"
    );

    let long_prompt = "word ".repeat(1200);
    let (status, out) = s.post(
        "/api/generate",
        &generate_body(
            &long_prompt,
            json!({"stream": false, "options": {"num_ctx": 256, "num_predict": 4}}),
        ),
    );
    assert_eq!(status, 200, "{out}");
    assert!(
        out["prompt_truncated_tokens"].as_u64().is_some_and(|n| n > 900),
        "{out}"
    );
    assert!(s.log().contains("truncated"), "the runner did not log the cut");
}

#[test]
fn keep_alive_zero_unloads_and_ps_tracks_it() {
    let s = TestServer::with_model();
    let (_, body) = s.post("/api/generate", &json!({"model": MODEL, "prompt": ""}));
    assert_eq!(body["done_reason"], "load");
    assert_eq!(s.runner_pids().len(), 1);
    let (_, ps) = s.get("/api/ps");
    assert_eq!(ps["models"].as_array().unwrap().len(), 1);

    let (_, body) = s.post("/api/generate", &json!({"model": MODEL, "prompt": "", "keep_alive": 0}));
    assert_eq!(body["done_reason"], "unload");
    s.wait_for("the runner to exit", Duration::from_secs(5), || {
        s.runner_pids().is_empty()
    });
    let (_, ps) = s.get("/api/ps");
    assert!(ps["models"].as_array().unwrap().is_empty(), "{ps}");

    // A request with keep_alive 0 unloads once it is answered.
    let (status, _) = s.post(
        "/api/chat",
        &chat_body(
            "hi",
            json!({"stream": false, "keep_alive": 0, "options": {"num_predict": 2}}),
        ),
    );
    assert_eq!(status, 200);
    s.wait_for("the runner to exit after the request", Duration::from_secs(5), || {
        s.runner_pids().is_empty()
    });

    // A short keep_alive expires on its own.
    s.post(
        "/api/generate",
        &json!({"model": MODEL, "prompt": "", "keep_alive": "1s"}),
    );
    assert_eq!(s.runner_pids().len(), 1);
    s.wait_for("keep_alive to expire", Duration::from_secs(6), || {
        s.runner_pids().is_empty()
    });
}

#[test]
fn herd_keep_alive_sets_the_default_and_a_negative_keep_alive_never_expires() {
    let s = TestServer::start_with(&[("HERD_KEEP_ALIVE", "2s")]);
    s.import_model(MODEL);
    let expires_in = || {
        let (_, ps) = s.get("/api/ps");
        seconds_until(ps["models"][0]["expires_at"].as_str().unwrap())
    };
    // Loaded with the server's default, the model goes 2 s after its last request.
    s.post("/api/generate", &json!({"model": MODEL, "prompt": ""}));
    assert!(expires_in() <= 2, "HERD_KEEP_ALIVE is 2s");
    s.wait_for("the default keep_alive to expire", Duration::from_secs(8), || {
        s.runner_pids().is_empty()
    });

    // Loaded with a negative keep_alive it stays, through later requests that name none.
    s.post(
        "/api/generate",
        &json!({"model": MODEL, "prompt": "", "keep_alive": -1}),
    );
    let runners = s.runner_pids();
    assert_eq!(runners.len(), 1);
    const CENTURY: i64 = 100 * 365 * 24 * 3600;
    assert!(expires_in() > CENTURY, "forever");
    let (status, _) = s.post(
        "/api/generate",
        &generate_body("Hello", json!({"stream": false, "options": {"num_predict": 2}})),
    );
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(s.runner_pids(), runners, "still loaded well past the default");
    assert!(expires_in() > CENTURY);
    // Until a request says otherwise.
    s.post("/api/generate", &json!({"model": MODEL, "prompt": "", "keep_alive": 0}));
    s.wait_for("the runner to exit", Duration::from_secs(5), || {
        s.runner_pids().is_empty()
    });
}

/// A server with a shutdown grace period and `streams` slots, its one runner, and as many
/// streams of up to `num_predict` tokens, each of which has produced its first line.
fn streaming_with_grace(grace: &str, streams: usize, num_predict: u32) -> (TestServer, u32, Vec<StreamReader>) {
    let slots = streams.to_string();
    let s = TestServer::start_with(&[("HERD_SHUTDOWN_GRACE", grace), ("HERD_NUM_PARALLEL", &slots)]);
    s.import_model(MODEL);
    let readers = s.open_streams(streams, num_predict);
    let runners = s.runner_pids();
    assert_eq!(runners.len(), 1);
    (s, runners[0], readers)
}

/// Reads each stream to its end, on threads of their own: a stream must not wait on
/// another's reader to make progress.
fn last_lines(readers: Vec<StreamReader>) -> Vec<Value> {
    let readers: Vec<_> = readers
        .into_iter()
        .map(|reader| std::thread::spawn(move || remaining_lines(reader).pop().expect("a last line")))
        .collect();
    readers.into_iter().map(|r| r.join().unwrap()).collect()
}

#[test]
fn sigterm_lets_in_flight_streams_finish_then_stops_the_runners() {
    let (mut s, runner, readers) = streaming_with_grace("60s", 4, 40);
    send_signal(s.pid(), Signal::SIGTERM);
    // New requests are refused while the four streams finish.
    s.wait_for("the server to stop accepting", Duration::from_secs(5), || {
        std::net::TcpStream::connect(s.base.trim_start_matches("http://")).is_err()
    });
    for last in last_lines(readers) {
        assert_eq!(last["done"], true, "the stream finished: {last}");
        assert_eq!(last["eval_count"], 40, "{last}");
    }
    let status = s.wait_for_exit(Duration::from_secs(10));
    assert!(status.success(), "a clean shutdown exits 0: {status}\n{}", s.log());
    assert!(is_reaped(runner), "the server reaped its runner before exiting");
}

#[test]
fn sigint_cancels_streams_that_outlast_the_grace_period() {
    let (mut s, runner, readers) = streaming_with_grace("1s", 4, 100_000);
    let signalled = Instant::now();
    send_signal(s.pid(), Signal::SIGINT);
    for last in last_lines(readers) {
        assert_eq!(
            last["error"], "the server is shutting down",
            "the stream ends with an error line: {last}"
        );
    }
    let status = s.wait_for_exit(Duration::from_secs(10));
    let stopped = signalled.elapsed();
    assert!(status.success(), "{status}\n{}", s.log());
    assert!(is_reaped(runner), "the server reaped its runner before exiting");
    assert!(
        stopped < Duration::from_secs(5),
        "a 1s grace period took {stopped:?} to shut down"
    );
}

#[test]
fn sigkill_of_the_server_leaves_no_runner() {
    let s = TestServer::with_model();
    s.post("/api/generate", &json!({"model": MODEL, "prompt": ""}));
    let runners = s.runner_pids();
    assert_eq!(runners.len(), 1);
    send_signal(s.pid(), Signal::SIGKILL);
    // The runner dies with its server (the parent-death signal), well within 2 s.
    s.wait_for("the orphaned runner to exit", Duration::from_secs(2), || {
        has_exited(runners[0])
    });
}

#[test]
fn a_hung_runner_is_detected_by_its_health_check_and_replaced() {
    let s = TestServer::start_with(&[("HERD_HEALTH_TIMEOUT", "2s")]);
    s.import_model(MODEL);
    let mut reader = s.open_stream(
        "/api/generate",
        &generate_body("Tell me a long story.", json!({"options": {"num_predict": 2000}})),
    );
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let runners = s.runner_pids();
    assert_eq!(runners.len(), 1);
    // A stopped process stays alive but answers nothing: a hang, as the server sees it.
    send_signal(runners[0], Signal::SIGSTOP);
    let started = Instant::now();
    let last = remaining_lines(reader).pop().expect("a last line");
    let error = last["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error line, got {last}"));
    assert!(error.contains("health check"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?} to notice",
        started.elapsed()
    );
    s.wait_for(
        "the hung runner to be killed and reaped",
        Duration::from_secs(5),
        || is_reaped(runners[0]),
    );
    let (status, body) = s.post(
        "/api/generate",
        &generate_body("Hello", json!({"stream": false, "options": {"num_predict": 4}})),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_corrupt_blob_is_detected_on_load_and_not_served() {
    let s = TestServer::with_model();
    let once = generate_body(
        "Hi",
        json!({"stream": false, "keep_alive": 0, "options": {"num_predict": 2}}),
    );
    let (status, body) = s.post("/api/generate", &once);
    assert_eq!(status, 200, "{body}");
    s.wait_for("the model to unload", Duration::from_secs(10), || {
        s.runner_pids().is_empty()
    });

    // One bit flipped in the middle of the weights: same size, other content.
    let blobs = s.models_dir.path().join("blobs");
    let weights = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&weights).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&weights, &bytes).unwrap();
    drop(bytes);

    let (status, body) = s.post("/api/generate", &once);
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    let name = weights.file_name().unwrap().to_str().unwrap().replacen('-', ":", 1);
    assert!(error.starts_with(&format!("blob {name} is corrupt")), "{error}");
    assert!(error.contains("pull or create it again"), "{error}");
    let (_, ps) = s.get("/api/ps");
    assert_eq!(ps["models"], json!([]), "nothing serves the corrupt weights");
    s.wait_for("its runner to stop", Duration::from_secs(10), || {
        s.runner_pids().is_empty()
    });
    let (status, _) = s.get("/");
    assert_eq!(status, 200);
}

#[test]
fn a_full_disk_fails_create_with_a_clear_error_and_leaves_no_half_blob() {
    let disk = SmallDisk::new(100);
    let s = TestServer::start_in(tempfile::tempdir_in(disk.mount.path()).unwrap(), &[]);
    // The real weights (253 MB) cannot fit in 100 MB: `herd create` uploads, then fails.
    let dir = tempfile::tempdir().unwrap();
    let from = format!("FROM {}", model_path().display());
    std::fs::write(
        dir.path().join("Modelfile"),
        gemma_modelfile().replace("FROM ./gemma-3-270m-q4_k_m.gguf", &from),
    )
    .unwrap();
    let out = s.cli(&["create", MODEL, "-f", dir.path().join("Modelfile").to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no space left"), "{stderr}");
    assert_eq!(
        tree(s.models_dir.path()),
        Vec::<String>::new(),
        "a half blob or manifest was left"
    );
    let (status, tags) = s.get("/api/tags");
    assert_eq!((status, &tags), (200, &json!({"models": []})));
}

#[test]
fn after_a_sigkill_the_server_restarts_on_its_store_cleans_up_and_serves() {
    let s = TestServer::with_model();
    let (status, _) = s.post("/api/generate", &json!({"model": MODEL, "prompt": ""}));
    assert_eq!(status, 200);
    let runners = s.runner_pids();
    send_signal(s.pid(), Signal::SIGKILL);
    s.wait_for("the orphaned runner to exit", Duration::from_secs(10), || {
        runners.iter().all(|&pid| has_exited(pid))
    });
    let models = s.kill_keeping_models();
    // What a crash can leave: temp files of writes in progress, and partial downloads, one
    // recent (a later pull resumes it) and one older than any pull could use.
    let blobs = models.path().join("blobs");
    let manifest_dir = models.path().join("manifests/registry.ollama.ai/library/gemma3");
    std::fs::write(blobs.join(".tmp-0123456789abcdef"), "half a blob").unwrap();
    std::fs::write(manifest_dir.join(".tmp-0123456789abcdef"), "half a manifest").unwrap();
    let recent = blobs.join(format!("sha256-{}-partial", "1".repeat(64)));
    let stale = blobs.join(format!("sha256-{}-partial", "2".repeat(64)));
    std::fs::write(&recent, "resume me").unwrap();
    std::fs::write(&stale, "forget me").unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();

    let restarted = TestServer::start_in(models, &[]);
    let left = tree(restarted.models_dir.path());
    assert!(!left.iter().any(|p| p.contains(".tmp-")), "{left:?}");
    assert!(recent.exists(), "a recent partial download was removed");
    assert!(!stale.exists(), "a stale partial download was kept");
    let (status, body) = restarted.post(
        "/api/generate",
        &generate_body("Hello", json!({"stream": false, "options": {"num_predict": 3}})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eval_count"], 3);
}

#[test]
fn a_store_with_broken_entries_still_starts_lists_what_it_can_and_serves_the_rest() {
    let s = TestServer::with_model();
    let models = s.kill_keeping_models();
    let root = models.path();
    let library = root.join("manifests/registry.ollama.ai/library");
    // A manifest that is not JSON, one whose blobs are gone, a truncated GGUF blob under a
    // manifest of its own, and a partial download.
    std::fs::create_dir_all(library.join("garbage")).unwrap();
    std::fs::write(library.join("garbage/latest"), b"\x00\x01 not json").unwrap();
    let missing = format!("sha256:{}", "3".repeat(64));
    let manifest = |config: &str, weights: &str, size: usize| {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": weights, "size": size}],
        })
        .to_string()
    };
    std::fs::create_dir_all(library.join("orphan")).unwrap();
    std::fs::write(library.join("orphan/latest"), manifest(&missing, &missing, 5)).unwrap();
    let truncated = b"GGUF\x03\x00\x00\x00\xff\xff".to_vec();
    let truncated_digest = format!("{:x}", sha2::Sha256::digest(&truncated));
    std::fs::write(root.join(format!("blobs/sha256-{truncated_digest}")), &truncated).unwrap();
    let config_digest = format!("{:x}", sha2::Sha256::digest(b"{}"));
    std::fs::write(root.join(format!("blobs/sha256-{config_digest}")), b"{}").unwrap();
    std::fs::create_dir_all(library.join("truncated")).unwrap();
    let weights = format!("sha256:{truncated_digest}");
    std::fs::write(
        library.join("truncated/latest"),
        manifest(&format!("sha256:{config_digest}"), &weights, truncated.len()),
    )
    .unwrap();
    std::fs::write(root.join(format!("blobs/sha256-{}-partial", "4".repeat(64))), b"half").unwrap();

    let s = TestServer::start_in(models, &[]);
    let names = s.model_names();
    assert!(names.iter().any(|n| n == MODEL), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "garbage:latest"),
        "a manifest that is not JSON is listed: {names:?}"
    );
    assert!(
        s.log().contains("garbage"),
        "the broken manifest is not reported:\n{}",
        s.log()
    );
    for (model, expected) in [("orphan", 404), ("truncated", 500), ("garbage", 500)] {
        let (status, body) = s.post(
            "/api/generate",
            &json!({"model": model, "prompt": "hi", "stream": false}),
        );
        assert_eq!(status, expected, "{model}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{model}: {body}");
    }
    let (status, body) = s.post(
        "/api/generate",
        &generate_body("Hello", json!({"stream": false, "options": {"num_predict": 2}})),
    );
    assert_eq!(status, 200, "{body}");
}
