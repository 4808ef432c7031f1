//! Several clients on one model: `HERD_NUM_PARALLEL` slots decoded in one loop, faults during
//! parallel streams, and absurd load options clamped instead of exhausting memory.

use std::io::BufRead;
use std::time::{Duration, Instant};

use herd_tests::{generate_body, is_zombie, process_name, TestServer, MODEL};
use serde_json::{json, Value};

fn parallel_server() -> TestServer {
    let s = TestServer::start_with(&[("HERD_NUM_PARALLEL", "4")]);
    s.import_model(MODEL);
    let (status, _) = s.post("/api/generate", &json!({"model": MODEL, "prompt": ""}));
    assert_eq!(status, 200);
    s
}

/// Opens `n` streams and reads the first line of each.
fn open_streams(s: &TestServer, n: usize, num_predict: u32) -> Vec<std::io::BufReader<reqwest::blocking::Response>> {
    (0..n)
        .map(|i| {
            let body = generate_body(
                &format!("Story {i}: once upon a time"),
                json!({"options": {"num_predict": num_predict}}),
            );
            let mut reader = s.open_stream("/api/generate", &body);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let first: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(first["done"], false, "{first}");
            reader
        })
        .collect()
}

fn rest_of(reader: std::io::BufReader<reqwest::blocking::Response>) -> Vec<Value> {
    reader
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

#[test]
fn four_clients_decode_together() {
    let s = parallel_server();
    let started = Instant::now();
    // Each stream has produced a token before any has finished: none waits for another.
    let streams = open_streams(&s, 4, 200);
    let all_started = started.elapsed();
    assert_eq!(s.runner_pids().len(), 1, "one runner serves all four");
    let finals: Vec<Value> = streams.into_iter().map(|r| rest_of(r).pop().unwrap()).collect();
    let total = started.elapsed();
    for last in &finals {
        assert_eq!(last["done"], true, "{last}");
        assert_eq!(last["eval_count"], 200, "{last}");
    }
    assert!(
        all_started * 4 < total,
        "the four streams did not overlap: all started after {all_started:?}, done after {total:?}"
    );
}

#[test]
fn a_runner_killed_during_four_streams_fails_each_of_them() {
    let s = parallel_server();
    let streams = open_streams(&s, 4, 2000);
    let runners = s.runner_pids();
    assert_eq!(runners.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runners[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for reader in streams {
        let last = rest_of(reader).pop().expect("a last line");
        let error = last["error"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error line, got {last}"));
        assert!(error.contains("unexpectedly stopped"), "{error}");
    }
    s.wait_for("the dead runner to be reaped", Duration::from_secs(5), || {
        !is_zombie(runners[0]) && process_name(runners[0]).is_none()
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
