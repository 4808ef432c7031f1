//! Every attack class of issue 6 against one real server whose models directory sits beside
//! files it must never touch: crafted manifest digests from a real registry, traversal names
//! and digests, a file-existence probe through create, oversized bodies, a rebinding Host
//! header, missing and wrong API keys, and a fuzzed GGUF corpus. Each answer's status and
//! error text are checked; afterwards the files beside the store are unchanged, no error
//! names a server path, and a normal generation still works. (bad_input.rs, registry.rs and
//! access.rs test each class in more depth.)

use std::path::Path;

use herd_tests::registry::TestRegistry;
use herd_tests::{generate_body, tree, TestServer, MODEL};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// A directory holding the models directory and files beside it that must stay as they are.
struct Neighbourhood {
    parent: tempfile::TempDir,
}

impl Neighbourhood {
    fn new() -> Self {
        let parent = tempfile::tempdir().unwrap();
        std::fs::write(parent.path().join("sentinel"), "keep me").unwrap();
        std::fs::create_dir(parent.path().join("secrets")).unwrap();
        std::fs::write(parent.path().join("secrets/key.gguf"), b"GGUF not yours").unwrap();
        Self { parent }
    }

    fn models_dir(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(self.parent.path()).unwrap()
    }

    /// Every file beside the models directories, with its content.
    fn outside(&self) -> Vec<(String, Vec<u8>)> {
        tree(self.parent.path())
            .into_iter()
            .filter(|path| !path.starts_with(".tmp"))
            .map(|path| {
                let content = std::fs::read(self.parent.path().join(&path)).unwrap();
                (path, content)
            })
            .collect()
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The status and JSON body of any request.
fn send(request: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let response = request.send().expect("request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// Asserts the error of an answer: its status, that it holds `expected`, and that it names
/// none of the `private` server paths.
fn assert_refused(what: &str, (status, body): (u16, Value), code: u16, expected: &str, private: &[&Path]) {
    assert_eq!(status, code, "{what}: {body}");
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error in {body}"));
    assert!(error.contains(expected), "{what}: {error:?} lacks {expected:?}");
    for path in private {
        assert!(
            !error.contains(&*path.to_string_lossy()),
            "{what}: {error:?} names a server path"
        );
    }
}

/// Variants of a small valid GGUF: bytes flipped, counts and lengths made huge, cut short.
fn fuzzed_ggufs() -> Vec<Vec<u8>> {
    let seed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/gguf/tiny-v3.gguf")).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut corpus = vec![seed.clone()];
    for _ in 0..60 {
        let mut bytes = seed.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        corpus.push(bytes);
    }
    // The version, tensor count, metadata count and first key length (offsets 4, 8, 16, 24).
    for offset in [4, 8, 16, 24] {
        for value in [u64::MAX, 1 << 40, 0x7fff_ffff] {
            let mut bytes = seed.clone();
            let width = if offset == 4 { 4 } else { 8 };
            bytes[offset..offset + width].copy_from_slice(&value.to_le_bytes()[..width]);
            corpus.push(bytes);
        }
    }
    for len in [0, 3, 4, 8, 24, 40, seed.len() / 2, seed.len() - 1] {
        corpus.push(seed[..len].to_vec());
    }
    corpus
}

#[test]
fn every_attack_is_refused_and_nothing_beside_the_store_changes() {
    let place = Neighbourhood::new();
    let registry = TestRegistry::start();
    let config = registry.plant_blob("evil/model", br#"{"model_format":"gguf"}"#);
    let crafted = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 23},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:../../../sentinel", "size": 7}],
    }))
    .unwrap();
    registry.plant_manifest("evil/model", "latest", &crafted);

    let models = place.models_dir();
    let models_path = models.path().to_path_buf();
    let server = TestServer::start_in(models, &[("HERD_REGISTRIES", &registry.authority())]);
    server.import_model(MODEL);
    let before = place.outside();
    // Errors may echo what the client sent, never where the server keeps things.
    let private = [models_path.as_path()];
    let http = server.http();
    let url = |path: &str| server.url(path);

    // A manifest from a real registry whose layer digest climbs out of blobs/.
    let evil = format!("{}/evil/model", registry.authority());
    let (status, body) = send(
        http.post(url("/api/pull"))
            .json(&json!({"model": evil, "insecure": true, "stream": false})),
    );
    assert_refused(
        "crafted manifest",
        (status, body),
        502,
        "invalid digest format",
        &private,
    );

    // Traversal in names and digests.
    let sentinel = place.parent.path().join("sentinel");
    for name in [
        "../../sentinel",
        "a/../../../sentinel",
        "x:../../y",
        &sentinel.display().to_string(),
    ] {
        for (path, body) in [
            ("/api/show", json!({"model": name})),
            ("/api/pull", json!({"model": name, "stream": false})),
            ("/api/push", json!({"model": name, "stream": false})),
            ("/api/create", json!({"model": name, "from": MODEL, "stream": false})),
            ("/api/copy", json!({"source": MODEL, "destination": name})),
            ("/api/copy", json!({"source": name, "destination": "copied"})),
        ] {
            let answer = send(http.post(url(path)).json(&body));
            assert_refused(&format!("{path} {name:?}"), answer, 400, "invalid", &private);
        }
        let answer = send(http.delete(url("/api/delete")).json(&json!({"model": name})));
        assert_refused(&format!("delete {name:?}"), answer, 400, "invalid", &private);
    }
    for digest in [
        "sha256:..%2F..%2Fsentinel",
        "sha256-..%2F..%2Fsentinel",
        "..%2F..%2Fsentinel",
    ] {
        let (status, _) = send(http.head(url(&format!("/api/blobs/{digest}"))));
        assert_eq!(status, 400, "HEAD {digest}");
        let answer = send(http.post(url(&format!("/api/blobs/{digest}"))).body("x"));
        assert_refused(&format!("upload {digest}"), answer, 400, "invalid", &private);
    }
    let answer = send(
        http.post(url("/api/create"))
            .json(&json!({"model": "x", "files": {"../../sentinel": sha256(b"x")}})),
    );
    assert_refused("files with ..", answer, 400, "file path must be relative", &private);

    // Create from server paths: refused alike whether the file exists or not (no oracle).
    let secret = place.parent.path().join("secrets/key.gguf");
    let missing = place.parent.path().join("secrets/none.gguf");
    let probe = |path: &Path| {
        send(
            http.post(url("/api/create"))
                .json(&json!({"model": "probe", "from": path, "stream": false})),
        )
    };
    let (exists, absent) = (probe(&secret), probe(&missing));
    assert_eq!(exists, absent, "create tells an existing file from a missing one");
    assert_refused(
        "create from a server path",
        exists,
        400,
        "from a path on the server is disabled",
        &private,
    );

    // Oversized bodies.
    let huge = vec![b' '; 2 << 20];
    let answer = http.post(url("/api/pull")).body(huge).send().expect("request");
    // The rest of the body goes unread: the connection must not be reused after the answer.
    assert_eq!(answer.headers()["connection"], "close", "{:?}", answer.headers());
    let answer = (answer.status().as_u16(), answer.json().unwrap_or(Value::Null));
    assert_refused("oversized pull body", answer, 413, "request body larger than", &private);

    // DNS rebinding: a web page's name resolving to 127.0.0.1.
    let answer = send(http.get(url("/api/tags")).header("host", "attacker.example.com"));
    assert_refused(
        "rebinding Host",
        answer,
        403,
        "is not allowed on a loopback listener",
        &private,
    );

    // A fuzzed GGUF corpus through the blob upload and create.
    for (i, gguf) in fuzzed_ggufs().into_iter().enumerate() {
        let digest = sha256(&gguf);
        let (status, body) = send(http.post(url(&format!("/api/blobs/{digest}"))).body(gguf));
        assert_eq!(status, 201, "upload {i}: {body}");
        let name = format!("fuzzed-{i}");
        let create = json!({"model": name, "files": {"model.gguf": digest}, "stream": false});
        let (status, body) = send(http.post(url("/api/create")).json(&create));
        if status == 200 {
            let (status, _) = send(http.delete(url("/api/delete")).json(&json!({"model": name})));
            assert_eq!(status, 200);
        } else {
            // Whatever the flaw (a bad header, no architecture...), a 400 that says it.
            assert_refused(&format!("fuzzed GGUF {i}"), (status, body), 400, "", &private);
        }
    }

    // The server is well, and nothing beside its store changed.
    let (status, body) = server.post(
        "/api/generate",
        &generate_body("hi", json!({"stream": false, "options": {"num_predict": 2}})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(place.outside(), before, "files beside the models directory changed");
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "keep me");
}

#[test]
fn missing_and_wrong_api_keys_are_refused_before_anything_runs() {
    let place = Neighbourhood::new();
    let models = place.models_dir();
    let models_path = models.path().to_path_buf();
    let server = TestServer::start_in(models, &[("HERD_API_KEY", "right-key-0123456789")]);
    let before = place.outside();
    let private = [place.parent.path(), models_path.as_path()];
    let http = server.http();
    for key in [
        None,
        Some("wrong-key-0123456789"),
        Some(""),
        Some("right-key-0123456789x"),
    ] {
        for (method, path) in [
            ("POST", "/api/pull"),
            ("DELETE", "/api/delete"),
            ("POST", "/api/chat"),
            ("GET", "/api/tags"),
        ] {
            let mut request = http
                .request(method.parse().unwrap(), server.url(path))
                .json(&json!({"model": "../../sentinel"}));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let answer = send(request);
            assert_refused(
                &format!("{method} {path} with {key:?}"),
                answer,
                401,
                "unauthorized",
                &private,
            );
        }
    }
    let (status, _) = send(http.get(server.url("/api/tags")).bearer_auth("right-key-0123456789"));
    assert_eq!(status, 200);
    assert_eq!(place.outside(), before);
    assert_eq!(
        tree(&models_path),
        Vec::<String>::new(),
        "a refused request wrote to the store"
    );
}

/// CPU time (user + system) the process has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn create_from_devices_fifos_and_directories_fails_at_once_even_with_local_paths_allowed() {
    let place = Neighbourhood::new();
    let fifo = place.parent.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let server = TestServer::start_in(place.models_dir(), &[("HERD_ALLOW_LOCAL_PATHS", "1")]);
    let cpu_before = cpu_seconds(server.pid());
    let cases = [
        ("/dev/random", "is not a regular file"),
        ("/dev/zero", "is not a regular file"),
        (fifo.to_str().unwrap(), "is not a regular file"),
        ("/tmp", "is not a regular file"),
        // A regular file of size 0 to stat, whatever it would read: refused unread.
        ("/proc/self/environ", "is not a valid GGUF model"),
    ];
    for (from, expected) in cases {
        let started = std::time::Instant::now();
        let answer = send(
            server
                .http()
                .post(server.url("/api/create"))
                .json(&json!({"model": "device", "from": from, "stream": false})),
        );
        assert_refused(&format!("FROM {from}"), answer, 400, expected, &[]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{from}: {:?}",
            started.elapsed()
        );
    }
    let spent = cpu_seconds(server.pid()) - cpu_before;
    assert!(spent < 0.5, "{spent} s of CPU spent refusing");
    let (status, tags) = server.get("/api/tags");
    assert_eq!((status, &tags), (200, &json!({"models": []})));
}
