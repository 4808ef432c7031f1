//! A bounded soak: 8 clients at once, for `HERD_SOAK_SECONDS` (default 90, at most 600),
//! mixing generate, chat, embed, pull from a real registry, copy and delete on one real
//! server. Every request must be answered, with success or a clear `{"error": ...}`; no
//! runner may leak; the server's RSS must end within 10% of where it stood after warming up.
//! It prints its figures as one JSON line (`SOAK {...}`) for docs/benchmarks.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herd_tests::registry::TestRegistry;
use herd_tests::{chat_body, generate_body, TestServer, MODEL};
use serde_json::{json, Value};

const CLIENTS: usize = 8;

/// The server's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// What one request got: success, or an error status with its message.
#[derive(Debug)]
enum Answer {
    Ok,
    Refused(u16, String),
}

#[derive(Default)]
struct Tally {
    by_kind: std::collections::BTreeMap<&'static str, (u64, u64)>,
    latencies: Vec<Duration>,
    lost: Vec<String>,
}

fn soak_duration() -> Duration {
    let seconds: u64 = std::env::var("HERD_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    Duration::from_secs(seconds.clamp(10, 600))
}

#[test]
fn eight_clients_mixing_everything_lose_nothing_and_leak_nothing() {
    let registry = TestRegistry::start();
    let server = TestServer::start_with(&[("HERD_REGISTRIES", &registry.authority()), ("HERD_KEEP_ALIVE", "10m")]);
    server.import_model(MODEL);
    let remote = format!("{}/soak/gemma3:270m", registry.authority());
    let (status, body) = server.post("/api/copy", &json!({"source": MODEL, "destination": remote}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post(
        "/api/push",
        &json!({"model": remote, "insecure": true, "stream": false}),
    );
    assert_eq!(status, 200, "{body}");

    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    // One request of `kind`; the client's `n`th.
    let request = |client: usize, n: usize, kind: &'static str| -> Result<Answer, String> {
        let (method, path, body): (&str, &str, Value) = match kind {
            "generate" => (
                "POST",
                "/api/generate",
                generate_body(
                    "Tell me about rivers.",
                    json!({"stream": false, "options": {"num_predict": 8}}),
                ),
            ),
            "chat" => (
                "POST",
                "/api/chat",
                chat_body(
                    "Name three colours.",
                    json!({"stream": false, "options": {"num_predict": 8}}),
                ),
            ),
            "embed" => (
                "POST",
                "/api/embed",
                json!({"model": MODEL, "input": ["soak", format!("client {client} request {n}")]}),
            ),
            "pull" => (
                "POST",
                "/api/pull",
                json!({"model": remote, "insecure": true, "stream": false}),
            ),
            "copy" => (
                "POST",
                "/api/copy",
                json!({"source": MODEL, "destination": format!("soak-{client}:{n}")}),
            ),
            "delete" => (
                "DELETE",
                "/api/delete",
                json!({"model": format!("soak-{client}:{}", n - 1)}),
            ),
            "delete-pulled" => ("DELETE", "/api/delete", json!({"model": remote})),
            _ => unreachable!(),
        };
        let response = http
            .request(method.parse().unwrap(), server.url(path))
            .json(&body)
            .send()
            .map_err(|e| format!("{kind}: no answer: {e}"))?;
        let status = response.status().as_u16();
        let text = response.text().map_err(|e| format!("{kind}: answer cut: {e}"))?;
        if status == 200 {
            return Ok(Answer::Ok);
        }
        let error: Value = serde_json::from_str(&text).map_err(|_| format!("{kind}: {status} without JSON: {text}"))?;
        match error["error"].as_str() {
            Some(message) if !message.is_empty() => Ok(Answer::Refused(status, message.to_string())),
            _ => Err(format!("{kind}: {status} without an error message: {text}")),
        }
    };
    // Each client runs the cycle from its own offset, so every kind overlaps every other.
    const CYCLE: [&str; 8] = [
        "generate",
        "chat",
        "embed",
        "copy",
        "delete",
        "pull",
        "generate",
        "delete-pulled",
    ];
    let run = |until: Instant, tally: &Mutex<Tally>| {
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for client in 0..CLIENTS {
                let (stop, request) = (&stop, &request);
                scope.spawn(move || {
                    let mut n = 0;
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        let kind = CYCLE[(client + n) % CYCLE.len()];
                        n += 1;
                        // A delete names the copy made just before it by this client.
                        if kind == "delete" && n < 2 {
                            continue;
                        }
                        let started = Instant::now();
                        let answer = request(client, n - 1, kind);
                        let mut tally = tally.lock().unwrap();
                        tally.latencies.push(started.elapsed());
                        let entry = tally.by_kind.entry(kind).or_default();
                        match answer {
                            Ok(Answer::Ok) => entry.0 += 1,
                            Ok(Answer::Refused(status, message)) => {
                                entry.1 += 1;
                                // Deletes and pulls racing each other may find nothing to
                                // delete (404); anything else is a failure of the server.
                                if !(status == 404 && kind.starts_with("delete")) {
                                    tally.lost.push(format!("{kind}: {status} {message}"));
                                }
                            }
                            Err(lost) => tally.lost.push(lost),
                        }
                    }
                });
            }
        });
    };

    // Warm up (every kind of request once per client), then measure.
    let warm = Mutex::new(Tally::default());
    run(Instant::now() + Duration::from_secs(10), &warm);
    let warm = warm.into_inner().unwrap();
    assert!(warm.lost.is_empty(), "during warm-up: {:?}", warm.lost);
    let pid = server.pid();
    let rss_start = rss(pid);
    let duration = soak_duration();
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    run(started + duration, &tally);
    let elapsed = started.elapsed();
    let mut tally = tally.into_inner().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let rss_end = rss(pid);

    let runners = server.runner_pids();
    let (_, ps) = server.get("/api/ps");
    let requests: u64 = tally.by_kind.values().map(|(ok, refused)| ok + refused).sum();
    tally.latencies.sort();
    let percentile = |p: f64| tally.latencies[((tally.latencies.len() - 1) as f64 * p) as usize].as_secs_f64();
    let figures = json!({
        "clients": CLIENTS,
        "seconds": elapsed.as_secs_f64(),
        "requests": requests,
        "requests_per_second": requests as f64 / elapsed.as_secs_f64(),
        "by_kind": tally.by_kind.iter().map(|(k, (ok, refused))| (k.to_string(), json!({"ok": ok, "refused": refused}))).collect::<serde_json::Map<_, _>>(),
        "latency_p50_s": percentile(0.5),
        "latency_p99_s": percentile(0.99),
        "rss_start_mb": rss_start as f64 / 1e6,
        "rss_end_mb": rss_end as f64 / 1e6,
        "runners_at_end": runners.len(),
    });
    println!("SOAK {figures}");

    assert!(
        tally.lost.is_empty(),
        "{} requests lost or failed: {:?}",
        tally.lost.len(),
        tally.lost
    );
    assert!(
        requests >= CLIENTS as u64 * 4,
        "too few requests to mean anything: {figures}"
    );
    for kind in CYCLE {
        let (ok, _) = tally.by_kind.get(kind).copied().unwrap_or_default();
        assert!(ok > 0, "no {kind} succeeded: {figures}");
    }
    assert_eq!(runners.len(), 1, "one model, one runner: {runners:?}");
    assert_eq!(ps["models"].as_array().map(Vec::len), Some(1), "{ps}");
    assert!(
        rss_end as f64 <= rss_start as f64 * 1.10,
        "server RSS grew from {rss_start} to {rss_end} bytes: {figures}"
    );
}
