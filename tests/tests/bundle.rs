//! `herd export` / `herd import`: a model moves between stores as an OCI image-layout tar,
//! with no registry, every digest verified on the way in.

use herd_tests::registry::file_digest;
use herd_tests::{tree, TestServer, MODEL};
use serde_json::json;

#[test]
fn an_exported_model_imports_into_another_store_and_runs() {
    let source = TestServer::with_model();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("gemma.tar");
    let out = source.cli(&["export", MODEL, "-o", tar.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = std::process::Command::new("tar").arg("tf").arg(&tar).output().unwrap();
    let entries = String::from_utf8_lossy(&listing.stdout);
    assert!(
        entries.starts_with("oci-layout\nindex.json\nblobs/sha256/"),
        "{entries}"
    );
    assert!(entries.contains("blobs/sha256/a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818\n"));

    let target = TestServer::start();
    let out = target.cli(&["import", tar.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("imported {MODEL}\n"));
    let manifest = "manifests/registry.ollama.ai/library/gemma3/270m";
    assert_eq!(
        std::fs::read(target.models_dir.path().join(manifest)).unwrap(),
        std::fs::read(source.models_dir.path().join(manifest)).unwrap()
    );
    assert_eq!(tree(target.models_dir.path()), tree(source.models_dir.path()));
    for blob in tree(target.models_dir.path())
        .iter()
        .filter(|p| p.starts_with("blobs/"))
    {
        let digest = blob.trim_start_matches("blobs/").replacen('-', ":", 1);
        assert_eq!(file_digest(&target.models_dir.path().join(blob)), digest);
    }
    let (status, body) = target.post(
        "/api/generate",
        &json!({ "model": MODEL, "prompt": "Hello", "stream": false, "options": { "num_predict": 3 } }),
    );
    assert_eq!(status, 200, "{body}");

    // One flipped byte in the weights: refused, and nothing stays in the store.
    let mut bytes = std::fs::read(&tar).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let tampered = dir.path().join("tampered.tar");
    std::fs::write(&tampered, bytes).unwrap();
    let fresh = TestServer::start();
    let out = fresh.cli(&["import", tampered.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid bundle: blob sha256:a5fd3b62") && stderr.contains("(400 Bad Request)"),
        "{stderr}"
    );
    assert!(
        tree(fresh.models_dir.path()).is_empty(),
        "{:?}",
        tree(fresh.models_dir.path())
    );

    let out = source.cli(&[
        "export",
        "missing:model",
        "-o",
        dir.path().join("x.tar").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert!(!dir.path().join("x.tar").exists());
}
