//! `think` with the real model and a template that puts reasoning between `<think>` tags
//! (tests/data/gemma3-think.gotmpl, prefilling `<think>` when thinking). Two worked examples
//! in the history teach the 270M base model to close its reasoning, so the answer splits
//! into `thinking` and `content`.

use herd_tests::{TestServer, MODEL};
use serde_json::{json, Value};

const THINK_MODEL: &str = "gemma3-think:270m";

fn server() -> TestServer {
    let s = TestServer::with_model();
    s.create_with_template(THINK_MODEL, MODEL, "gemma3-think.gotmpl");
    s
}

fn worked_examples() -> Value {
    json!([
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "thinking": "Two plus two is four.", "content": "4"},
        {"role": "user", "content": "What is 3+3?"},
        {"role": "assistant", "thinking": "Three plus three is six.", "content": "6"},
        {"role": "user", "content": "What is 5+5?"}
    ])
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": THINK_MODEL, "messages": worked_examples(), "stream": false,
                          "options": {"temperature": 0, "num_predict": 16}});
    herd_tests::merge(&mut body, extra);
    body
}

#[test]
fn reasoning_is_separated_from_the_answer() {
    let s = server();
    let (_, shown) = s.post("/api/show", &json!({"model": THINK_MODEL}));
    assert_eq!(shown["capabilities"], json!(["completion", "thinking"]));

    // A model that reasons does so by default, as in Ollama.
    let (status, body) = s.post("/api/chat", &chat(json!({})));
    assert_eq!(status, 200, "{body}");
    let thinking = body["message"]["thinking"].as_str().unwrap_or_else(|| panic!("{body}"));
    let content = body["message"]["content"].as_str().unwrap();
    assert!(!thinking.trim().is_empty(), "{body}");
    assert!(
        !thinking.contains("<think>") && !thinking.contains("</think>"),
        "{body}"
    );
    assert!(!content.is_empty() && !content.contains("</think>"), "{body}");
    // (Answers are compared by their reasoning only: a reused KV prefix may shift late tokens.)
    let (_, explicit) = s.post("/api/chat", &chat(json!({"think": true})));
    assert_eq!(explicit["message"]["thinking"], thinking);

    // Streamed: the same reasoning, then the answer, in that order.
    let (status, lines) = s.post_stream("/api/chat", &chat(json!({"stream": true})));
    assert_eq!(status, 200);
    let joined = |field: &str| -> String { lines.iter().filter_map(|l| l["message"][field].as_str()).collect() };
    assert_eq!(joined("thinking"), thinking);
    assert!(!joined("content").is_empty());
    let first_content = lines.iter().position(|l| l["message"]["content"] != "").unwrap();
    assert!(lines[first_content..]
        .iter()
        .all(|l| l["message"].get("thinking").is_none()));

    // think: false renders no prefill and parses nothing.
    let (_, off) = s.post("/api/chat", &chat(json!({"think": false})));
    assert!(off["message"].get("thinking").is_none(), "{off}");
    let (_, rendered) = s.post("/api/chat", &chat(json!({"think": false, "_debug_render_only": true})));
    let prompt = rendered["_debug_info"]["rendered_template"].as_str().unwrap();
    assert!(prompt.ends_with("<start_of_turn>model\n"), "{prompt:?}");

    // Generate takes think too.
    let (status, generated) = s.post(
        "/api/generate",
        &json!({"model": THINK_MODEL, "prompt": "Why is the sky blue?", "think": "high", "stream": false,
                "options": {"temperature": 0, "num_predict": 8}}),
    );
    assert_eq!(status, 200, "{generated}");
    assert!(
        generated["thinking"].as_str().is_some_and(|t| !t.is_empty()),
        "{generated}"
    );
}

#[test]
fn think_values_and_models_that_cannot_reason_are_refused_clearly() {
    let s = server();
    let refused = |body: Value, want: &str| {
        let (status, answer) = s.post("/api/chat", &body);
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(want), "{error}");
    };
    refused(chat(json!({"think": "extreme"})), "invalid think value");
    refused(chat(json!({"think": 3})), "invalid think value");
    refused(
        chat(json!({"model": MODEL, "think": true})),
        "\"gemma3:270m\" does not support thinking",
    );
    refused(
        chat(json!({"think": true, "format": "json"})),
        "think cannot be combined",
    );
    // think: false on a model that cannot reason is fine; format alone turns thinking off.
    let (status, _) = s.post("/api/chat", &chat(json!({"model": MODEL, "think": false})));
    assert_eq!(status, 200);
    let (status, answer) = s.post(
        "/api/chat",
        &chat(
            json!({"format": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
                     "options": {"num_predict": 30}}),
        ),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer["message"].get("thinking").is_none(), "{answer}");
    let n: Value = serde_json::from_str(answer["message"]["content"].as_str().unwrap()).unwrap();
    assert!(n["n"].is_i64(), "{answer}");
}
