//! A runner built with `--features cuda` (by `scripts/build-cuda`, which runs these tests; the
//! runner is `HERD_CUDA_RUNNER`) serves the real model wherever it is started: on a GPU
//! machine with layers offloaded, and on a machine without an NVIDIA GPU or driver on the CPU,
//! with a log line saying why. Ignored in the ordinary test run, which has no CUDA build.

use herd_tests::{chat_body, TestServer, MODEL};
use serde_json::json;

/// Whether this machine has an NVIDIA GPU that the driver can use.
fn has_nvidia_gpu() -> bool {
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|output| output.status.success() && String::from_utf8_lossy(&output.stdout).contains("GPU "))
}

fn cuda_server() -> TestServer {
    let runner =
        std::env::var("HERD_CUDA_RUNNER").expect("HERD_CUDA_RUNNER: a herd-runner built by scripts/build-cuda");
    // llama.cpp's own lines (which backend, how many layers offloaded) are at info.
    let s = TestServer::start_with(&[("HERD_RUNNER", &runner), ("HERD_RUNNER_LOG", "info")]);
    s.import_model(MODEL);
    s
}

#[test]
#[ignore = "needs a runner built with --features cuda: scripts/build-cuda"]
fn a_cuda_runner_answers_a_chat_on_the_gpu_or_else_on_the_cpu() {
    let s = cuda_server();
    let (status, body) = s.post(
        "/api/chat",
        &chat_body(
            "Name a colour.",
            json!({"stream": false, "options": {"num_gpu": 99, "num_predict": 8, "temperature": 0}}),
        ),
    );
    assert_eq!(status, 200, "{body}\n{}", s.log());
    assert_eq!(body["eval_count"], 8, "{body}");
    assert!(!body["message"]["content"].as_str().unwrap().is_empty(), "{body}");

    let (_, ps) = s.get("/api/ps");
    let loaded = &ps["models"][0];
    let size_vram = loaded["size_vram"].as_u64().unwrap();
    let log = s.log();
    if has_nvidia_gpu() {
        assert!(size_vram > 0, "a GPU machine offloads: {ps}\n{log}");
        assert!(log.contains("offloaded"), "llama.cpp reports the offload:\n{log}");
    } else {
        assert_eq!(size_vram, 0, "{ps}");
        assert!(
            log.contains("no NVIDIA GPU"),
            "the server says why it runs on the CPU:\n{log}"
        );
        // The CUDA backend was compiled in and found nothing to run on.
        assert!(
            log.to_lowercase().contains("cuda"),
            "the runner reports the CUDA backend:\n{log}"
        );
    }
}

#[test]
#[ignore = "needs a runner built with --features cuda: scripts/build-cuda"]
fn a_cuda_runner_serves_parallel_streams_and_embeddings_like_the_cpu_runner() {
    let s = cuda_server();
    let streams: Vec<_> = (0..3)
        .map(|i| {
            let (base, http) = (s.base.clone(), s.http.clone());
            std::thread::spawn(move || {
                let body = chat_body(
                    &format!("Count to {}.", i + 3),
                    json!({"stream": false, "options": {"num_predict": 6}}),
                );
                let response = http.post(format!("{base}/api/chat")).json(&body).send().unwrap();
                (
                    response.status().as_u16(),
                    response.json::<serde_json::Value>().unwrap(),
                )
            })
        })
        .collect();
    for stream in streams {
        let (status, body) = stream.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["eval_count"], 6, "{body}");
    }
    let (status, body) = s.post("/api/embed", &json!({"model": MODEL, "input": ["a", "b"]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["embeddings"].as_array().unwrap().len(), 2, "{body}");
}
