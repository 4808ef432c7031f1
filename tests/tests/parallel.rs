//! Several clients on one model: `HERD_NUM_PARALLEL` slots decoded in one loop, faults during
//! parallel streams, and absurd load options clamped instead of exhausting memory.

use std::io::BufRead;
use std::time::{Duration, Instant};

use herd_tests::{generate_body, is_reaped, remaining_lines, send_signal, TestServer, MODEL};
use serde_json::{json, Value};

fn parallel_server() -> TestServer {
    let s = TestServer::start_with(&[("HERD_NUM_PARALLEL", "4")]);
    s.import_model(MODEL);
    let (status, _) = s.post("/api/generate", &json!({"model": MODEL, "prompt": ""}));
    assert_eq!(status, 200);
    s
}

#[test]
fn four_clients_decode_together() {
    let s = std::sync::Arc::new(parallel_server());
    // Each client notes when its first token and its final line arrive.
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let body = generate_body(
                    &format!("Story {i}: once upon a time"),
                    json!({"options": {"num_predict": 200}}),
                );
                let mut reader = s.open_stream("/api/generate", &body);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let first_token = Instant::now();
                let last = remaining_lines(reader).pop().unwrap();
                (first_token, Instant::now(), last)
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for (_, _, last) in &results {
        assert_eq!(last["done"], true, "{last}");
        assert_eq!(last["eval_count"], 200, "{last}");
    }
    assert_eq!(s.runner_pids().len(), 1, "one runner serves all four");
    // None waits for another: every stream has its first token before any has finished.
    let last_first_token = results.iter().map(|r| r.0).max().unwrap();
    let first_done = results.iter().map(|r| r.1).min().unwrap();
    assert!(
        last_first_token < first_done,
        "a stream started only after another had finished"
    );
}

#[test]
fn a_runner_killed_during_four_streams_fails_each_of_them() {
    let s = parallel_server();
    let streams = s.open_streams(4, 2000);
    let runners = s.runner_pids();
    assert_eq!(runners.len(), 1);
    send_signal(runners[0], nix::sys::signal::Signal::SIGKILL);
    for reader in streams {
        let lines = remaining_lines(reader);
        assert!(
            lines.iter().all(|line| line["done"] != true),
            "a failed stream never says done: {lines:?}"
        );
        let last = lines.last().expect("a last line");
        let error = last["error"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error line, got {last}"));
        assert!(error.contains("unexpectedly stopped"), "{error}");
    }
    // Reaped: gone from the process table, not left a zombie.
    s.wait_for("the dead runner to be reaped", Duration::from_secs(5), || {
        is_reaped(runners[0])
    });
    let (status, body) = s.post(
        "/api/generate",
        &generate_body("Hello", json!({"stream": false, "options": {"num_predict": 4}})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.runner_pids().len(), 1, "a fresh runner serves the next request");
}

#[test]
fn absurd_context_and_predict_are_clamped() {
    let s = TestServer::with_model();
    let (status, body) = s.post(
        "/api/generate",
        &generate_body(
            "Hello",
            json!({"stream": false, "options": {"num_ctx": 10_000_000, "num_predict": 4}}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eval_count"], 4);
    let (_, ps) = s.get("/api/ps");
    assert_eq!(
        ps["models"][0]["context_length"], 32768,
        "clamped to the training context: {ps}"
    );
    let (status, body) = s.post(
        "/api/generate",
        &generate_body(
            "Hello",
            json!({"stream": false, "options": {"num_ctx": 64, "num_predict": 2_000_000_000}}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done_reason"], "length", "the context ends it: {body}");
}

/// A raw, greedy generate request.
fn raw_body(prompt: &str, num_predict: u32) -> Value {
    generate_body(
        prompt,
        json!({"raw": true, "options": {"num_predict": num_predict, "temperature": 0}}),
    )
}

#[test]
fn a_prefix_cached_in_a_busy_slot_is_copied_instead_of_evaluated_again() {
    let s = parallel_server();
    // A shared system prompt: shorter than Gemma's 512-token sliding window, so the busy
    // slot still holds everything a copy needs.
    let system = format!(
        "You are a careful assistant. {}",
        "Answer briefly and cite the page you read it on. ".repeat(25)
    );
    let question = format!("{system}\nQ: The password is 7431. Repeat the password.\nA: The password is");
    let mut cold = raw_body(&question, 6);
    cold["stream"] = json!(false);
    let (_, cold) = s.post("/api/generate", &cold);
    // Another conversation with the same system prompt keeps a slot busy...
    let mut busy = s.open_stream(
        "/api/generate",
        &raw_body(&format!("{system}\nQ: Tell me a story.\nA:"), 150),
    );
    let mut line = String::new();
    busy.read_line(&mut line).unwrap();
    // ...while the first question, asked again, goes to a free slot: its prefix is copied.
    let copies = || -> Vec<String> {
        s.log()
            .lines()
            .filter(|l| l.contains("copied a cached prompt prefix between slots"))
            .map(String::from)
            .collect()
    };
    let copies_before = copies().len();
    let mut warm = raw_body(&question, 6);
    warm["stream"] = json!(false);
    let (_, warm) = s.post("/api/generate", &warm);
    let copies_after = copies();
    assert_eq!(
        copies_after.len(),
        copies_before + 1,
        "the question did not copy a prefix:\n{}",
        s.log()
    );
    let copied = copies_after.last().unwrap();
    let tokens: u32 = copied
        .split("tokens=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{copied}"));
    assert!(tokens > 200, "the whole system prompt is copied: {copied}");
    assert_eq!(
        warm["response"], cold["response"],
        "the copied cache changed the answer"
    );
    assert_eq!(warm["prompt_eval_count"], cold["prompt_eval_count"]);
    assert_eq!(remaining_lines(busy).pop().unwrap()["done"], true);
}

#[test]
fn a_long_prompt_does_not_stall_streams_that_are_generating() {
    let s = parallel_server();
    let generating = s.open_stream("/api/generate", &raw_body("Once upon a time", 400));
    // Timestamps of the tokens the generating stream receives.
    let arrivals = std::thread::spawn(move || {
        generating
            .lines()
            .map_while(Result::ok)
            .map(|line| (Instant::now(), line.contains("\"done\":true")))
            .take_while(|&(_, done)| !done)
            .map(|(at, _)| at)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(500));
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(140);
    let sent = Instant::now();
    let mut long = s.open_stream("/api/generate", &raw_body(&long_prompt, 1));
    let mut line = String::new();
    long.read_line(&mut line).unwrap();
    let first_token = Instant::now();
    let arrivals = arrivals.join().unwrap();
    let during_prefill = arrivals.iter().filter(|&&at| at > sent && at < first_token).count();
    // About 1,400 prompt tokens: read in 512-token batches, the stream would get ~3 tokens
    // meanwhile; in the small steps used while others generate, it gets one per step.
    assert!(
        during_prefill >= 8,
        "the generating stream got {during_prefill} tokens while a long prompt was read"
    );
}

#[test]
fn the_same_seed_gives_the_same_answer_with_one_slot_and_with_four() {
    // Sampled, not greedy: the seed decides every draw.
    let body = generate_body(
        "Write a short poem about the sea.",
        json!({"stream": false, "options": {"temperature": 0.9, "seed": 1234, "num_predict": 32}}),
    );
    let answers = |slots: &str| -> Vec<String> {
        let s = TestServer::start_with(&[("HERD_NUM_PARALLEL", slots)]);
        s.import_model(MODEL);
        (0..3)
            .map(|_| {
                let (status, reply) = s.post("/api/generate", &body);
                assert_eq!(status, 200, "{reply}");
                assert_eq!(reply["eval_count"], 32, "{reply}");
                reply["response"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let one = answers("1");
    let four = answers("4");
    assert!(
        one.iter().chain(&four).all(|answer| *answer == one[0]),
        "one slot: {one:?}\nfour slots: {four:?}"
    );
}
