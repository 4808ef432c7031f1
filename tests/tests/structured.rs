//! Structured outputs and embeddings with the real model: `format` holds sampling to JSON or
//! a schema, and `/api/embed` and `/api/embeddings` pool the model's vectors.

use herd_tests::{chat_body, generate_body, TestServer, MODEL};
use serde_json::{json, Value};

/// A person with bounded fields, so that every answer ends within `num_predict`.
fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "color": {"enum": ["red", "green", "blue"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}
        },
        "required": ["name", "age", "color", "tags"],
        "additionalProperties": false
    })
}

/// Checks `value` against [`person_schema`], keyword by keyword.
fn violations(value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let Some(object) = value.as_object() else {
        return vec![format!("not an object: {value}")];
    };
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["age", "color", "name", "tags"] {
        found.push(format!("keys {keys:?}"));
    }
    match object.get("name").and_then(Value::as_str) {
        Some(name) if (1..=24).contains(&name.chars().count()) => {}
        other => found.push(format!("name {other:?}")),
    }
    match object.get("age").and_then(Value::as_i64) {
        Some(age) if (0..=120).contains(&age) && object["age"].is_i64() => {}
        _ => found.push(format!("age {:?}", object.get("age"))),
    }
    match object.get("color").and_then(Value::as_str) {
        Some("red" | "green" | "blue") => {}
        other => found.push(format!("color {other:?}")),
    }
    match object.get("tags").and_then(Value::as_array) {
        Some(tags) if tags.len() <= 3 && tags.iter().all(|t| t.as_str().is_some_and(|t| t.chars().count() <= 12)) => {}
        _ => found.push(format!("tags {:?}", object.get("tags"))),
    }
    found
}

#[test]
fn a_schema_in_format_holds_every_seeded_answer_to_it() {
    let s = TestServer::with_model();
    let mut failures = Vec::new();
    for seed in 0..20 {
        let (status, body) = s.post(
            "/api/chat",
            &chat_body(
                "Describe a fictional person.",
                json!({
                    "stream": false,
                    "format": person_schema(),
                    "options": {"temperature": 1.0, "top_k": 100, "top_p": 1.0, "seed": seed, "num_predict": 200}
                }),
            ),
        );
        assert_eq!(status, 200, "{body}");
        let content = body["message"]["content"].as_str().unwrap();
        match serde_json::from_str::<Value>(content) {
            Ok(value) => {
                let problems = violations(&value);
                if !problems.is_empty() {
                    failures.push(format!("seed {seed}: {problems:?} in {content}"));
                }
            }
            Err(e) => failures.push(format!(
                "seed {seed}: not JSON ({e}): {content:?} ({})",
                body["done_reason"]
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 20 failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn format_json_gives_json_streamed_or_not() {
    let s = TestServer::with_model();
    let request = |seed: u64, stream: bool| {
        generate_body(
            "A JSON object with the keys city and country for Paris:",
            json!({"stream": stream, "format": "json", "options": {"temperature": 0.7, "seed": seed, "num_predict": 120}}),
        )
    };
    let mut answers = Vec::new();
    for seed in 0..3 {
        let (status, body) = s.post("/api/generate", &request(seed, false));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["done_reason"], "stop", "{body}");
        let text = body["response"].as_str().unwrap().to_string();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        assert!(value.is_object(), "{text}");
        answers.push(text);
    }
    // Streamed, the same seed gives the same object, piece by piece.
    let (status, lines) = s.post_stream("/api/generate", &request(0, true));
    assert_eq!(status, 200);
    let text: String = lines.iter().filter_map(|l| l["response"].as_str()).collect();
    assert!(lines.len() > 3, "{lines:?}");
    assert_eq!(text, answers[0]);
    // Chat takes the same format.
    let (status, body) = s.post(
        "/api/chat",
        &chat_body(
            "A JSON object with the keys city and country for Paris.",
            json!({"stream": false, "format": "json", "options": {"num_predict": 120}}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let content = body["message"]["content"].as_str().unwrap();
    assert!(content.trim_start().starts_with('{'), "{content:?}");
}

#[test]
fn formats_that_cannot_hold_a_model_are_refused_with_the_reason() {
    let s = TestServer::with_model();
    let refused = |format: Value| {
        let (status, body) = s.post(
            "/api/chat",
            &chat_body("hi", json!({"stream": false, "format": format})),
        );
        assert_eq!(status, 400, "{body}");
        body["error"].as_str().unwrap().to_string()
    };
    assert_eq!(
        refused(json!("xml")),
        "invalid format: \"xml\"; expected \"json\" or a valid JSON Schema object"
    );
    let error = refused(json!({"type": "object", "properties": {"age": {"type": "int"}}}));
    assert!(
        error.starts_with("invalid JSON schema in format: at format.properties.age.type:"),
        "{error}"
    );
    let error = refused(json!({"properties": {"a": {"$ref": "https://example.com/a.json"}}}));
    assert!(error.contains("remote references are not supported"), "{error}");
    // Well-formed, but its reference leads nowhere: llama.cpp's converter refuses it.
    let error = refused(json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}));
    assert!(
        error.starts_with("invalid JSON schema in format: llama.cpp cannot"),
        "{error}"
    );
    // The runner survived all of it.
    let (status, body) = s.post("/api/generate", &generate_body("Hi", json!({"stream": false})));
    assert_eq!(status, 200, "{body}");
}

fn norm(vector: &[f64]) -> f64 {
    vector.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn embed_pools_normalises_and_cuts_vectors() {
    let s = TestServer::with_model();
    let (status, body) = s.post(
        "/api/embed",
        &json!({"model": MODEL, "input": ["The cat sat on the mat.", "Stock prices fell sharply.", "The cat sat on the mat."]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], MODEL);
    let vectors: Vec<Vec<f64>> = body["embeddings"].as_array().unwrap().iter().map(floats).collect();
    assert_eq!(vectors.len(), 3);
    // Gemma 3 270M's embedding length.
    assert!(vectors.iter().all(|v| v.len() == 640), "{}", vectors[0].len());
    for v in &vectors {
        assert!((norm(v) - 1.0).abs() < 1e-4, "not unit length: {}", norm(v));
    }
    assert_eq!(vectors[0], vectors[2], "the same input embeds the same");
    assert_ne!(vectors[0], vectors[1]);
    assert!(body["prompt_eval_count"].as_u64().unwrap() > 10, "{body}");
    assert!(body["total_duration"].as_u64().unwrap() >= body["load_duration"].as_u64().unwrap());

    // The legacy endpoint gives the same direction, not normalised.
    let (status, legacy) = s.post(
        "/api/embeddings",
        &json!({"model": MODEL, "prompt": "The cat sat on the mat."}),
    );
    assert_eq!(status, 200, "{legacy}");
    let raw = floats(&legacy["embedding"]);
    assert!((norm(&raw) - 1.0).abs() > 1e-3, "legacy vectors are not normalised");
    let scaled: Vec<f64> = raw.iter().map(|v| v / norm(&raw)).collect();
    assert!(scaled.iter().zip(&vectors[0]).all(|(a, b)| (a - b).abs() < 1e-4));

    // dimensions keeps the first values, normalised again.
    let (status, body) = s.post(
        "/api/embed",
        &json!({"model": MODEL, "input": "The cat sat on the mat.", "dimensions": 8}),
    );
    assert_eq!(status, 200, "{body}");
    let cut = floats(&body["embeddings"][0]);
    assert_eq!(cut.len(), 8);
    assert!((norm(&cut) - 1.0).abs() < 1e-4);
    let head_norm = norm(&vectors[0][..8]);
    assert!(cut
        .iter()
        .zip(&vectors[0][..8])
        .all(|(a, b)| (a - b / head_norm).abs() < 1e-4));
}

#[test]
fn embed_inputs_that_are_empty_too_long_or_malformed() {
    let s = TestServer::with_model();
    // An empty list loads the model and embeds nothing; so does an empty legacy prompt.
    let (status, body) = s.post("/api/embed", &json!({"model": MODEL, "input": []}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["embeddings"], json!([]));
    let (status, body) = s.post("/api/embeddings", &json!({"model": MODEL, "prompt": ""}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["embedding"], json!([]));

    let long = "word ".repeat(400);
    let small_context = json!({"num_ctx": 128});
    let (status, body) = s.post(
        "/api/embed",
        &json!({"model": MODEL, "input": long, "truncate": false, "options": small_context}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "the input length exceeds the context length");
    let (status, body) = s.post(
        "/api/embed",
        &json!({"model": MODEL, "input": long, "options": small_context}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prompt_eval_count"], 128, "cut to the context");

    for (input, extra) in [
        (json!(42), json!({})),
        (json!(["a", 1]), json!({})),
        (json!("a"), json!({"dimensions": 0})),
    ] {
        let mut request = json!({"model": MODEL, "input": input});
        herd_tests::merge(&mut request, extra);
        let (status, body) = s.post("/api/embed", &request);
        assert_eq!(status, 400, "{request}: {body}");
    }
    let (status, body) = s.post(
        "/api/embed",
        &json!({"model": MODEL, "input": "a", "dimensions": 100000}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("embedding length (640)"),
        "{body}"
    );
    let (status, body) = s.post("/api/embed", &json!({"model": "nope:1b", "input": "a"}));
    assert_eq!(status, 404, "{body}");
}
