//! `HERD_MAX_QUEUE`: beyond the requests that run and the ones that may wait, Ollama's 503.

use std::sync::Arc;

use herd_tests::{generate_body, TestServer, MODEL};
use serde_json::json;

#[test]
fn requests_beyond_the_queue_get_503_and_the_rest_complete() {
    let s = TestServer::start_with(&[("HERD_MAX_QUEUE", "8"), ("HERD_NUM_PARALLEL", "1")]);
    s.import_model(MODEL);
    // Loaded before the burst, so that every request of it arrives while the first still runs.
    let (status, _) = s.post("/api/generate", &json!({"model": MODEL, "prompt": ""}));
    assert_eq!(status, 200);

    let s = Arc::new(s);
    let burst: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let body = generate_body(
                    &format!("Story number {i}:"),
                    json!({"stream": false, "options": {"num_predict": 48}}),
                );
                s.post("/api/generate", &body)
            })
        })
        .collect();
    let answers: Vec<_> = burst.into_iter().map(|t| t.join().unwrap()).collect();
    let busy: Vec<_> = answers.iter().filter(|(status, _)| *status == 503).collect();
    let done = answers
        .iter()
        .filter(|(status, body)| *status == 200 && body["eval_count"] == 48)
        .count();
    // One runs, eight wait: the other 41 are refused at once.
    assert_eq!((done, busy.len()), (9, 41), "{answers:?}");
    for (_, body) in busy {
        assert_eq!(
            body["error"],
            "server busy, please try again.  maximum pending requests exceeded"
        );
    }
    // Once the burst is over, the server takes requests again.
    let (status, body) = s.post("/api/generate", &generate_body("Hello", json!({"stream": false})));
    assert_eq!(status, 200, "{body}");
}
