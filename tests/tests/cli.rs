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
    assert!(stderr.contains("not found"), "{stderr}");

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
