//! Pull and push against a real registry (Debian's `docker-registry`), anonymous and with
//! Basic auth, interrupted at chosen points through a TCP proxy, and fed crafted manifests
//! and corrupt blobs planted in its storage.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use herd_tests::registry::{file_digest, free_port, FaultProxy, TestNginx, TestRegistry, TokenServer};
use herd_tests::{model_path, remaining_lines, tree, SmallDisk, TestServer};
use serde_json::{json, Value};

/// The real model's blob digest (its sha256, as `scripts/fetch-model` checks it).
const MODEL_DIGEST: &str = "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

fn statuses(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l["status"].as_str().map(String::from))
        .collect()
}

/// The server's store holds the real model's weights, byte for byte.
fn assert_holds_the_weights(server: &TestServer) {
    let blob = server
        .models_dir
        .path()
        .join(format!("blobs/{}", MODEL_DIGEST.replace(':', "-")));
    assert_eq!(file_digest(&blob), MODEL_DIGEST);
}

fn model_size() -> u64 {
    std::fs::metadata(model_path()).unwrap().len()
}

fn manifest_file(server: &TestServer, host: &str, repository: &str, tag: &str) -> std::path::PathBuf {
    server
        .models_dir
        .path()
        .join(format!("manifests/{host}/{repository}/{tag}"))
}

fn blob_names(server: &TestServer) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(server.models_dir.path().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Publishes the real model to `registry` as `herd/gemma3:270m`, and returns the
/// `HERD_REGISTRIES` value that allows both the registry and `proxy` in front of it.
fn publish_behind(registry: &TestRegistry, proxy: &FaultProxy) -> String {
    let allowed = format!("{},{}", registry.authority(), proxy.authority());
    let publisher = TestServer::start_with(&[("HERD_REGISTRIES", &allowed)]);
    publish(&publisher, &format!("{}/herd/gemma3:270m", registry.authority()));
    allowed
}

/// Imports the real model as `name` and pushes it (non-streamed).
fn publish(server: &TestServer, name: &str) {
    server.import_model(name);
    let (status, body) = server.post(
        "/api/push",
        &json!({ "model": name, "insecure": true, "stream": false }),
    );
    assert_eq!(
        (status, body.clone()),
        (200, json!({ "status": "success" })),
        "{}",
        server.log()
    );
}

#[test]
fn push_delete_pull_round_trips_byte_for_byte() {
    let registry = TestRegistry::start();
    let server = TestServer::start_with(&[("HERD_REGISTRIES", &registry.authority())]);
    let name = format!("{}/herd/gemma3:270m", registry.authority());
    server.import_model(&name);
    let manifest_path = manifest_file(&server, &registry.authority(), "herd/gemma3", "270m");
    let original_manifest = std::fs::read(&manifest_path).unwrap();
    let original_blobs = blob_names(&server);

    let (status, lines) = server.post_stream("/api/push", &json!({ "model": name, "insecure": true }));
    assert_eq!(status, 200);
    let said = statuses(&lines);
    assert_eq!(
        said.first().map(String::as_str),
        Some("retrieving manifest"),
        "{said:?}"
    );
    assert_eq!(said.last().map(String::as_str), Some("success"), "{said:?}");
    assert!(said.contains(&"pushing manifest".to_string()), "{said:?}");
    let model_line = lines
        .iter()
        .rfind(|l| l["digest"] == MODEL_DIGEST)
        .expect("a progress line for the weights");
    assert_eq!(model_line["status"], "pushing a5fd3b62230a");
    assert_eq!(model_line["total"], model_size());
    assert_eq!(model_line["completed"], model_size());
    assert_eq!(file_digest(&registry.blob_data(MODEL_DIGEST)), MODEL_DIGEST);

    // A second push finds every blob there and uploads nothing.
    let patches_before = registry.log().matches("\"PATCH ").count();
    let (status, body) = server.post(
        "/api/push",
        &json!({ "model": name, "insecure": true, "stream": false }),
    );
    assert_eq!((status, body), (200, json!({ "status": "success" })));
    assert_eq!(registry.log().matches("\"PATCH ").count(), patches_before);

    let out = server.cli(&["rm", &name]);
    assert!(out.status.success());
    assert!(blob_names(&server).is_empty(), "{:?}", blob_names(&server));

    let (status, lines) = server.post_stream("/api/pull", &json!({ "model": name, "insecure": true }));
    assert_eq!(status, 200);
    let said = statuses(&lines);
    assert_eq!(said.first().map(String::as_str), Some("pulling manifest"), "{said:?}");
    for expected in [
        "pulling a5fd3b62230a",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ] {
        assert!(said.contains(&expected.to_string()), "{expected} missing from {said:?}");
    }
    assert_eq!(said.last().map(String::as_str), Some("success"));
    let progress: Vec<u64> = lines
        .iter()
        .filter(|l| l["digest"] == MODEL_DIGEST)
        .map(|l| l["completed"].as_u64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&model_size()));

    assert_eq!(std::fs::read(&manifest_path).unwrap(), original_manifest);
    assert_eq!(blob_names(&server), original_blobs);
    for blob in &original_blobs {
        let path = server.models_dir.path().join("blobs").join(blob);
        assert_eq!(
            file_digest(&path),
            blob.replacen('-', ":", 1),
            "{blob} is not what its name says"
        );
    }

    // The pulled model runs.
    let (status, body) = server.post(
        "/api/generate",
        &json!({ "model": name, "prompt": "The sky is", "stream": false, "options": { "num_predict": 4 } }),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["eval_count"].as_u64().unwrap() > 0);

    // The CLI: plain progress lines when stderr is not a terminal, exit code 0.
    assert!(server.cli(&["rm", &name]).status.success());
    let out = server.cli(&["pull", "--insecure", &name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("pulling manifest\n"), "{stderr}");
    assert!(stderr.contains("pulling a5fd3b62230a: 253 MB done\n"), "{stderr}");
    assert!(stderr.ends_with("success\n"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "ANSI codes without a terminal: {stderr:?}");
    assert_eq!(std::fs::read(&manifest_path).unwrap(), original_manifest);
}

#[test]
fn basic_auth_uses_configured_credentials_and_names_the_registry_on_failure() {
    let registry = TestRegistry::start_with_basic_auth("tester", "testpass");
    let authority = registry.authority();
    let auth =
        |password: &str| json!({ "auths": { &authority: { "username": "tester", "password": password } } }).to_string();
    let server = TestServer::start_with(&[
        ("HERD_REGISTRIES", &authority),
        ("HERD_REGISTRY_AUTH", &auth("testpass")),
    ]);
    let name = format!("{authority}/herd/gemma3:270m");
    publish(&server, &name);
    assert!(server.cli(&["rm", &name]).status.success());
    let (status, body) = server.post(
        "/api/pull",
        &json!({ "model": name, "insecure": true, "stream": false }),
    );
    assert_eq!((status, body), (200, json!({ "status": "success" })));
    assert_holds_the_weights(&server);

    let anonymous = TestServer::start_with(&[("HERD_REGISTRIES", &authority)]);
    let (status, body) = anonymous.post(
        "/api/pull",
        &json!({ "model": name, "insecure": true, "stream": false }),
    );
    assert_eq!(status, 401, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("unauthorized: registry {authority}")),
        "{error}"
    );
    assert!(error.contains("no credentials are configured"), "{error}");

    let wrong = TestServer::start_with(&[
        ("HERD_REGISTRIES", &authority),
        ("HERD_REGISTRY_AUTH", &auth("wrongpass")),
    ]);
    let (status, body) = wrong.post(
        "/api/pull",
        &json!({ "model": name, "insecure": true, "stream": false }),
    );
    assert_eq!(status, 401, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&authority) && error.contains("refused the credentials of user 'tester'"),
        "{error}"
    );
    let out = wrong.cli(&["pull", "--insecure", &name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
    for log in [server.log(), wrong.log()] {
        assert!(
            !log.contains("testpass") && !log.contains("wrongpass"),
            "a password was logged"
        );
    }
}

/// Reads a pull's stream until the weights' progress passes `fraction`; returns the first
/// completed count seen for them.
fn read_until(reader: &mut impl BufRead, fraction: f64) -> u64 {
    let goal = (model_size() as f64 * fraction) as u64;
    let mut first = None;
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the pull ended before {fraction}"
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        assert!(value.get("error").is_none(), "{value}");
        if value["digest"] == MODEL_DIGEST {
            let completed = value["completed"].as_u64().unwrap();
            first.get_or_insert(completed);
            if completed >= goal {
                return first.unwrap();
            }
        }
    }
}

fn partial_files(dir: &Path) -> Vec<String> {
    tree(dir).into_iter().filter(|p| p.contains("-partial")).collect()
}

#[test]
fn interrupted_pulls_resume_after_a_hang_up_a_dead_registry_and_a_server_kill() {
    let mut registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.authority(), 60_000_000);
    let allowed = publish_behind(&registry, &proxy);
    let name = format!("{}/herd/gemma3:270m", proxy.authority());
    let request = json!({ "model": name, "insecure": true });
    let size = model_size();

    // 1. The client hangs up at a quarter: the download stops, its bytes stay.
    let server = TestServer::start_with(&[("HERD_REGISTRIES", &allowed)]);
    let mut stream = server.open_stream("/api/pull", &request);
    read_until(&mut stream, 0.25);
    drop(stream);
    let mut last = proxy.bytes_served();
    server.wait_for("the download to stop", Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = proxy.bytes_served();
        std::mem::replace(&mut last, now) == now
    });
    assert_eq!(
        partial_files(server.models_dir.path()).len(),
        2,
        "{:?}",
        tree(server.models_dir.path())
    );
    let served_before_hang_up = proxy.bytes_served();

    // 2. The next pull resumes, and the registry dies at half: a clear error, bytes kept.
    let mut stream = server.open_stream("/api/pull", &request);
    let resumed_at = read_until(&mut stream, 0.5);
    // What a hang-up wastes is what was in flight: at most 5% of the model.
    assert!(
        resumed_at as f64 >= served_before_hang_up as f64 - size as f64 * 0.05,
        "resumed at {resumed_at} after {served_before_hang_up} bytes were served"
    );
    registry.kill();
    let rest = remaining_lines(stream);
    let error = rest
        .last()
        .and_then(|l| l["error"].as_str())
        .unwrap_or_else(|| panic!("{rest:?}"));
    assert!(
        error.contains(&proxy.authority()) || error.contains("interrupted"),
        "{error}"
    );
    assert!(!manifest_file(&server, &proxy.authority(), "herd/gemma3", "270m").exists());

    // 3. Registry back; the server is SIGKILLed at three quarters; a new server resumes.
    registry.restart();
    let mut stream = server.open_stream("/api/pull", &request);
    let resumed_at = read_until(&mut stream, 0.75);
    assert!(
        resumed_at >= size * 2 / 5,
        "did not resume: started at {resumed_at} of {size}"
    );
    let models = server.kill_keeping_models();
    drop(stream);
    let server = TestServer::start_in(models, &[("HERD_REGISTRIES", &allowed)]);
    let (status, lines) = server.post_stream("/api/pull", &request);
    assert_eq!(status, 200);
    let first = lines.iter().find(|l| l["digest"] == MODEL_DIGEST).unwrap();
    assert!(first["completed"].as_u64().unwrap() >= size * 3 / 5, "{first}");
    assert_eq!(
        statuses(&lines).last().map(String::as_str),
        Some("success"),
        "{lines:?}"
    );

    // Three interruptions, each losing at most what its eight streams had in flight.
    let served = proxy.bytes_served();
    assert!(
        served as f64 <= size as f64 * 1.10,
        "the registry served {served} bytes for a {size}-byte model"
    );
    assert_holds_the_weights(&server);
    assert!(partial_files(server.models_dir.path()).is_empty());
}

#[test]
fn concurrent_pulls_of_one_model_share_the_download() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.authority(), 150_000_000);
    let allowed = publish_behind(&registry, &proxy);

    let server = TestServer::start_with(&[("HERD_REGISTRIES", &allowed)]);
    let name = format!("{}/herd/gemma3:270m", proxy.authority());
    let started = Instant::now();
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let pulls: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    server.post(
                        "/api/pull",
                        &json!({ "model": name, "insecure": true, "stream": false }),
                    )
                })
            })
            .collect();
        pulls.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!(answer, &(200, json!({ "status": "success" })), "{}", server.log());
    }
    let served = proxy.bytes_served();
    assert!(
        (served as f64) <= model_size() as f64 * 1.05,
        "{served} bytes served for 4 pulls of {} in {:?}",
        model_size(),
        started.elapsed()
    );
    assert_holds_the_weights(&server);
}

/// A manifest in Ollama's layout whose config and one layer are given.
fn manifest_json(config: Value, layers: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config,
        "layers": layers,
    }))
    .unwrap()
}

fn descriptor(media_type: &str, digest: &str, size: Value) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

#[test]
fn crafted_manifests_are_refused_before_anything_is_written() {
    let registry = TestRegistry::start();
    let config = registry.plant_blob("evil/model", br#"{"model_format":"gguf"}"#);
    let config = descriptor("application/vnd.docker.container.image.v1+json", &config, json!(23));
    let model = "application/vnd.ollama.image.model";
    let good = format!("sha256:{}", "ab".repeat(32));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            manifest_json(
                config.clone(),
                json!([descriptor(model, "sha256:../../../../sentinel", json!(5))]),
            ),
            "invalid digest format",
        ),
        (
            "short",
            manifest_json(
                config.clone(),
                json!([descriptor(model, &format!("sha256:{}", "a".repeat(63)), json!(5))]),
            ),
            "invalid digest format",
        ),
        (
            "long",
            manifest_json(
                config.clone(),
                json!([descriptor(model, &format!("sha256:{}", "a".repeat(65)), json!(5))]),
            ),
            "invalid digest format",
        ),
        (
            "suffix",
            manifest_json(
                config.clone(),
                json!([descriptor(model, &format!("{good}/../x"), json!(5))]),
            ),
            "invalid digest format",
        ),
        (
            "sha512",
            manifest_json(
                config.clone(),
                json!([descriptor(model, &format!("sha512:{}", "a".repeat(128)), json!(5))]),
            ),
            "invalid digest format",
        ),
        (
            "empty",
            manifest_json(config.clone(), json!([descriptor(model, "", json!(5))])),
            "invalid digest format",
        ),
        (
            "config",
            manifest_json(
                descriptor(
                    "application/vnd.docker.container.image.v1+json",
                    "sha256:../x",
                    json!(5),
                ),
                json!([descriptor(model, &good, json!(5))]),
            ),
            "invalid digest format in the config",
        ),
        (
            "negative",
            manifest_json(config.clone(), json!([descriptor(model, &good, json!(-1))])),
            "invalid size",
        ),
        (
            "absurd",
            manifest_json(config.clone(), json!([descriptor(model, &good, json!(1u64 << 50))])),
            "absurd size",
        ),
        (
            "nospace",
            manifest_json(
                config.clone(),
                json!([descriptor(model, &good, json!((1u64 << 40) - 1))]),
            ),
            "not enough disk space",
        ),
        (
            "mediatype",
            manifest_json(
                config.clone(),
                json!([descriptor("text/x-shellscript", &good, json!(5))]),
            ),
            "unsupported media type",
        ),
        ("nolayers", manifest_json(config.clone(), json!([])), "no layers"),
        ("nulllayers", manifest_json(config.clone(), Value::Null), "no layers"),
        (
            "noconfig",
            manifest_json(Value::Null, json!([descriptor(model, &good, json!(5))])),
            "no config",
        ),
        (
            "manylayers",
            manifest_json(
                config.clone(),
                Value::Array(vec![descriptor(model, &good, json!(5)); 1001]),
            ),
            "more than 1000",
        ),
    ];
    for (tag, bytes, _) in &cases {
        registry.plant_manifest("evil/model", tag, bytes);
    }
    let server = TestServer::start_with(&[("HERD_REGISTRIES", &registry.authority())]);
    let sentinel = server.models_dir.path().join("sentinel");
    std::fs::write(&sentinel, "keep me").unwrap();
    let before = tree(server.models_dir.path());
    for (tag, _, expected) in &cases {
        let name = format!("{}/evil/model:{tag}", registry.authority());
        let (status, lines) = server.post_stream("/api/pull", &json!({ "model": name, "insecure": true }));
        assert_eq!(status, 200);
        let error = lines
            .last()
            .and_then(|l| l["error"].as_str())
            .unwrap_or_else(|| panic!("{tag}: {lines:?}"));
        assert!(error.contains(expected), "{tag}: {error:?} lacks {expected:?}");
        assert_eq!(tree(server.models_dir.path()), before, "{tag} changed the models dir");
    }
    let (status, body) = server.post(
        "/api/pull",
        &json!({ "model": format!("{}/evil/model:nospace", registry.authority()), "insecure": true, "stream": false }),
    );
    assert_eq!(status, 507, "{body}");
    let (status, _) = server.post(
        "/api/pull",
        &json!({ "model": format!("{}/evil/model:dotdot", registry.authority()), "insecure": true, "stream": false }),
    );
    assert_eq!(status, 502);
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "keep me");
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_discarded_and_no_manifest_is_written() {
    let registry = TestRegistry::start();
    let server = TestServer::start_with(&[("HERD_REGISTRIES", &registry.authority())]);
    let name = format!("{}/herd/gemma3:270m", registry.authority());
    publish(&server, &name);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(manifest_file(&server, &registry.authority(), "herd/gemma3", "270m")).unwrap(),
    )
    .unwrap();
    let template = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.ollama.image.template")
        .expect("a template layer")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // Same length, other bytes: only the digest check can tell.
    let data = registry.blob_data(&template);
    let length = std::fs::metadata(&data).unwrap().len() as usize;
    std::fs::write(&data, "x".repeat(length)).unwrap();

    let fresh = TestServer::start_with(&[("HERD_REGISTRIES", &registry.authority())]);
    let (status, lines) = fresh.post_stream("/api/pull", &json!({ "model": name, "insecure": true }));
    assert_eq!(status, 200);
    let error = lines
        .last()
        .and_then(|l| l["error"].as_str())
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        error.starts_with("digest mismatch, file must be downloaded again: want "),
        "{error}"
    );
    assert!(error.contains(&template), "{error}");
    assert!(!manifest_file(&fresh, &registry.authority(), "herd/gemma3", "270m").exists());
    let blobs = blob_names(&fresh);
    assert!(!blobs.iter().any(|b| b.contains(&template[7..])), "{blobs:?}");
    // It was fetched twice (one automatic retry) before giving up.
    assert!(fresh.log().contains("fetching it again"), "{}", fresh.log());
}

#[test]
fn unknown_models_refused_registries_and_bad_names_get_clear_errors() {
    let registry = TestRegistry::start();
    let server = TestServer::start_with(&[("HERD_REGISTRIES", &registry.authority())]);
    let authority = registry.authority();

    let missing = format!("{authority}/nobody/missing:latest");
    let (status, body) = server.post(
        "/api/pull",
        &json!({ "model": missing, "insecure": true, "stream": false }),
    );
    assert_eq!(status, 404, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("nobody/missing:latest") && error.contains("not found"),
        "{error}"
    );
    let out = server.cli(&["pull", "--insecure", &missing]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found in registry"));

    let (status, body) = server.post(
        "/api/push",
        &json!({ "model": format!("{authority}/a/b:c"), "insecure": true }),
    );
    assert_eq!(status, 404, "{body}");

    let (status, body) = server.post(
        "/api/pull",
        &json!({ "model": format!("http://{authority}/nobody/missing"), "stream": false }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("insecure protocol http"));

    let (status, body) = server.post("/api/pull", &json!({ "model": "10.1.2.3:5000/x/y", "insecure": true }));
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not in HERD_REGISTRIES"));

    let open = TestServer::start();
    for host in [
        "169.254.169.254",
        "127.0.0.1:22",
        "0.0.0.0:6379",
        "localhost:5000",
        "metadata.google.internal",
    ] {
        let (status, body) = open.post(
            "/api/pull",
            &json!({ "model": format!("{host}/x/y"), "insecure": true }),
        );
        assert_eq!(status, 403, "{host}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("registry not allowed"),
            "{body}"
        );
    }
    for bad in ["../../etc/passwd", "a/../../b", "m:../../t", ""] {
        for route in ["/api/pull", "/api/push"] {
            let (status, body) = open.post(route, &json!({ "model": bad }));
            assert_eq!(status, 400, "{route} {bad}: {body}");
        }
    }
}

fn nginx_htpasswd(dir: &Path, user: &str, password: &str) {
    let out = std::process::Command::new("htpasswd")
        .args(["-bc", dir.join("htpasswd").to_str().unwrap(), user, password])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn a_redirect_to_a_blob_store_on_another_host_gets_no_credentials() {
    let registry = TestRegistry::start();
    let publisher = TestServer::start_with(&[("HERD_REGISTRIES", &registry.authority())]);
    publish(&publisher, &format!("{}/herd/gemma3:270m", registry.authority()));
    let (front, store, upstream) = (free_port(), free_port(), registry.authority());
    // The front asks for Basic auth and answers blob GETs with a 307 to a blob store on
    // another host name, as Ollama's registry does.
    let servers = format!(
        r#"
  server {{
    listen 127.0.0.1:{front};
    access_log {{dir}}/front.log auth;
    auth_basic "front";
    auth_basic_user_file {{dir}}/htpasswd;
    location ~ ^/v2/.+/blobs/sha256: {{ return 307 http://localhost:{store}$request_uri; }}
    location / {{ proxy_pass http://{upstream}; }}
  }}
  server {{
    listen 127.0.0.1:{store};
    access_log {{dir}}/store.log auth;
    location / {{ proxy_pass http://{upstream}; }}
  }}"#
    );
    let nginx = TestNginx::start(&servers, |dir| nginx_htpasswd(dir, "tester", "frontpass"));
    let front_authority = format!("127.0.0.1:{front}");
    let auth = json!({ "auths": { &front_authority: { "username": "tester", "password": "frontpass" } } }).to_string();
    let allowed = format!("{front_authority},localhost:{store}");
    let server = TestServer::start_with(&[("HERD_REGISTRIES", &allowed), ("HERD_REGISTRY_AUTH", &auth)]);
    let (status, body) = server.post(
        "/api/pull",
        &json!({ "model": format!("{front_authority}/herd/gemma3:270m"), "insecure": true, "stream": false }),
    );
    assert_eq!(
        (status, body),
        (200, json!({ "status": "success" })),
        "{}",
        server.log()
    );
    assert_holds_the_weights(&server);
    let (front_log, store_log) = (nginx.log("front.log"), nginx.log("store.log"));
    assert!(front_log.contains(" 307 auth=\"Basic "), "{front_log}");
    assert!(
        store_log.contains(&format!("GET /v2/herd/gemma3/blobs/{MODEL_DIGEST}")),
        "{store_log}"
    );
    assert!(
        !store_log.contains("Basic") && !store_log.contains("Bearer"),
        "credentials went to the blob store:\n{store_log}"
    );
}

#[test]
fn a_token_realm_on_another_host_receives_nothing() {
    let (rogue, capture) = (free_port(), free_port());
    let servers = format!(
        r#"
  server {{
    listen 127.0.0.1:{rogue};
    location / {{
      add_header WWW-Authenticate 'Bearer realm="http://localhost:{capture}/token",service="rogue",scope="repository:x/y:pull"' always;
      return 401 '{{"errors":[{{"code":"UNAUTHORIZED","message":"authentication required"}}]}}';
    }}
  }}
  server {{
    listen 127.0.0.1:{capture};
    access_log {{dir}}/capture.log auth;
    location / {{ return 200 '{{"token":"captured"}}'; }}
  }}"#
    );
    let nginx = TestNginx::start(&servers, |_| {});
    let rogue_authority = format!("127.0.0.1:{rogue}");
    let auth = json!({ "auths": { &rogue_authority: { "username": "victim", "password": "secret" } } }).to_string();
    let allowed = format!("{rogue_authority},localhost:{capture}");
    let server = TestServer::start_with(&[("HERD_REGISTRIES", &allowed), ("HERD_REGISTRY_AUTH", &auth)]);
    let (status, body) = server.post(
        "/api/pull",
        &json!({ "model": format!("{rogue_authority}/x/y:latest"), "insecure": true, "stream": false }),
    );
    assert_eq!(status, 502, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("refusing the token realm") && error.contains("not on the registry's host"),
        "{error}"
    );
    assert_eq!(nginx.log("capture.log"), "", "the capture server was contacted");
}

#[test]
fn compressed_bombs_in_manifest_and_token_answers_are_cut_off() {
    let (bomb, token_bomb) = (free_port(), free_port());
    let servers = format!(
        r#"
  server {{
    listen 127.0.0.1:{bomb};
    root {{dir}};
    location ~ /manifests/ {{
      default_type application/vnd.docker.distribution.manifest.v2+json;
      add_header Content-Encoding gzip always;
      try_files /bomb.gz =404;
    }}
  }}
  server {{
    listen 127.0.0.1:{token_bomb};
    root {{dir}};
    location = /token {{
      default_type application/json;
      add_header Content-Encoding gzip always;
      try_files /bomb.gz =404;
    }}
    location / {{
      add_header WWW-Authenticate 'Bearer realm="http://127.0.0.1:{token_bomb}/token",service="bomb"' always;
      return 401 '{{"errors":[{{"code":"UNAUTHORIZED","message":"authentication required"}}]}}';
    }}
  }}"#
    );
    // 256 MiB of zeros in about 256 KiB.
    let _nginx = TestNginx::start(&servers, |dir| {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "head -c 268435456 /dev/zero | gzip -c > {}/bomb.gz",
                dir.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
    });
    let allowed = format!("127.0.0.1:{bomb},127.0.0.1:{token_bomb}");
    let server = TestServer::start_with(&[("HERD_REGISTRIES", &allowed)]);
    for (port, what) in [
        (bomb, "manifest is over 4194304 bytes"),
        (token_bomb, "token response is over 65536 bytes"),
    ] {
        let (status, body) = server.post(
            "/api/pull",
            &json!({ "model": format!("127.0.0.1:{port}/x/y:latest"), "insecure": true, "stream": false }),
        );
        assert_eq!(status, 502, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.starts_with("response too large") && error.contains(what),
            "{error}"
        );
    }
    assert!(
        tree(server.models_dir.path()).is_empty(),
        "{:?}",
        tree(server.models_dir.path())
    );
}

/// The template layer of the Modelfile herd's tests import Gemma with.
fn gemma_template() -> String {
    let modelfile = herd_tests::gemma_modelfile();
    let start = modelfile.find("TEMPLATE \"\"\"").unwrap() + "TEMPLATE \"\"\"".len();
    let end = start + modelfile[start..].find("\"\"\"").unwrap();
    modelfile[start..end].to_string()
}

#[test]
fn a_model_published_in_ollamas_layout_by_other_code_pulls_and_runs() {
    // Published here without herd: blobs and manifest written straight into the registry's
    // storage, in the layout of registry.ollama.ai/library/gemma3:270m.
    let registry = TestRegistry::start();
    let repository = "library/gemma3";
    let weights = std::fs::read(model_path()).unwrap();
    let model = registry.plant_blob(repository, &weights);
    assert_eq!(model, MODEL_DIGEST);
    let template = registry.plant_blob(repository, gemma_template().as_bytes());
    let params = br#"{"stop":["<end_of_turn>"],"temperature":1,"top_k":64,"top_p":0.95}"#;
    let params_digest = registry.plant_blob(repository, params);
    let license = b"Gemma Terms of Use\n\nLast modified: March 24, 2025\n";
    let license_digest = registry.plant_blob(repository, license);
    let config = serde_json::to_vec(&json!({
        "model_format": "gguf", "model_family": "gemma3", "model_families": ["gemma3"],
        "model_type": "268.10M", "file_type": "Q4_K_M", "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [&model, &template, &license_digest, &params_digest] },
    }))
    .unwrap();
    let config_digest = registry.plant_blob(repository, &config);
    let layer = |media: &str, digest: &str, size: usize| descriptor(media, digest, json!(size));
    let manifest = manifest_json(
        layer(
            "application/vnd.docker.container.image.v1+json",
            &config_digest,
            config.len(),
        ),
        json!([
            layer("application/vnd.ollama.image.model", &model, weights.len()),
            layer(
                "application/vnd.ollama.image.template",
                &template,
                gemma_template().len()
            ),
            layer("application/vnd.ollama.image.license", &license_digest, license.len()),
            layer("application/vnd.ollama.image.params", &params_digest, params.len()),
        ]),
    );
    registry.plant_manifest(repository, "270m", &manifest);

    let server = TestServer::start_with(&[("HERD_REGISTRIES", &registry.authority())]);
    let name = format!("{}/library/gemma3:270m", registry.authority());
    let (status, body) = server.post(
        "/api/pull",
        &json!({ "model": name, "insecure": true, "stream": false }),
    );
    assert_eq!(
        (status, body),
        (200, json!({ "status": "success" })),
        "{}",
        server.log()
    );
    assert_eq!(
        std::fs::read(manifest_file(&server, &registry.authority(), "library/gemma3", "270m")).unwrap(),
        manifest
    );
    let (status, show) = server.post("/api/show", &json!({ "model": name }));
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["details"]["family"], "gemma3");
    assert_eq!(show["license"], String::from_utf8_lossy(license).as_ref());
    assert!(show["parameters"].as_str().unwrap().contains("top_k"), "{show}");
    let (status, body) = server.post(
        "/api/chat",
        &json!({ "model": name, "stream": false, "options": { "num_predict": 4 },
                 "messages": [{ "role": "user", "content": "Hello" }] }),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["eval_count"].as_u64().unwrap() > 0, "{body}");
}

#[test]
fn connections_dropped_mid_pull_are_retried_with_ranges() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(&registry.authority(), 80_000_000);
    let allowed = publish_behind(&registry, &proxy);

    let server = TestServer::start_with(&[("HERD_REGISTRIES", &allowed)]);
    let mut stream = server.open_stream(
        "/api/pull",
        &json!({ "model": format!("{}/herd/gemma3:270m", proxy.authority()), "insecure": true }),
    );
    read_until(&mut stream, 0.3);
    proxy.cut_connections();
    let rest = remaining_lines(stream);
    assert_eq!(statuses(&rest).last().map(String::as_str), Some("success"), "{rest:?}");
    assert!(server.log().contains("chunk failed, retrying"), "{}", server.log());
    assert_holds_the_weights(&server);
    let served = proxy.bytes_served();
    assert!((served as f64) <= model_size() as f64 * 1.05, "{served} bytes served");
}

#[test]
fn a_slow_link_is_fetched_over_several_connections() {
    let registry = TestRegistry::start();
    // 20 MB/s on each connection, as from a far registry: the weights would take 13 s on one.
    let proxy = FaultProxy::start_per_connection(&registry.authority(), 20_000_000);
    let allowed = publish_behind(&registry, &proxy);

    let server = TestServer::start_with(&[("HERD_REGISTRIES", &allowed)]);
    let (status, body) = server.post(
        "/api/pull",
        &json!({ "model": format!("{}/herd/gemma3:270m", proxy.authority()), "insecure": true, "stream": false }),
    );
    assert_eq!((status, body), (200, json!({ "status": "success" })));
    assert_holds_the_weights(&server);
    // One more each 0.2 s while the pull receives less than 128 MiB/s: 8 within 1.4 s. (How
    // many a fast link gets depends on the machine's load; `scripts/bench` measures that.)
    assert!(
        proxy.peak_heavy_connections() >= 4,
        "{} connections at once carried the weights",
        proxy.peak_heavy_connections()
    );
    assert!(
        proxy.bytes_served() <= model_size() + (1 << 20),
        "{} bytes served",
        proxy.bytes_served()
    );
}

#[test]
fn a_full_disk_fails_the_pull_quickly_and_the_pull_resumes_once_there_is_room() {
    let registry = TestRegistry::start();
    // Slow enough (60 MB/s) that the disk can fill while the weights arrive.
    let proxy = FaultProxy::start(&registry.authority(), 60_000_000);
    let allowed = publish_behind(&registry, &proxy);
    let name = format!("{}/herd/gemma3:270m", proxy.authority());
    let pull = |server: &TestServer| {
        server.post(
            "/api/pull",
            &json!({ "model": name, "insecure": true, "stream": false }),
        )
    };

    // Too small from the start (the weights are 253 MB): refused once the manifest is read,
    // before any blob is fetched.
    let disk = SmallDisk::new(100);
    let server = TestServer::start_in(
        tempfile::tempdir_in(disk.mount.path()).unwrap(),
        &[("HERD_REGISTRIES", &allowed)],
    );
    let (status, body) = pull(&server);
    assert_eq!(status, 507, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not enough disk space"),
        "{body}"
    );
    assert!(proxy.bytes_served() < 64 << 10, "{} bytes served", proxy.bytes_served());
    drop(server);
    drop(disk);

    // Room at the start, then something else fills the disk mid-pull.
    let disk = SmallDisk::new(400);
    let server = TestServer::start_in(
        tempfile::tempdir_in(disk.mount.path()).unwrap(),
        &[("HERD_REGISTRIES", &allowed)],
    );
    let filler = disk.mount.path().join("filler");
    let (status, body) = std::thread::scope(|scope| {
        let pulling = scope.spawn(|| pull(&server));
        std::thread::sleep(Duration::from_secs(1));
        // 250 MB more cannot fit beside the partial: whatever lands first, the pull must fail.
        let _ = std::fs::write(&filler, vec![1u8; 250 << 20]);
        let failed_at = Instant::now();
        let answer = pulling.join().unwrap();
        assert!(
            failed_at.elapsed() < Duration::from_secs(5),
            "took {:?}",
            failed_at.elapsed()
        );
        answer
    });
    assert!(status >= 500, "{status} {body}");
    assert!(body["error"].as_str().unwrap().contains("no space left"), "{body}");
    // No half blob in the store and no manifest: only the partial that the next pull resumes.
    assert!(!blob_names(&server).iter().any(|b| b == &MODEL_DIGEST.replace(':', "-")));
    assert!(!manifest_file(&server, &proxy.authority(), "herd/gemma3", "270m").exists());
    assert_eq!(server.get("/api/tags").1["models"], json!([]));

    // Room again: the same server pulls, resuming what it had, and holds the weights exactly.
    std::fs::remove_file(&filler).unwrap();
    let before = proxy.bytes_served();
    let (status, body) = pull(&server);
    assert_eq!(
        (status, body),
        (200, json!({ "status": "success" })),
        "{}",
        server.log()
    );
    assert!(
        proxy.bytes_served() - before < model_size(),
        "the second pull started over"
    );
    assert_holds_the_weights(&server);
}

#[test]
fn bearer_tokens_from_a_token_server_authorise_push_and_pull_and_a_missing_scope_is_reported() {
    let tokens = TokenServer::start(&[("alice", "alicepass", &["pull", "push"]), ("bob", "bobpass", &["pull"])]);
    let registry = TestRegistry::start_with_token_auth(&tokens);
    let authority = registry.authority();
    // The realm is on the registry's host, another port: loopback needs naming either way.
    let allowed = format!(
        "{authority},{}",
        tokens.realm().trim_start_matches("http://").trim_end_matches("/token")
    );
    let auth = |user: &str, password: &str| {
        json!({ "auths": { &authority: { "username": user, "password": password } } }).to_string()
    };
    let alice = TestServer::start_with(&[
        ("HERD_REGISTRIES", &allowed),
        ("HERD_REGISTRY_AUTH", &auth("alice", "alicepass")),
    ]);
    let name = format!("{authority}/herd/gemma3:270m");
    publish(&alice, &name);
    assert!(alice.cli(&["rm", &name]).status.success());
    let (status, body) = alice.post(
        "/api/pull",
        &json!({ "model": name, "insecure": true, "stream": false }),
    );
    assert_eq!((status, body), (200, json!({ "status": "success" })), "{}", alice.log());
    assert_holds_the_weights(&alice);

    // bob may pull, not push: the registry's insufficient_scope is reported once, not retried.
    let bob = TestServer::start_with(&[
        ("HERD_REGISTRIES", &allowed),
        ("HERD_REGISTRY_AUTH", &auth("bob", "bobpass")),
    ]);
    let (status, body) = bob.post(
        "/api/pull",
        &json!({ "model": name, "insecure": true, "stream": false }),
    );
    assert_eq!((status, body), (200, json!({ "status": "success" })), "{}", bob.log());
    let before = tokens.requests();
    let theirs = format!("{authority}/bob/gemma3:270m");
    let (status, _) = bob.post("/api/copy", &json!({ "source": name, "destination": theirs }));
    assert_eq!(status, 200);
    let (status, body) = bob.post(
        "/api/push",
        &json!({ "model": theirs, "insecure": true, "stream": false }),
    );
    // Authenticated but not allowed: 403.
    assert_eq!(status, 403, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("insufficient_scope") && error.contains(&authority),
        "{error}"
    );
    assert!(
        tokens.requests() - before <= 4,
        "{} token requests",
        tokens.requests() - before
    );

    // Without credentials the token server refuses, and herd says so naming the registry.
    let anonymous = TestServer::start_with(&[("HERD_REGISTRIES", &allowed)]);
    let (status, body) = anonymous.post(
        "/api/pull",
        &json!({ "model": name, "insecure": true, "stream": false }),
    );
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&authority), "{body}");
    for log in [alice.log(), bob.log(), anonymous.log()] {
        assert!(
            !log.contains("alicepass") && !log.contains("bobpass"),
            "a password was logged"
        );
    }
}

#[test]
fn a_delete_during_a_pull_keeps_the_blobs_the_pull_found_present() {
    let registry = TestRegistry::start();
    // Slow, so the pull's small layers take seconds after it has found the weights present.
    let proxy = FaultProxy::start(&registry.authority(), 400);
    let allowed = format!("{},{}", registry.authority(), proxy.authority());
    let publisher = TestServer::start_with(&[("HERD_REGISTRIES", &allowed)]);
    let published = format!("{}/herd/gemma3:system", registry.authority());
    publisher.import_model_with(&published, "SYSTEM You answer in French.");
    let (status, body) = publisher.post(
        "/api/push",
        &json!({ "model": published, "insecure": true, "stream": false }),
    );
    assert_eq!((status, body), (200, json!({ "status": "success" })));

    // The local model holds the same weights; the pull skips them.
    let server = TestServer::start_with(&[("HERD_REGISTRIES", &allowed)]);
    server.import_model("local:1");
    let name = format!("{}/herd/gemma3:system", proxy.authority());
    let mut stream = server.open_stream("/api/pull", &json!({ "model": name, "insecure": true }));
    read_until(&mut stream, 1.0);
    // The weights were found present; their only manifest goes away while the pull goes on.
    let deleted = server
        .http
        .delete(server.url("/api/delete"))
        .json(&json!({ "model": "local:1" }))
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let rest = remaining_lines(stream);
    assert_eq!(rest.last(), Some(&json!({ "status": "success" })), "{rest:?}");
    assert_holds_the_weights(&server);
    let (status, shown) = server.post("/api/show", &json!({ "model": name }));
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["system"], "You answer in French.");
}
