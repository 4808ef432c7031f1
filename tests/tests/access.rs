//! Who may use the API: the Host header on a loopback listener (DNS rebinding), API keys with
//! scopes, the web pages that may call it (CORS), and model management from other machines on
//! a server bound beyond loopback.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};

use herd_tests::TestServer;
use serde_json::{json, Value};

/// Sends one raw request (so the Host header is exactly `host`); the status and JSON body.
fn raw(server: &TestServer, method: &str, path: &str, host: &str, headers: &str) -> (u16, Value) {
    let (status, _, body) = exchange(server, method, path, host, headers);
    (status, body)
}

/// Like [`raw`], with the response's head too, lowercased.
fn exchange(server: &TestServer, method: &str, path: &str, host: &str, headers: &str) -> (u16, String, Value) {
    let addr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Every path under `dir`, sorted.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        }
        found.push(path);
    }
    found.sort();
    found
}

#[test]
fn only_local_and_named_web_pages_may_call_the_api() {
    let s = TestServer::start_with(&[("HERD_ORIGINS", "https://chat.example.com")]);
    for origin in ["http://localhost:3000", "https://chat.example.com", "app://desktop"] {
        let (status, head, _) = exchange(&s, "GET", "/api/tags", "localhost", &format!("Origin: {origin}\r\n"));
        assert_eq!(status, 200, "{origin}");
        assert!(
            head.contains(&format!("access-control-allow-origin: {origin}")),
            "{origin}: {head}"
        );
    }
    // The browser's preflight before a JSON POST.
    let asks = "Origin: https://chat.example.com\r\nAccess-Control-Request-Method: POST\r\n\
                Access-Control-Request-Headers: content-type, x-stainless-lang\r\n";
    let (status, head, _) = exchange(&s, "OPTIONS", "/api/chat", "localhost", asks);
    assert_eq!(status, 204, "{head}");
    for line in [
        "access-control-allow-origin: https://chat.example.com",
        "access-control-allow-methods: get, post",
        "content-type",
        "x-stainless-lang",
    ] {
        assert!(head.contains(line), "{line}: {head}");
    }
    // Any other page is refused, preflight or not, and learns nothing.
    let evil = "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n";
    let (status, head, _) = exchange(&s, "OPTIONS", "/api/pull", "localhost", evil);
    assert_eq!(status, 403, "{head}");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    let before = files_under(s.models_dir.path());
    let (status, head, body) = exchange(&s, "POST", "/api/pull", "localhost", evil);
    assert_eq!(status, 403, "{head}");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    assert!(body["error"].as_str().unwrap().contains("HERD_ORIGINS"), "{body}");
    assert_eq!(files_under(s.models_dir.path()), before);
    // No Origin: not a browser's cross-origin request, nothing added.
    let (status, head, _) = exchange(&s, "GET", "/api/tags", "localhost", "");
    assert_eq!(status, 200);
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

#[test]
fn a_loopback_server_refuses_other_host_names() {
    let s = TestServer::start();
    let port = s.url("").rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    for host in [
        "localhost",
        &format!("localhost:{port}"),
        &format!("127.0.0.1:{port}"),
        &format!("[::1]:{port}"),
    ] {
        assert_eq!(raw(&s, "GET", "/api/tags", host, "").0, 200, "{host}");
    }
    // A page on evil.example whose name now resolves to 127.0.0.1 (DNS rebinding).
    for host in ["evil.example", &format!("evil.example:{port}")] {
        let (status, body) = raw(&s, "GET", "/api/tags", host, "");
        assert_eq!(status, 403, "{host}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("not allowed on a loopback listener"),
            "{body}"
        );
    }
}

#[test]
fn api_keys_are_required_and_their_scopes_hold() {
    let s = TestServer::start_with(&[(
        "HERD_API_KEY",
        "reader-secret-1=read,infer-secret-1=infer,admin-secret-1",
    )]);
    let call = |method: &str, path: &str, key: Option<&str>| {
        let auth = key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        raw(&s, method, path, "localhost", &auth)
    };
    // The heartbeat stays open.
    assert_eq!(call("GET", "/", None).0, 200);
    let (status, body) = call("GET", "/api/tags", None);
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("needs an API key"), "{body}");
    assert_eq!(call("GET", "/api/tags", Some("reader-secret-2")).0, 401);
    assert_eq!(call("GET", "/api/tags", Some("reader-secret-1")).0, 200);
    assert_eq!(call("GET", "/v1/models", Some("reader-secret-1")).0, 200);
    // A reader may not infer; an inferrer may not manage models; an admin may do all.
    let (status, body) = call("POST", "/api/chat", Some("reader-secret-1"));
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("scope"), "{body}");
    // Past the policy, an empty body is the handler's 400.
    assert_eq!(call("POST", "/api/chat", Some("infer-secret-1")).0, 400);
    assert_eq!(call("DELETE", "/api/delete", Some("infer-secret-1")).0, 403);
    assert_eq!(call("DELETE", "/api/delete", Some("admin-secret-1")).0, 400);
    assert_eq!(call("GET", "/api/tags", Some("admin-secret-1")).0, 200);
    // The CLI without a key is told why; with HERD_API_KEY it sends the first key.
    let out = s.cli(&["list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs an API key"));
    let cli_with_key = |keys: &str, args: &[&str]| {
        std::process::Command::new(herd_tests::binary("herd"))
            .args(args)
            .env(
                "HERD_HOST",
                s.url("").trim_start_matches("http://").trim_end_matches('/'),
            )
            .env("HERD_API_KEY", keys)
            .output()
            .unwrap()
    };
    assert!(cli_with_key("reader-secret-1=read,admin-secret-1", &["list"])
        .status
        .success());
    let out = cli_with_key("reader-secret-1=read", &["cp", "a", "b"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("scope"), "{out:?}");
    assert!(!s.log().contains("admin-secret-1"), "a key was logged");
}

/// An address of this machine that is not loopback, if it has one.
fn lan_address() -> Option<IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback())
}

#[test]
fn bound_beyond_loopback_without_keys_model_management_is_for_this_machine_only() {
    let lan = lan_address().expect("this machine has a non-loopback address");
    let s = TestServer::start_with(&[("HERD_HOST", "0.0.0.0:0")]);
    let port: u16 = s
        .url("")
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let http = reqwest::blocking::Client::new();
    let from_lan = |method: reqwest::Method, path: &str| {
        let response = http
            .request(method, format!("http://{lan}:{port}{path}"))
            .json(&json!({ "model": "nothing:here" }))
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    // From another address: reading and inference go on, management is refused.
    assert_eq!(from_lan(reqwest::Method::GET, "/api/tags").0, 200);
    assert_eq!(from_lan(reqwest::Method::POST, "/api/show").0, 404);
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/delete"),
        (reqwest::Method::POST, "/api/pull"),
        (reqwest::Method::POST, "/api/create"),
    ] {
        let (status, body) = from_lan(method, path);
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("HERD_API_KEY"), "{body}");
    }
    // From this machine (loopback), management works as before.
    let (status, _) = s.post("/api/copy", &json!({ "source": "nothing:here", "destination": "x" }));
    assert_eq!(status, 404);
}
