//! Modelfile `ADAPTER`: a LoRA adapter GGUF uploaded by `herd create`, stored as an
//! `application/vnd.ollama.image.adapter` layer, and applied by the runner.

use herd_tests::{generate_body, write_lora_adapter, TestServer, MODEL};
use serde_json::json;

/// Gemma 3 270M's `attn_output` projections: 1024 inputs, 640 outputs, in each of 18 blocks.
fn gemma_attention_outputs() -> Vec<(String, u64, u64)> {
    (0..18)
        .map(|i| (format!("blk.{i}.attn_output.weight"), 1024, 640))
        .collect()
}

fn create(s: &TestServer, name: &str, modelfile: &str, adapter: &std::path::Path) -> std::process::Output {
    let dir = adapter.parent().unwrap();
    std::fs::write(dir.join("Modelfile"), modelfile).unwrap();
    s.cli(&["create", name, "-f", dir.join("Modelfile").to_str().unwrap()])
}

fn answer(s: &TestServer, model: &str) -> String {
    let body = generate_body(
        "The capital of France is",
        json!({"model": model, "raw": true, "stream": false, "options": {"num_predict": 12}}),
    );
    let (status, body) = s.post("/api/generate", &body);
    assert_eq!(status, 200, "{body}\n{}", s.log());
    body["response"].as_str().unwrap().to_string()
}

#[test]
fn an_adapter_is_stored_as_its_layer_and_changes_the_output() {
    let s = TestServer::with_model();
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("lora.gguf");
    write_lora_adapter(&adapter, "gemma3", &gemma_attention_outputs(), 4, 0.2);

    let out = create(
        &s,
        "gemma-lora",
        &format!("FROM {MODEL}\nADAPTER ./lora.gguf\n"),
        &adapter,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = std::fs::read_to_string(
        s.models_dir
            .path()
            .join("manifests/registry.ollama.ai/library/gemma-lora/latest"),
    )
    .unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let kinds: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"application/vnd.ollama.image.adapter"), "{kinds:?}");
    assert!(kinds.contains(&"application/vnd.ollama.image.model"), "{kinds:?}");
    let (_, show) = s.post("/api/show", &json!({"model": "gemma-lora"}));
    assert!(
        show["modelfile"].as_str().unwrap().contains("\nADAPTER /"),
        "{}",
        show["modelfile"]
    );

    // Greedy decoding: the same prompt answers differently only if the adapter is applied.
    let base = answer(&s, MODEL);
    let adapted = answer(&s, "gemma-lora");
    assert_ne!(base, adapted, "the adapter changed nothing");
    assert_eq!(
        answer(&s, MODEL),
        base,
        "the base model must be untouched by the adapter"
    );
    // The same weights with and without the adapter are two runners, not one reloaded in turn.
    assert_eq!(s.runner_pids().len(), 2, "{}", s.log());
}

#[test]
fn adapters_that_do_not_fit_the_model_are_refused_at_create_time() {
    let s = TestServer::with_model();
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("lora.gguf");
    write_lora_adapter(&adapter, "llama", &[("blk.0.attn_output.weight".into(), 8, 8)], 2, 0.1);
    let out = create(
        &s,
        "wrong-arch",
        &format!("FROM {MODEL}\nADAPTER ./lora.gguf\n"),
        &adapter,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is for \"llama\", the model is \"gemma3\""), "{stderr}");

    // The model's own weights are a GGUF, but not an adapter.
    std::os::unix::fs::symlink(herd_tests::model_path(), dir.path().join("weights.gguf")).unwrap();
    let out = create(
        &s,
        "not-an-adapter",
        &format!("FROM {MODEL}\nADAPTER ./weights.gguf\n"),
        &adapter,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a LoRA adapter"), "{stderr}");

    let (status, _) = s.post("/api/show", &json!({"model": "wrong-arch"}));
    assert_eq!(status, 404, "a refused create must write no manifest");
}

#[test]
fn the_least_recently_used_idle_model_makes_room() {
    // Two models may be loaded; three, on three different weights (an adapter makes its own
    // runner), take turns.
    let s = TestServer::start_with(&[("HERD_MAX_LOADED_MODELS", "2")]);
    s.import_model(MODEL);
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("lora.gguf");
    for (name, scale) in [("lora-a", 0.2), ("lora-b", 0.3)] {
        write_lora_adapter(&adapter, "gemma3", &gemma_attention_outputs(), 4, scale);
        let out = create(&s, name, &format!("FROM {MODEL}\nADAPTER ./lora.gguf\n"), &adapter);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let loaded = || {
        let (_, ps) = s.get("/api/ps");
        let mut names: Vec<String> = ps["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };

    answer(&s, MODEL);
    answer(&s, "lora-a");
    assert_eq!(loaded(), ["gemma3:270m", "lora-a:latest"]);
    assert_eq!(s.runner_pids().len(), 2, "{}", s.log());
    // The base model is used again, so lora-a is now the least recently used.
    answer(&s, MODEL);
    answer(&s, "lora-b");
    assert_eq!(loaded(), ["gemma3:270m", "lora-b:latest"], "{}", s.log());
    assert_eq!(s.runner_pids().len(), 2, "{}", s.log());
    assert!(
        s.log().contains("evicting idle model model=lora-a:latest"),
        "{}",
        s.log()
    );
}
