//! A model whose KV cache cannot fit in memory is refused before a runner starts, with the
//! sizes in the error, and the server goes on serving.

use herd_tests::{generate_body, TestServer, MODEL};
use serde_json::json;

#[test]
fn a_load_too_big_for_memory_is_refused_with_the_sizes() {
    // 256 slots (llama.cpp's most) of Gemma 3's 32768-token context: about 28 GiB of KV cache with the
    // sliding-window layers kept small, more than a 24 GiB machine of this kind has.
    let s = TestServer::start_with(&[("HERD_NUM_PARALLEL", "256")]);
    s.import_model(MODEL);
    let (status, body) = s.post(
        "/api/generate",
        &generate_body("Hello", json!({"stream": false, "options": {"num_ctx": 32768}})),
    );
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("model requires more system memory ("), "{error}");
    assert!(error.contains(" GiB) than is available ("), "{error}");
    assert!(
        s.runner_pids().is_empty(),
        "no runner may start for a load that cannot fit"
    );

    // A context that fits loads as usual.
    let (status, body) = s.post(
        "/api/generate",
        &generate_body(
            "Hello",
            json!({"stream": false, "options": {"num_ctx": 64, "num_predict": 4}}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eval_count"], 4);
}
