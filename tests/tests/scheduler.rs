//! Scheduling policy with the real model: per-model slots and keep-alive from the Modelfile,
//! reloads when load options change, and what `/api/ps` reports.

use std::io::BufRead;
use std::time::Instant;

use herd_tests::{generate_body, is_reaped, remaining_lines, seconds_until, TestServer, MODEL};
use serde_json::{json, Value};

fn loaded(s: &TestServer) -> Value {
    let (status, ps) = s.get("/api/ps");
    assert_eq!(status, 200);
    assert_eq!(ps["models"].as_array().unwrap().len(), 1, "{ps}");
    ps["models"][0].clone()
}

#[test]
fn a_models_parameters_set_its_slots_and_keep_alive() {
    // The server default is one slot and 5m; the model asks for two slots and an hour.
    let s = TestServer::start();
    s.import_model_with(MODEL, "PARAMETER num_parallel 2\nPARAMETER keep_alive 1h\n");
    let (_, show) = s.post("/api/show", &json!({"model": MODEL}));
    let parameters = show["parameters"].as_str().unwrap();
    assert!(
        parameters.contains("num_parallel") && parameters.contains("keep_alive"),
        "{parameters}"
    );

    let body = |n: u32| generate_body("Tell me a story.", json!({"options": {"num_predict": n}}));
    let mut first = s.open_stream("/api/generate", &body(150));
    let mut line = String::new();
    first.read_line(&mut line).unwrap();
    // Read the first stream to its end on another thread, noting when it ended.
    let first = std::thread::spawn(move || (remaining_lines(first).pop().unwrap(), Instant::now()));
    let mut second = s.open_stream("/api/generate", &body(4));
    second.read_line(&mut line).unwrap();
    let second_started = Instant::now();
    let (first_last, first_done) = first.join().unwrap();
    assert_eq!(first_last["eval_count"], 150, "{first_last}");
    assert!(
        second_started < first_done,
        "with two slots the second stream must not wait for the first"
    );
    assert_eq!(remaining_lines(second).pop().unwrap()["done"], true);
    assert_eq!(s.runner_pids().len(), 1);

    let expires = seconds_until(loaded(&s)["expires_at"].as_str().unwrap());
    assert!(
        (3500..=3600).contains(&expires),
        "the model's keep_alive is 1h: {expires}s"
    );
    // A request's keep_alive still wins over the model's.
    s.post(
        "/api/generate",
        &json!({"model": MODEL, "prompt": "", "keep_alive": "30s"}),
    );
    let expires = seconds_until(loaded(&s)["expires_at"].as_str().unwrap());
    assert!((20..=30).contains(&expires), "the request said 30s: {expires}s");

    let (status, body) = s.post(
        "/api/create",
        &json!({"model": "bad-policy", "from": MODEL, "stream": false, "parameters": {"keep_alive": "soon"}}),
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn changed_load_options_reload_the_model_and_ps_reports_it() {
    let s = TestServer::with_model();
    let load = |num_ctx: u32| {
        let (status, body) = s.post(
            "/api/generate",
            &json!({"model": MODEL, "prompt": "", "options": {"num_ctx": num_ctx}}),
        );
        assert_eq!(status, 200, "{body}");
        let runners = s.runner_pids();
        assert_eq!(runners.len(), 1, "one runner per model");
        runners[0]
    };
    let first = load(2048);
    let model = loaded(&s);
    assert_eq!(model["context_length"], 2048, "{model}");
    assert_eq!(model["size_vram"], 0, "no GPU here: {model}");
    let log = s.log();
    assert!(
        log.contains("no NVIDIA GPU ("),
        "the server says why it runs on the CPU:\n{log}"
    );
    assert!(log.contains("cpu_cores="), "and what it found:\n{log}");
    let file_size = std::fs::metadata(herd_tests::model_path()).unwrap().len();
    assert!(
        model["size"].as_u64().unwrap() > file_size,
        "size counts the weights and the KV cache: {model}"
    );
    assert_eq!(load(2048), first, "the same options reuse the runner");
    let second = load(1024);
    assert_ne!(second, first, "a new context length loads a new runner");
    assert_eq!(loaded(&s)["context_length"], 1024);
    s.wait_for("the replaced runner to exit", std::time::Duration::from_secs(5), || {
        is_reaped(first)
    });
}
