//! Every bad input of the foundation issue: a clear error, the right status, nothing written
//! outside the models dir, and a server that keeps working.

use std::sync::OnceLock;

use herd_tests::{generate_body, tree, TestServer, MODEL};
use serde_json::json;

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(TestServer::with_model)
}

#[test]
fn unknown_model_is_404_with_ollamas_text() {
    let s = server();
    for path in ["/api/generate", "/api/chat", "/api/show"] {
        let (status, body) = s.post(
            path,
            &json!({"model": "x", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"], "model 'x' not found", "{path}");
    }
}

#[test]
fn malformed_json_missing_model_and_wrong_types_are_400() {
    let s = server();
    let (status, body) = s.post_raw("/api/generate", b"{\"model\": ");
    assert_eq!(status, 400);
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    let (status, body) = s.post_raw("/api/chat", b"");
    assert_eq!(status, 400);
    assert_eq!(body["error"], "missing request body");
    let (status, body) = s.post("/api/generate", &json!({"prompt": "hi"}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("model"), "{body}");
    let (status, body) = s.post("/api/generate", &json!({"model": MODEL, "prompt": 42}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.post("/api/chat", &json!({"model": MODEL, "messages": "hi"}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.post(
        "/api/generate",
        &generate_body("hi", json!({"options": {"num_predict": "many"}})),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"], "option \"num_predict\" must be of type integer");
    let (status, body) = s.post("/api/generate", &generate_body("hi", json!({"keep_alive": "3600"})));
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("missing unit"), "{body}");
}

#[test]
fn chunked_bodies_are_read_and_oversized_ones_refused() {
    let s = server();
    // No Content-Length: the body arrives chunked, as some clients send it.
    let chunked = |bytes: Vec<u8>| reqwest::blocking::Body::new(std::io::Cursor::new(bytes));
    let body = serde_json::to_vec(&json!({"model": MODEL})).unwrap();
    let response = s.http.post(s.url("/api/show")).body(chunked(body)).send().unwrap();
    assert_eq!(response.status(), 200);
    // Each endpoint has its own limit: 1 MiB for a name and flags, 64 MiB for a conversation.
    let padded = |size: usize| {
        let mut body = vec![b' '; size];
        body.extend(serde_json::to_vec(&json!({"model": "no-such-model"})).unwrap());
        body
    };
    let response = s
        .http
        .post(s.url("/api/chat"))
        .body(chunked(padded(2 << 20)))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404, "2 MiB is a fine chat body");
    for (path, size, limit) in [("/api/show", 2 << 20, "1048576"), ("/api/chat", 65 << 20, "67108864")] {
        let response = s.http.post(s.url(path)).body(chunked(padded(size))).send();
        // The server may answer before the client has finished sending (then the send fails).
        if let Ok(response) = response {
            assert_eq!(response.status(), 413, "{path}");
            let body: serde_json::Value = response.json().unwrap();
            let error = body["error"].as_str().unwrap();
            assert_eq!(error, format!("request body larger than {limit} bytes"), "{path}");
        }
    }
    // On a new connection: the refused one was closed by the server.
    let response = reqwest::blocking::Client::new()
        .post(s.url("/api/show"))
        .json(&json!({"model": MODEL}))
        .send();
    assert_eq!(response.unwrap().status(), 200, "the server keeps serving");
}

#[test]
fn traversal_names_are_rejected_and_nothing_is_written() {
    let s = server();
    let outside = tempfile::tempdir().unwrap();
    let before_store = tree(s.models_dir.path());
    let target = outside.path().join("pwned");
    let names = [
        "../../etc/passwd".to_string(),
        format!("..{}", target.display()),
        "a/../../../b".into(),
        "registry.ollama.ai/../x".into(),
        "x:../y".into(),
        "sha256:../../x".into(),
        "/etc/passwd".into(),
        "a\\..\\b".into(),
    ];
    for name in &names {
        for (path, body) in [
            ("/api/generate", json!({"model": name, "prompt": "hi"})),
            ("/api/show", json!({"model": name})),
            ("/api/create", json!({"model": name, "from": MODEL})),
            ("/api/copy", json!({"source": MODEL, "destination": name})),
        ] {
            let (status, reply) = s.post(path, &body);
            assert_eq!(status, 400, "{path} with {name:?}: {reply}");
            assert!(
                reply["error"].as_str().is_some_and(|e| e.contains("invalid")),
                "{path}: {reply}"
            );
        }
        let response = s
            .http
            .delete(s.url("/api/delete"))
            .json(&json!({"model": name}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 400, "delete {name:?}");
    }
    assert!(!target.exists());
    assert_eq!(tree(s.models_dir.path()), before_store, "the store changed");
    assert!(tree(outside.path()).is_empty());
}

#[test]
fn bad_digests_and_mismatched_uploads_keep_nothing() {
    let s = server();
    let response = s
        .http
        .head(s.url("/api/blobs/sha256:..%2F..%2Fetc%2Fpasswd"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = s.http.post(s.url("/api/blobs/sha256-abc")).body("x").send().unwrap();
    assert_eq!(response.status(), 400);
    let claimed = format!("sha256:{}", "0".repeat(64));
    let before = tree(s.models_dir.path());
    let response = s
        .http
        .post(s.url(&format!("/api/blobs/{claimed}")))
        .body("not the right bytes")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().unwrap();
    assert!(body["error"].as_str().unwrap().starts_with("digest mismatch"), "{body}");
    assert_eq!(
        tree(s.models_dir.path()),
        before,
        "a mismatched upload left a file behind"
    );
    let response = s.http.head(s.url(&format!("/api/blobs/{claimed}"))).send().unwrap();
    assert_eq!(response.status(), 404);
}

fn upload(s: &TestServer, bytes: Vec<u8>) -> String {
    use std::fmt::Write;
    let digest = {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(&bytes)?;
                child.wait_with_output()
            })
            .unwrap();
        let mut d = String::new();
        write!(d, "sha256:{}", String::from_utf8_lossy(&out.stdout[..64])).unwrap();
        d
    };
    let response = s
        .http
        .post(s.url(&format!("/api/blobs/{digest}")))
        .body(bytes)
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    digest
}

#[test]
fn files_that_are_not_gguf_fail_at_create_time() {
    let s = server();
    let not_gguf = upload(s, b"this is a text file, not a model".to_vec());
    let (status, body) = s.post(
        "/api/create",
        &json!({"model": "broken", "files": {"model.gguf": not_gguf}, "stream": false}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not a valid GGUF"), "{body}");

    let real = std::fs::read(herd_tests::model_path()).unwrap();
    let truncated = upload(s, real[..4096].to_vec());
    let (status, body) = s.post(
        "/api/create",
        &json!({"model": "truncated", "files": {"model.gguf": truncated}, "stream": false}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not a valid GGUF"), "{body}");
    let (status, _) = s.post("/api/show", &json!({"model": "truncated"}));
    assert_eq!(status, 404);

    let (status, body) = s.post(
        "/api/create",
        &json!({"model": "x", "files": {"../../evil.gguf": not_gguf}}),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"], "file path must be relative");
    let (status, body) = s.post("/api/create", &json!({"model": "x", "from": "/etc/passwd"}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.post("/api/create", &json!({"model": "x"}));
    assert_eq!(status, 400);
    assert_eq!(body["error"], "neither 'from' or 'files' was specified");
    // The server is fine afterwards.
    let (status, _) = s.post(
        "/api/generate",
        &generate_body("hi", json!({"stream": false, "options": {"num_predict": 2}})),
    );
    assert_eq!(status, 200);
}

#[test]
fn features_the_model_lacks_and_unknown_formats_are_refused_clearly() {
    let s = server();
    let (status, body) = s.post("/api/generate", &generate_body("hi", json!({"format": "yaml"})));
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().starts_with("invalid format: \"yaml\""),
        "{body}"
    );
    let (status, body) = s.post("/api/chat", &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]}));
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "registry.ollama.ai/library/gemma3:270m does not support tools"
    );
    // Not base64, base64 of text, and a real PNG header (on a model without vision).
    for (images, want) in [
        (json!(["@@not base64@@"]), "images[0] is not base64"),
        (
            json!(["iVBORw0KGgo=", "aGVsbG8="]),
            "images[1] is not a PNG, JPEG, WebP, GIF or BMP image",
        ),
        (json!(["iVBORw0KGgo="]), "gemma3:270m does not support vision"),
    ] {
        let (status, body) = s.post("/api/generate", &generate_body("hi", json!({ "images": images })));
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(want), "{body}");
        let (status, body) = s.post(
            "/api/chat",
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi", "images": images}]}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(want), "{body}");
    }
    let (status, body) = s.post("/api/generate", &generate_body("hi", json!({"think": true})));
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("does not support thinking"),
        "{body}"
    );
    let (status, _) = s.post(
        "/api/generate",
        &generate_body(
            "hi",
            json!({"format": "", "think": false, "stream": false, "options": {"num_predict": 1}}),
        ),
    );
    assert_eq!(status, 200, "empty format and think=false are no-ops, as in Ollama");
    let (status, body) = s.post(
        "/api/generate",
        &generate_body("hi", json!({"raw": true, "system": "x"})),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"], "raw mode does not support template, system, or context");
}
