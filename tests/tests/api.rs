//! The Ollama API on the real model: generate, chat, metrics, and model management.

use std::sync::OnceLock;

use herd_tests::{chat_body, generate_body, TestServer, MODEL};
use serde_json::{json, Value};

/// One server with the real model imported, shared by the tests of this file.
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(TestServer::with_model)
}

fn text_of(lines: &[Value], field: &str) -> String {
    lines
        .iter()
        .map(|l| match field {
            "message" => l["message"]["content"].as_str().unwrap_or_default().to_string(),
            _ => l[field].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

fn assert_final_metrics(last: &Value) {
    assert_eq!(last["done"], true, "{last}");
    for field in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(
            last[field].as_u64().is_some_and(|n| n > 0),
            "{field} missing or zero in {last}"
        );
    }
    let total = last["total_duration"].as_u64().unwrap();
    assert!(
        total >= last["eval_duration"].as_u64().unwrap(),
        "durations are not nanoseconds: {last}"
    );
    assert!(total < 600_000_000_000, "total_duration is not in nanoseconds: {last}");
}

#[test]
fn root_and_version_answer() {
    let s = server();
    let response = s.http.get(s.url("/")).send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), "herd is running");
    assert_eq!(s.http.head(s.url("/")).send().unwrap().status(), 200);
    let (status, version) = s.get("/api/version");
    assert_eq!(status, 200);
    assert!(version["version"].as_str().is_some_and(|v| !v.is_empty()));
}

#[test]
fn generate_streams_pieces_then_final_metrics() {
    let s = server();
    let (status, lines) = s.post_stream("/api/generate", &generate_body("The capital of France is", json!({})));
    assert_eq!(status, 200);
    assert!(lines.len() > 2, "expected several chunks: {lines:?}");
    for line in &lines[..lines.len() - 1] {
        assert_eq!(line["done"], false);
        assert_eq!(line["model"], MODEL);
        assert!(line["created_at"].as_str().unwrap().ends_with('Z'));
    }
    let last = lines.last().unwrap();
    assert_final_metrics(last);
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], 24);
    let context = last["context"].as_array().expect("context in the final chunk");
    assert!(context.len() > 24);
    assert!(!text_of(&lines, "response").is_empty());
}

#[test]
fn generate_without_streaming_is_one_object() {
    let s = server();
    let (status, body) = s.post(
        "/api/generate",
        &generate_body("Once upon a time", json!({"stream": false})),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["response"].as_str().is_some_and(|r| !r.is_empty()));
    assert_final_metrics(&body);
}

#[test]
fn chat_streamed_and_not_agree_on_the_answer() {
    let s = server();
    let body = chat_body("Why is the sky blue?", json!({}));
    let (status, lines) = s.post_stream("/api/chat", &body);
    assert_eq!(status, 200);
    for line in &lines {
        assert_eq!(line["message"]["role"], "assistant");
    }
    let streamed = text_of(&lines, "message");
    assert_final_metrics(lines.last().unwrap());

    let (status, single) = s.post(
        "/api/chat",
        &chat_body("Why is the sky blue?", json!({"stream": false})),
    );
    assert_eq!(status, 200);
    assert_eq!(single["message"]["content"].as_str().unwrap(), streamed);
    assert_final_metrics(&single);
}

#[test]
fn a_cached_prefix_longer_than_the_sliding_window_gives_the_same_answer() {
    // Gemma 3 attends over a 512-token window in most layers, and the runner keeps only that
    // window in those layers' cache: reusing a long cached prefix must not change the answer.
    let s = server();
    let prompt = format!(
        "Notes. {}",
        "A river runs from the mountains down to the sea. ".repeat(110)
    );
    let body = |prompt: &str| {
        generate_body(
            prompt,
            json!({"raw": true, "stream": false, "options": {"num_predict": 16}}),
        )
    };
    let (_, cold) = s.post("/api/generate", &body(&prompt));
    assert!(cold["prompt_eval_count"].as_u64().unwrap() > 1000, "{cold}");
    let (_, again) = s.post("/api/generate", &body(&prompt));
    assert_eq!(cold["response"], again["response"]);
    // A prompt that shares only the start of the cached one: the window before the shared
    // part has left the sliding-window cache, so it must be evaluated again, not reused.
    let sentence = "A river runs from the mountains down to the sea. ";
    let next = format!(
        "Notes. {}{}",
        sentence.repeat(25),
        "Then a cat sat by the fire and slept. ".repeat(20)
    );
    let (_, warm) = s.post("/api/generate", &body(&next));
    s.post("/api/generate", &body("Something else entirely, to evict the prefix."));
    let (_, fresh) = s.post("/api/generate", &body(&next));
    assert_eq!(
        warm["response"], fresh["response"],
        "a reused prefix changed the answer"
    );
}

#[test]
fn temperature_and_seed_make_output_reproducible() {
    let s = server();
    let body = generate_body(
        "Write a short poem about rivers.",
        json!({"stream": false, "options": {"temperature": 0.9, "seed": 1234, "num_predict": 32}}),
    );
    let (_, first) = s.post("/api/generate", &body);
    let (_, second) = s.post("/api/generate", &body);
    assert_eq!(first["response"], second["response"]);
    let mut other_seed = body.clone();
    other_seed["options"]["seed"] = json!(99);
    other_seed["options"]["temperature"] = json!(1.5);
    let (_, third) = s.post("/api/generate", &other_seed);
    assert_ne!(
        first["response"], third["response"],
        "a different seed should change a sampled answer"
    );
}

#[test]
fn num_predict_bounds_the_answer() {
    let s = server();
    let (_, body) = s.post(
        "/api/generate",
        &generate_body(
            "Count: one, two,",
            json!({"stream": false, "options": {"num_predict": 5}}),
        ),
    );
    assert_eq!(body["eval_count"], 5, "{body}");
    assert_eq!(body["done_reason"], "length");
}

#[test]
fn stop_strings_end_the_answer_and_are_not_emitted() {
    let s = server();
    let base = generate_body(
        "List the days of the week:",
        json!({"stream": false, "options": {"num_predict": 40}}),
    );
    let (_, full) = s.post("/api/generate", &base);
    let full = full["response"].as_str().unwrap().to_string();
    // A stop string from the middle of the known answer, spanning whatever tokens it spans.
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() > 4, "answer too short to test stops: {full:?}");
    let stop = words[words.len() / 2];
    let cut = full.find(stop).unwrap();
    let mut with_stop = base.clone();
    with_stop["options"]["stop"] = json!([stop]);
    let (_, stopped) = s.post("/api/generate", &with_stop);
    assert_eq!(stopped["response"].as_str().unwrap(), &full[..cut]);
    assert_eq!(stopped["done_reason"], "stop");

    let (_, lines) = s.post_stream("/api/generate", &{
        let mut b = with_stop.clone();
        b["stream"] = json!(true);
        b
    });
    assert_eq!(
        text_of(&lines, "response"),
        &full[..cut],
        "streamed pieces leaked part of the stop string"
    );
}

#[test]
fn context_round_trips_a_conversation() {
    let s = server();
    let (_, first) = s.post(
        "/api/generate",
        &generate_body("My name is Ada.", json!({"stream": false})),
    );
    let context = first["context"].clone();
    assert!(context.as_array().is_some_and(|c| !c.is_empty()));
    let (status, second) = s.post(
        "/api/generate",
        &generate_body("What is my name?", json!({"stream": false, "context": context})),
    );
    assert_eq!(status, 200, "{second}");
    let first_len = first["context"].as_array().unwrap().len() as u64;
    assert!(
        second["prompt_eval_count"].as_u64().unwrap() > first_len,
        "the context was not prepended: {second}"
    );
}

#[test]
fn chat_renders_the_gemma_template() {
    let s = server();
    let body = json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"}
        ],
        "_debug_render_only": true,
    });
    let (status, out) = s.post("/api/chat", &body);
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["_debug_info"]["rendered_template"],
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn raw_generate_skips_the_template() {
    let s = server();
    let (_, out) = s.post(
        "/api/generate",
        &json!({"model": MODEL, "prompt": "plain text", "raw": true, "_debug_render_only": true}),
    );
    assert_eq!(out["_debug_info"]["rendered_template"], "plain text");
    let (_, out) = s.post(
        "/api/generate",
        &json!({"model": MODEL, "prompt": "Hi", "system": "Sys", "_debug_render_only": true}),
    );
    assert_eq!(
        out["_debug_info"]["rendered_template"],
        "<start_of_turn>user\nSys\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn tags_show_copy_delete() {
    let s = server();
    let (status, tags) = s.get("/api/tags");
    assert_eq!(status, 200);
    let entry = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == MODEL)
        .expect("model listed")
        .clone();
    let digest = entry["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(entry["size"].as_u64().unwrap() > 200_000_000);
    assert_eq!(entry["details"]["family"], "gemma3");
    assert_eq!(entry["details"]["format"], "gguf");
    assert_eq!(entry["details"]["parameter_size"], "268.10M");
    assert_eq!(entry["details"]["quantization_level"], "Q4_K_M");

    let (status, show) = s.post("/api/show", &json!({"model": MODEL}));
    assert_eq!(status, 200, "{show}");
    assert!(show["model_info"].is_object());
    assert_eq!(show["model_info"]["general.architecture"], "gemma3");
    assert!(show["model_info"]["gemma3.context_length"].as_u64().is_some());
    assert!(show["template"].as_str().unwrap().contains("<start_of_turn>"));
    assert_eq!(show["model_info"]["general.parameter_count"], 268_098_176);
    // Ollama's `%-30s %#v` lines: strings quoted, whole floats without `.0`.
    let parameters: Vec<&str> = show["parameters"].as_str().unwrap().lines().collect();
    for line in [
        "stop                           \"<end_of_turn>\"",
        "temperature                    1",
        "top_k                          64",
        "top_p                          0.95",
    ] {
        assert!(parameters.contains(&line), "{line:?} not in {parameters:?}");
    }
    assert!(show["modelfile"].as_str().unwrap().contains("FROM "));
    assert_eq!(show["capabilities"], json!(["completion"]));

    let response = s
        .http
        .post(s.url("/api/copy"))
        .json(&json!({"source": MODEL, "destination": "copied:v1"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), "");
    let names = s.model_names();
    assert!(names.iter().any(|n| n == "copied:v1"), "{names:?}");

    let response = s
        .http
        .delete(s.url("/api/delete"))
        .json(&json!({"model": "copied:v1"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), "");
    let (status, _) = s.post("/api/show", &json!({"model": "copied:v1"}));
    assert_eq!(status, 404);
    // The blobs are still there for the original.
    let (status, _) = s.post("/api/show", &json!({"model": MODEL}));
    assert_eq!(status, 200);
    let response = s
        .http
        .delete(s.url("/api/delete"))
        .json(&json!({"model": "copied:v1"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<serde_json::Value>().unwrap()["error"],
        "model 'copied:v1' not found"
    );
    let (status, body) = s.post("/api/copy", &json!({"source": "missing", "destination": "other"}));
    assert_eq!(status, 404);
    assert_eq!(body["error"], "model \"missing\" not found");
}

#[test]
fn deleting_a_loaded_model_stops_its_runner_unless_another_model_shares_it() {
    // Its own server: this test deletes the model.
    let s = TestServer::with_model();
    let (status, _) = s.post("/api/copy", &json!({"source": MODEL, "destination": "twin:1"}));
    assert_eq!(status, 200);
    let (status, _) = s.post("/api/generate", &json!({"model": "twin:1", "prompt": ""}));
    assert_eq!(status, 200);
    let runners = s.runner_pids();
    assert_eq!(runners.len(), 1);
    // The weights are still MODEL's: the runner stays.
    let delete = |name: &str| {
        s.http
            .delete(s.url("/api/delete"))
            .json(&json!({ "model": name }))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(delete("twin:1"), 200);
    let (_, ps) = s.get("/api/ps");
    assert_eq!(ps["models"].as_array().unwrap().len(), 1, "{ps}");
    // The last model with those weights goes: so does its runner.
    assert_eq!(delete(MODEL), 200);
    s.wait_for("the runner to exit", std::time::Duration::from_secs(10), || {
        herd_tests::is_reaped(runners[0])
    });
    let (_, ps) = s.get("/api/ps");
    assert_eq!(ps["models"], json!([]), "{ps}");
}

#[test]
fn empty_prompt_loads_and_keep_alive_zero_unloads() {
    let s = server();
    let (status, body) = s.post("/api/generate", &json!({"model": MODEL, "prompt": ""}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done"], true);
    assert_eq!(body["done_reason"], "load");
    let (_, ps) = s.get("/api/ps");
    let entry = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == MODEL)
        .expect("loaded")
        .clone();
    // HERD_KEEP_ALIVE's default: five minutes.
    let expires = herd_tests::seconds_until(entry["expires_at"].as_str().unwrap());
    assert!((290..=300).contains(&expires), "{entry}");
    assert!(entry["context_length"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(entry["digest"].as_str().unwrap().len(), 64);
    assert_eq!(entry["model"], MODEL, "{entry}");
    assert_eq!(entry["details"]["family"], "gemma3", "{entry}");
    assert_eq!(entry["details"]["quantization_level"], "Q4_K_M", "{entry}");
    assert_eq!(entry["details"]["format"], "gguf", "{entry}");

    let (_, chat) = s.post("/api/chat", &json!({"model": MODEL, "messages": []}));
    assert_eq!(chat["done_reason"], "load");
    assert_eq!(chat["message"]["role"], "assistant");
}
