//! The real `herd` binary against a real server: tables, JSON output, show's parts, run's
//! statistics, versions, and errors a person can act on.

use herd_tests::{binary, TestServer, MODEL};
use serde_json::{json, Value};

fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "no terminal codes when stdout is a pipe: {stdout:?}"
    );
    stdout
}

/// Where `column` starts in the header and where the first row's cell below it starts.
fn column_starts(table: &str, column: &str) -> (usize, usize) {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let at = header.find(column).unwrap_or_else(|| panic!("no {column} in {header}"));
    let row = lines.next().unwrap_or_else(|| panic!("no rows:\n{table}"));
    let before: String = row.chars().take(at).collect();
    assert!(before.ends_with("    "), "cells are padded to the column: {table}");
    (at, before.chars().count())
}

#[test]
fn list_and_ps_print_aligned_tables_or_json() {
    let s = TestServer::with_model();
    let list = ok(&s.cli(&["list"]));
    assert!(list.starts_with("NAME"), "{list}");
    let row = list.lines().nth(1).unwrap();
    assert!(
        row.starts_with(MODEL) && row.contains(" MB") && row.ends_with(" ago"),
        "{list}"
    );
    let (header_at, cell_at) = column_starts(&list, "ID");
    assert_eq!(header_at, cell_at);
    let json: Value = serde_json::from_str(&ok(&s.cli(&["list", "--json"]))).unwrap();
    assert_eq!(json["models"][0]["name"], MODEL);

    assert_eq!(ok(&s.cli(&["ps"])).lines().count(), 1, "nothing loaded yet");
    s.post(
        "/api/generate",
        &json!({"model": MODEL, "prompt": "", "keep_alive": "10m"}),
    );
    let ps = ok(&s.cli(&["ps"]));
    for column in ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"] {
        assert!(ps.lines().next().unwrap().contains(column), "{ps}");
    }
    let row = ps.lines().nth(1).unwrap();
    assert!(row.contains("100% CPU"), "{ps}");
    assert!(row.ends_with("minutes from now"), "{ps}");
    let json: Value = serde_json::from_str(&ok(&s.cli(&["ps", "--json"]))).unwrap();
    assert_eq!(json["models"][0]["size_vram"], 0);
}

#[test]
fn show_prints_a_summary_or_one_part() {
    let s = TestServer::with_model();
    let summary = ok(&s.cli(&["show", MODEL]));
    for expected in [
        "  Model",
        "architecture",
        "gemma3",
        "quantization",
        "Q4_K_M",
        "  Capabilities",
        "completion",
    ] {
        assert!(summary.contains(expected), "{expected} missing:\n{summary}");
    }
    assert!(ok(&s.cli(&["show", MODEL, "--parameters"])).contains("stop"));
    assert!(ok(&s.cli(&["show", MODEL, "--template"])).contains("<start_of_turn>"));
    assert!(ok(&s.cli(&["show", MODEL, "--modelfile"])).contains("FROM "));
    let json: Value = serde_json::from_str(&ok(&s.cli(&["show", MODEL, "--json"]))).unwrap();
    assert_eq!(json["details"]["family"], "gemma3");
    let both = s.cli(&["show", MODEL, "--template", "--system"]);
    assert!(!both.status.success(), "one part at a time");
}

#[test]
fn run_verbose_prints_the_answer_then_statistics() {
    let s = TestServer::start();
    s.import_model_with(MODEL, "PARAMETER num_predict 12\n");
    let out = s.cli(&["run", MODEL, "--verbose", "Why is the sky blue?"]);
    let answer = ok(&out);
    assert!(!answer.trim().is_empty(), "no answer");
    let stats = String::from_utf8_lossy(&out.stderr);
    for line in [
        "total duration:",
        "load duration:",
        "prompt eval count:",
        "prompt eval rate:",
        "eval count:           12 token(s)",
        "eval rate:",
    ] {
        assert!(stats.contains(line), "{line} missing:\n{stats}");
    }
    let quiet = s.cli(&["run", MODEL, "Why is the sky blue?"]);
    ok(&quiet);
    assert!(quiet.stderr.is_empty(), "no statistics without --verbose");
}

#[test]
fn versions_and_errors_a_person_can_act_on() {
    let s = TestServer::with_model();
    let version = ok(&s.cli(&["--version"]));
    assert_eq!(version.trim(), format!("herd version is {}", env!("CARGO_PKG_VERSION")));

    let missing = s.cli(&["show", "no-such-model"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("model 'no-such-model' not found; get it with `herd pull no-such-model`"),
        "{stderr}"
    );

    // No server: a closed port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = |args: &[&str]| {
        std::process::Command::new(binary("herd"))
            .args(args)
            .env("HERD_HOST", format!("127.0.0.1:{port}"))
            .output()
            .unwrap()
    };
    let out = run(&["list"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "could not connect to herd at 127.0.0.1:{port} - is `herd serve` running?"
        )),
        "{stderr}"
    );
    let out = run(&["--version"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not connect to a running herd instance"),
        "{stderr}"
    );
    assert!(stderr.contains("client version is"), "{stderr}");
}

#[test]
fn a_second_server_on_the_same_models_directory_refuses_to_start() {
    let s = TestServer::start();
    let started = std::time::Instant::now();
    let second = std::process::Command::new(binary("herd"))
        .arg("serve")
        .env("HERD_HOST", "127.0.0.1:0")
        .env("HERD_MODELS", s.models_dir.path())
        .env("HERD_RUNNER", binary("herd-runner"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another herd server is using the models directory")
            && stderr.contains(&s.models_dir.path().display().to_string()),
        "{stderr}"
    );
    // The first one is unharmed.
    assert_eq!(s.get("/api/tags").0, 200);
}

#[test]
fn run_pulls_a_missing_model_and_takes_format_and_think() {
    use herd_tests::registry::TestRegistry;
    let registry = TestRegistry::start();
    let authority = registry.authority();
    let publisher = TestServer::start_with(&[("HERD_REGISTRIES", &authority)]);
    let published = format!("{authority}/herd/gemma3:270m");
    // Short answers: `run` has no length flag (as in Ollama), the model's parameters do it.
    publisher.import_model_with(&published, "PARAMETER num_predict 24");
    let (status, body) = publisher.post(
        "/api/push",
        &json!({ "model": published, "insecure": true, "stream": false }),
    );
    assert_eq!(status, 200, "{body}");

    // Not here yet: `run` pulls it (progress on stderr), then answers.
    let s = TestServer::start_with(&[("HERD_REGISTRIES", &authority)]);
    let out = s.cli(&["run", "--insecure", &published, "Say hi."]);
    let answer = ok(&out);
    assert!(!answer.trim().is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pulling manifest") && stderr.contains("success"),
        "{stderr}"
    );
    assert!(ok(&s.cli(&["list"])).contains(&published));

    // A schema small enough to close within the Modelfile's 48 tokens.
    let schema = r#"{"type":"object","properties":{"name":{"type":"string","maxLength":12}},"required":["name"],"additionalProperties":false}"#;
    let json_answer = ok(&s.cli(&["run", &published, "--format", schema, "Name a cat, in JSON."]));
    let parsed: Value = serde_json::from_str(json_answer.trim()).unwrap_or_else(|e| panic!("{e}: {json_answer}"));
    assert!(parsed["name"].is_string(), "{json_answer}");

    // A model whose template reasons: shown between Ollama's markers, or hidden, or off.
    s.create_with_template("thinker:1", &published, "gemma3-think.gotmpl");
    let thought = ok(&s.cli(&["run", "thinker:1", "--think", "What is 2+2?"]));
    assert!(thought.starts_with("Thinking...\n"), "{thought:?}");
    let hidden = ok(&s.cli(&["run", "thinker:1", "--hidethinking", "What is 2+2?"]));
    assert!(!hidden.contains("Thinking..."), "{hidden:?}");
    let off = ok(&s.cli(&["run", "thinker:1", "--think=false", "What is 2+2?"]));
    assert!(!off.contains("Thinking..."), "{off:?}");
    let refused = s.cli(&["run", &published, "--think", "hi"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not support thinking"));
}

#[test]
fn bench_reports_rates_and_first_token_times_as_a_table_or_json() {
    let s = TestServer::with_model();
    let out = ok(&s.cli(&["bench", MODEL, "--runs", "1", "--num-predict", "8", "--json"]));
    let record: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(record["model"], MODEL);
    let results = record["results"].as_array().unwrap();
    let cases: Vec<(&str, u64)> = results
        .iter()
        .map(|r| (r["case"].as_str().unwrap(), r["clients"].as_u64().unwrap()))
        .collect();
    assert_eq!(cases, [("short prompt", 1), ("long prompt", 1), ("short prompt", 4)]);
    for r in results {
        for key in [
            "prefill_tokens_per_second",
            "decode_tokens_per_second",
            "time_to_first_token_seconds",
        ] {
            assert!(r[key].as_f64().unwrap() > 0.0, "{key} in {r}");
        }
    }
    let long = results[1]["prompt_tokens"].as_u64().unwrap();
    assert!((800..1400).contains(&long), "the long prompt has {long} tokens");
    let table = ok(&s.cli(&["bench", MODEL, "--runs", "1", "--num-predict", "4"]));
    assert!(
        table.contains("PREFILL TOK/S") && table.contains("long prompt"),
        "{table}"
    );
}

#[test]
fn cp_rm_and_stop_manage_models_and_runners() {
    let s = TestServer::with_model();
    assert_eq!(
        ok(&s.cli(&["cp", MODEL, "a:1"])).trim(),
        format!("copied '{MODEL}' to 'a:1'")
    );
    ok(&s.cli(&["cp", MODEL, "b:1"]));
    let list = ok(&s.cli(&["list"]));
    assert!(list.contains("a:1") && list.contains("b:1"), "{list}");
    assert_eq!(ok(&s.cli(&["rm", "a:1", "b:1"])), "deleted 'a:1'\ndeleted 'b:1'\n");
    let list = ok(&s.cli(&["list"]));
    assert!(!list.contains("a:1") && list.contains(MODEL), "{list}");
    let missing = s.cli(&["rm", "a:1"]);
    assert!(!missing.status.success());

    // A model loaded for a while, then stopped.
    let (status, _) = s.post(
        "/api/generate",
        &json!({"model": MODEL, "prompt": "", "keep_alive": "10m"}),
    );
    assert_eq!(status, 200);
    assert!(ok(&s.cli(&["ps"])).contains(MODEL));
    let runners = s.runner_pids();
    assert_eq!(runners.len(), 1);
    ok(&s.cli(&["stop", MODEL]));
    let ps = ok(&s.cli(&["ps"]));
    assert_eq!(ps.lines().count(), 1, "only the header is left: {ps}");
    s.wait_for(
        "the stopped runner to exit and be reaped",
        std::time::Duration::from_secs(5),
        || herd_tests::is_reaped(runners[0]),
    );
}
