//! What an operator sees of a real server: `GET /metrics`, `GET /ready`, the
//! `Server-Timing` header and JSON logs.

use std::time::Duration;

use herd_tests::{binary, chat_body, TestServer, MODEL};
use serde_json::{json, Value};

/// The value of one series in the metrics text (0 when it is not there yet).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn scrape(server: &TestServer) -> String {
    let response = server.http().get(server.url("/metrics")).send().expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().unwrap()
}

/// The `Server-Timing` metrics of a response, by name, in milliseconds.
fn server_timing(response: &reqwest::blocking::Response) -> Vec<(String, f64)> {
    response
        .headers()
        .get_all("server-timing")
        .iter()
        .flat_map(|value| value.to_str().unwrap().split(',').map(str::trim).map(str::to_string))
        .map(|entry| {
            let (name, duration) = entry
                .split_once(";dur=")
                .unwrap_or_else(|| panic!("bad entry {entry:?}"));
            (name.to_string(), duration.parse().unwrap())
        })
        .collect()
}

fn names(timing: &[(String, f64)]) -> Vec<&str> {
    timing.iter().map(|(name, _)| name.as_str()).collect()
}

#[test]
fn metrics_count_requests_tokens_and_loaded_models() {
    let server = TestServer::with_model();
    let before = scrape(&server);
    assert_eq!(series(&before, "herd_loaded_models"), 0.0, "{before}");
    let chat = r#"herd_http_requests_total{endpoint="/api/chat",method="POST",status="200"}"#;
    assert_eq!(series(&before, chat), 0.0);

    let (status, answer) = server.post("/api/chat", &chat_body("Say hello.", json!({"stream": false})));
    assert_eq!(status, 200, "{answer}");
    let generated = answer["eval_count"].as_f64().unwrap();
    assert!(generated >= 1.0, "{answer}");
    let (status, _) = server.get("/api/no-such-route");
    assert_eq!(status, 404);

    let after = scrape(&server);
    assert_eq!(series(&after, chat), 1.0, "{after}");
    let unknown = r#"herd_http_requests_total{endpoint="other",method="GET",status="404"}"#;
    assert_eq!(series(&after, unknown), 1.0, "{after}");
    assert_eq!(series(&after, "herd_generated_tokens_total"), generated, "{after}");
    assert_eq!(
        series(&after, "herd_prompt_tokens_total"),
        answer["prompt_eval_count"].as_f64().unwrap()
    );
    assert_eq!(series(&after, "herd_time_to_first_token_seconds_count"), 1.0, "{after}");
    assert_eq!(series(&after, "herd_loaded_models"), 1.0, "{after}");
    assert_eq!(series(&after, "herd_requests_in_flight"), 0.0);
    assert_eq!(series(&after, "herd_queue_depth"), 0.0);
    assert_eq!(series(&after, "herd_runner_failures_total"), 0.0);
    assert!(after.trim_end().ends_with("# EOF"));
}

#[test]
fn every_answer_carries_server_timing() {
    let server = TestServer::with_model();
    let tags = server.http().get(server.url("/api/tags")).send().unwrap();
    assert_eq!(names(&server_timing(&tags)), ["total"]);
    let missing = server.http().get(server.url("/api/nothing")).send().unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(names(&server_timing(&missing)), ["total"]);

    let whole = server
        .http()
        .post(server.url("/api/chat"))
        .json(&chat_body("Say hello.", json!({"stream": false})))
        .send()
        .unwrap();
    let timing = server_timing(&whole);
    assert_eq!(names(&timing), ["load", "queue", "prompt_eval", "decode", "total"]);
    let answer: Value = whole.json().unwrap();
    let millis = |field: &str| answer[field].as_f64().unwrap() / 1e6;
    let of = |name: &str| timing.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(
        (of("prompt_eval") - millis("prompt_eval_duration")).abs() < 0.01,
        "{timing:?} {answer}"
    );
    assert!(
        (of("decode") - millis("eval_duration")).abs() < 0.01,
        "{timing:?} {answer}"
    );
    assert!(
        of("total") >= of("load") + of("prompt_eval") + of("decode"),
        "{timing:?}"
    );

    // A stream's headers leave before the prompt is read: they tell the load only.
    let streamed = server
        .http()
        .post(server.url("/v1/chat/completions"))
        .json(
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": true, "max_tokens": 4}),
        )
        .send()
        .unwrap();
    assert_eq!(streamed.status().as_u16(), 200);
    assert_eq!(names(&server_timing(&streamed)), ["load", "total"]);
    assert!(streamed.text().unwrap().contains("[DONE]"));
}

#[test]
fn ready_answers_without_a_key_and_metrics_need_a_read_key() {
    let server = TestServer::start_with(&[("HERD_API_KEY", "reader-key-123=read,infer-key-456=infer")]);
    let (status, body) = server.get("/ready");
    assert_eq!((status, &body), (200, &json!({"status": "ready"})));
    let metrics = |key: Option<&str>| {
        let mut request = server.http().get(server.url("/metrics"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().unwrap().status().as_u16()
    };
    assert_eq!(metrics(None), 401);
    assert_eq!(metrics(Some("wrong-key-789")), 401);
    assert_eq!(metrics(Some("reader-key-123")), 200);
    // Each scope includes the ones below it.
    assert_eq!(metrics(Some("infer-key-456")), 200);
}

#[test]
fn not_ready_without_a_runner() {
    let server = TestServer::start_with(&[("HERD_RUNNER", "/nonexistent/herd-runner")]);
    let (status, body) = server.get("/ready");
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("/nonexistent/herd-runner") && error.contains("HERD_RUNNER"),
        "{error}"
    );
    // Every 503 (not ready, or the queue full) tells clients when to try again.
    let response = server.http().get(server.url("/ready")).send().unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    // The liveness heartbeat still answers.
    let root = server.http().get(server.url("/")).send().unwrap();
    assert_eq!(root.status().as_u16(), 200);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let server = TestServer::start_with(&[("HERD_LOG_FORMAT", "json")]);
    server.import_model(MODEL);
    let (status, answer) = server.post(
        "/api/generate",
        &json!({"model": MODEL, "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{answer}");
    server.wait_for("the runner's lines in the log", Duration::from_secs(10), || {
        server.log().contains("runner ready")
    });
    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
        .collect();
    assert!(lines.len() > 5, "{log}");
    for line in &lines {
        assert!(line["level"].is_string() && line["timestamp"].is_string(), "{line}");
    }
    assert!(lines
        .iter()
        .any(|l| l["message"].as_str().is_some_and(|m| m.starts_with("listening on "))));
}

#[test]
fn an_unknown_log_format_stops_the_server_with_the_reason() {
    let models = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(binary("herd"))
        .arg("serve")
        .env("HERD_HOST", "127.0.0.1:0")
        .env("HERD_MODELS", models.path())
        .env("HERD_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HERD_LOG_FORMAT") && stderr.contains("text or json"),
        "{stderr}"
    );
}

#[test]
fn the_systemd_units_verify_with_the_built_binary() {
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/systemd");
    let dir = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    for (unit, user) in [("herd.service", false), ("herd-user.service", true)] {
        let text = std::fs::read_to_string(scripts.join(unit)).unwrap();
        let exec = text.lines().find(|l| l.starts_with("ExecStart=")).expect("ExecStart");
        assert!(exec.ends_with("/herd serve"), "{exec}");
        // herd stops its own runners on SIGTERM; systemd kills what is left only at the timeout.
        assert!(text.lines().any(|l| l == "KillMode=mixed"), "{unit}");
        let tested = text.replace(exec, &format!("ExecStart={} serve", binary("herd").display()));
        let path = dir.path().join(unit);
        std::fs::write(&path, tested).unwrap();
        let mut verify = std::process::Command::new("systemd-analyze");
        if user {
            verify.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
        }
        let out = verify
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian's systemd)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "{unit}: {stderr}");
    }
}

#[test]
fn a_second_server_on_a_taken_port_exits_at_once_naming_the_address() {
    let first = TestServer::start();
    let address = first
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let models = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(binary("herd"))
        .arg("serve")
        .env("HERD_HOST", &address)
        .env("HERD_MODELS", models.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on {address}")), "{stderr}");
    assert!(
        stderr.contains("HERD_HOST") && stderr.contains("another herd or ollama"),
        "{stderr}"
    );
    let (status, _) = first.get("/api/tags");
    assert_eq!(status, 200, "the first server is unaffected");
}
