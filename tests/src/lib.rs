//! Shared helpers for herd's integration tests: start the real `herd serve` on an ephemeral
//! port with a temp models dir, import the real Gemma 3 270M GGUF, and talk HTTP to it.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod registry;

/// An NDJSON response being read line by line.
pub type StreamReader = BufReader<reqwest::blocking::Response>;

/// The name the tests import the real model under.
pub const MODEL: &str = "gemma3:270m";

/// Directory holding the `herd` and `herd-runner` binaries under test.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HERD_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<this test> -> target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// Path of one binary under test; fails loudly if it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not built: run `cargo build --release --bins` first",
        path.display()
    );
    path
}

/// The real model: `HERD_TEST_MODEL`, or where `scripts/fetch-model` puts it.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("HERD_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/herd/models/gemma-3-270m-q4_k_m.gguf")
        });
    assert!(
        path.is_file(),
        "the real model is missing at {}: run scripts/fetch-model",
        path.display()
    );
    path
}

/// The Modelfile that imports the real model as Ollama's library publishes it.
pub fn gemma_modelfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gemma3-270m.Modelfile"))
        .expect("scripts/gemma3-270m.Modelfile")
}

/// A running `herd serve` with its own temp models dir; killed on drop.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The models dir (`HERD_MODELS`).
    pub models_dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    /// Reusable HTTP client.
    pub http: reqwest::blocking::Client,
}

impl TestServer {
    /// Starts a server with default settings.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra environment variables.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let models_dir = tempfile::tempdir().expect("temp models dir");
        Self::start_in(models_dir, env)
    }

    /// Starts a server on an existing models dir.
    pub fn start_in(models_dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary("herd"));
        command
            .arg("serve")
            .env_remove("OLLAMA_HOST")
            .env_remove("OLLAMA_MODELS")
            .env("HERD_HOST", "127.0.0.1:0")
            .env("HERD_MODELS", models_dir.path())
            .env("HERD_RUNNER", binary("herd-runner"))
            .env("HERD_LOG", "info,herd::runner=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let mut child = spawn_from_lasting_thread(command).expect("spawn herd serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    // A text or a JSON log line: the address ends at a space or quote.
                    if let Some(addr) = line.split("listening on ").nth(1) {
                        let addr = addr
                            .split(|c: char| c == '"' || c.is_whitespace())
                            .next()
                            .unwrap_or_default();
                        let _ = addr_tx.send(addr.to_string());
                    }
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("herd serve did not start:\n{}", log.lock().unwrap());
        });
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap();
        Self {
            child,
            base: format!("http://{addr}"),
            models_dir,
            log,
            http,
        }
    }

    /// Starts a server and imports the real model as [`MODEL`] through the CLI.
    pub fn with_model() -> Self {
        let server = Self::start();
        server.import_model(MODEL);
        server
    }

    /// Full URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the server to exit on its own and returns how it exited; panics after
    /// `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for herd serve") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "herd serve did not exit within {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens `n` streamed generations of up to `num_predict` tokens, each with its own
    /// prompt, and reads the first line of each (a token, so every one is decoding).
    pub fn open_streams(&self, n: usize, num_predict: u32) -> Vec<StreamReader> {
        (0..n)
            .map(|i| {
                let body = generate_body(
                    &format!("Story {i}: once upon a time"),
                    json!({"options": {"num_predict": num_predict}}),
                );
                let mut reader = self.open_stream("/api/generate", &body);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let first: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(first["done"], false, "{first}");
                reader
            })
            .collect()
    }

    /// Runs the `herd` CLI against this server.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary("herd"))
            .args(args)
            .env("HERD_HOST", self.base.trim_start_matches("http://"))
            .output()
            .expect("run herd")
    }

    /// Imports the real model under `name` with `herd create -f Modelfile`.
    pub fn import_model(&self, name: &str) {
        self.import_model_with(name, "");
    }

    /// Imports the real model under `name` with extra Modelfile lines (`PARAMETER ...`).
    pub fn import_model_with(&self, name: &str, extra_lines: &str) {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(model_path(), dir.path().join("gemma-3-270m-q4_k_m.gguf")).unwrap();
        std::fs::write(dir.path().join("Modelfile"), gemma_modelfile() + "\n" + extra_lines).unwrap();
        let modelfile = dir.path().join("Modelfile");
        let out = self.cli(&["create", name, "-f", modelfile.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "herd create failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Creates `name` from the model `from` with a template from `tests/data/<template_file>`.
    pub fn create_with_template(&self, name: &str, from: &str, template_file: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(template_file);
        let template = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (status, body) = self.post(
            "/api/create",
            &json!({ "model": name, "from": from, "template": template, "stream": false }),
        );
        assert_eq!(status, 200, "{body}");
    }

    /// POSTs JSON and returns the status and the parsed body (`Value::Null` if empty).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.http.post(self.url(path)).json(body).send().expect("request");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POSTs raw bytes with a JSON content type.
    pub fn post_raw(&self, path: &str, body: &'static [u8]) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// The names `/api/tags` lists.
    pub fn model_names(&self) -> Vec<String> {
        let (status, tags) = self.get("/api/tags");
        assert_eq!(status, 200, "{tags}");
        tags["models"]
            .as_array()
            .expect("models")
            .iter()
            .map(|m| m["name"].as_str().expect("name").to_string())
            .collect()
    }

    /// The HTTP client, for requests whose headers a test reads.
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// GETs JSON.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().expect("request");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POSTs a streaming request and returns the status and every NDJSON line.
    pub fn post_stream(&self, path: &str, body: &Value) -> (u16, Vec<Value>) {
        let response = self.http.post(self.url(path)).json(body).send().expect("request");
        let status = response.status().as_u16();
        let lines = BufReader::new(response)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}")))
            .collect();
        (status, lines)
    }

    /// Opens a streaming request and hands back the reader, to read a few lines and hang up.
    pub fn open_stream(&self, path: &str, body: &Value) -> StreamReader {
        let response = self.http.post(self.url(path)).json(body).send().expect("request");
        assert_eq!(response.status().as_u16(), 200);
        BufReader::new(response)
    }

    /// Pids of this server's runner processes.
    pub fn runner_pids(&self) -> Vec<u32> {
        child_pids(self.pid())
            .into_iter()
            .filter(|pid| process_name(*pid).as_deref() == Some("herd-runner"))
            .collect()
    }

    /// SIGKILLs the server and hands back its models dir, to start another server on it.
    pub fn kill_keeping_models(mut self) -> tempfile::TempDir {
        let models_dir = std::mem::replace(&mut self.models_dir, tempfile::tempdir().unwrap());
        let _ = self.child.kill();
        let _ = self.child.wait();
        models_dir
    }

    /// Waits until `check` holds, or panics after `timeout` with `what`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` from one thread that lives as long as the test process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process:
/// a server shared by several tests (a `OnceLock`) must not die with the test that started it.
/// Makes a spawned process die with the test (SIGKILL on parent death).
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl only; the child dies with the test process, and its children with it.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGKILL)).map_err(std::io::Error::from)
        });
    }
}

pub(crate) fn spawn_from_lasting_thread(command: Command) -> std::io::Result<Child> {
    type Job = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut command, reply) in rx {
                let _ = reply.send(command.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((command, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

/// Direct children of `pid`, from /proc.
pub fn child_pids(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return children;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    children
}

/// The short name of a process, if it exists.
pub fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Seconds from now until an RFC 3339 time (`expires_at`); negative when it has passed.
pub fn seconds_until(rfc3339: &str) -> i64 {
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap_or_else(|e| panic!("{rfc3339}: {e}"));
    at.timestamp() - chrono::Utc::now().timestamp()
}

/// Whether `pid` has exited: gone, or a zombie not yet reaped.
pub fn has_exited(pid: u32) -> bool {
    process_name(pid).is_none() || is_zombie(pid)
}

/// Whether `pid` has exited and its parent has reaped it: gone from the process table, not
/// left a zombie. What a live server must do for each runner it stops or loses.
pub fn is_reaped(pid: u32) -> bool {
    process_name(pid).is_none()
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("kill");
}

/// The remaining lines of an NDJSON stream, parsed, until it ends.
pub fn remaining_lines(reader: impl BufRead) -> Vec<Value> {
    reader
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Whether `pid` is a zombie (exited but not reaped).
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// A chat request with deterministic sampling.
pub fn chat_body(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": content }],
        "options": { "temperature": 0, "seed": 42, "num_predict": 24 },
    });
    merge(&mut body, extra);
    body
}

/// A generate request with deterministic sampling.
pub fn generate_body(prompt: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "prompt": prompt,
        "options": { "temperature": 0, "seed": 42, "num_predict": 24 },
    });
    merge(&mut body, extra);
    body
}

/// Deep-merges `extra` into `base` (objects merged, everything else replaced).
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// Every file under `dir`, relative, sorted (to prove nothing was written elsewhere); the
/// server's lock on its models directory is left out.
pub fn tree(dir: &Path) -> Vec<String> {
    /// The lock `herd serve` holds on its models directory.
    const SERVE_LOCK: &str = ".herd-serve.lock";
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.file_name().is_some_and(|n| n == SERVE_LOCK) && path.parent() == Some(root) {
                // The running server's claim on the directory, not model data.
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Reads a whole response body, for error checks.
pub fn read_all(mut reader: impl Read) -> String {
    let mut s = String::new();
    let _ = reader.read_to_string(&mut s);
    s
}

/// A metadata value of a GGUF file [`write_gguf`] writes.
pub enum GgufValue<'a> {
    /// `u32`.
    U32(u32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// A string.
    Str(&'a str),
    /// An array of `f32`.
    F32s(&'a [f32]),
}

/// One F32 tensor of a GGUF file.
pub struct GgufTensor {
    /// Tensor name.
    pub name: String,
    /// Dimensions in GGUF order: the fastest-varying first (numpy's shape reversed).
    pub dims: Vec<u64>,
    /// Every value is this one, or, when `random`, pseudo-random in [-value, value].
    pub value: f32,
    /// Whether the values are pseudo-random.
    pub random: bool,
}

impl GgufTensor {
    /// A tensor of pseudo-random values in [-scale, scale], the same on every run.
    pub fn random(name: impl Into<String>, dims: &[u64], scale: f32) -> Self {
        Self {
            name: name.into(),
            dims: dims.to_vec(),
            value: scale,
            random: true,
        }
    }

    /// A tensor of one repeated value.
    pub fn filled(name: impl Into<String>, dims: &[u64], value: f32) -> Self {
        Self {
            name: name.into(),
            dims: dims.to_vec(),
            value,
            random: false,
        }
    }
}

/// Writes a GGUF v3 file of `metadata` and F32 `tensors`.
pub fn write_gguf(path: &Path, metadata: &[(&str, GgufValue)], tensors: &[GgufTensor]) {
    const ALIGNMENT: usize = 32;
    const GGML_F32: u32 = 0;
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move |scale: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    };
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        string(&mut out, key);
        match value {
            GgufValue::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            GgufValue::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            GgufValue::Bool(v) => {
                out.extend(7u32.to_le_bytes());
                out.push(u8::from(*v));
            }
            GgufValue::Str(v) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, v);
            }
            GgufValue::F32s(values) => {
                out.extend(9u32.to_le_bytes());
                out.extend(6u32.to_le_bytes());
                out.extend((values.len() as u64).to_le_bytes());
                for v in *values {
                    out.extend(v.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0u64;
    for tensor in tensors {
        string(&mut out, &tensor.name);
        out.extend((tensor.dims.len() as u32).to_le_bytes());
        for dim in &tensor.dims {
            out.extend(dim.to_le_bytes());
        }
        out.extend(GGML_F32.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (tensor.dims.iter().product::<u64>() * 4).next_multiple_of(ALIGNMENT as u64);
    }
    out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
    for tensor in tensors {
        for _ in 0..tensor.dims.iter().product::<u64>() {
            let value = if tensor.random {
                random(tensor.value)
            } else {
                tensor.value
            };
            out.extend(value.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
    }
    std::fs::write(path, out).expect("write the GGUF file");
}

/// Writes a LoRA adapter GGUF as llama.cpp reads one (`general.type` `adapter`, `adapter.type`
/// `lora`, F32 `<tensor>.lora_a` of `[n_in, rank]` and `<tensor>.lora_b` of `[rank, n_out]`),
/// with pseudo-random values of magnitude `scale`: a real adapter file for a base model whose
/// tensor shapes the caller names.
pub fn write_lora_adapter(path: &Path, architecture: &str, targets: &[(String, u64, u64)], rank: u64, scale: f32) {
    let tensors: Vec<GgufTensor> = targets
        .iter()
        .flat_map(|(name, n_in, n_out)| {
            [
                GgufTensor::random(format!("{name}.lora_a"), &[*n_in, rank], scale),
                GgufTensor::random(format!("{name}.lora_b"), &[rank, *n_out], scale),
            ]
        })
        .collect();
    let metadata = [
        ("general.architecture", GgufValue::Str(architecture)),
        ("general.type", GgufValue::Str("adapter")),
        ("adapter.type", GgufValue::Str("lora")),
        ("adapter.lora.alpha", GgufValue::F32(rank as f32)),
    ];
    write_gguf(path, &metadata, &tensors);
}

/// Image tokens the projector of [`write_vision_projector`] makes of any image: 56 x 56
/// pixels in 14 x 14 patches, pooled 2 x 2.
pub const PROJECTOR_IMAGE_TOKENS: u64 = 4;

/// Writes a vision projector GGUF (an mmproj file, architecture `clip`, as llama.cpp's mtmd
/// loads) of Gemma 3's projector type for a text model `text_width` wide, with pseudo-random
/// weights: a 2-block ViT of width 64 over 56 x 56 images, average-pooled to
/// [`PROJECTOR_IMAGE_TOKENS`] tokens, then RMS norm and a projection to the text width. No small
/// vision model is published on the package registries; this one sees nothing real, but every
/// image goes through the real decoding, encoding and evaluation, and different images give
/// different embeddings.
pub fn write_vision_projector(path: &Path, text_width: u64) {
    const WIDTH: u64 = 64;
    // Not WIDTH: clip.cpp swaps ffn up and down when ffn_down is WIDTH wide.
    const FEED_FORWARD: u64 = 128;
    const BLOCKS: u32 = 2;
    const IMAGE: u32 = 56;
    const PATCH: u32 = 14;
    let patches = u64::from((IMAGE / PATCH) * (IMAGE / PATCH));
    let metadata = [
        ("general.architecture", GgufValue::Str("clip")),
        ("general.name", GgufValue::Str("herd synthetic test projector")),
        ("general.file_type", GgufValue::U32(0)),
        ("clip.has_vision_encoder", GgufValue::Bool(true)),
        ("clip.projector_type", GgufValue::Str("gemma3")),
        ("clip.vision.embedding_length", GgufValue::U32(WIDTH as u32)),
        ("clip.vision.feed_forward_length", GgufValue::U32(FEED_FORWARD as u32)),
        ("clip.vision.block_count", GgufValue::U32(BLOCKS)),
        ("clip.vision.attention.head_count", GgufValue::U32(4)),
        ("clip.vision.attention.layer_norm_epsilon", GgufValue::F32(1e-6)),
        ("clip.vision.projection_dim", GgufValue::U32(text_width as u32)),
        ("clip.vision.image_size", GgufValue::U32(IMAGE)),
        ("clip.vision.patch_size", GgufValue::U32(PATCH)),
        ("clip.vision.image_mean", GgufValue::F32s(&[0.5, 0.5, 0.5])),
        ("clip.vision.image_std", GgufValue::F32s(&[0.5, 0.5, 0.5])),
        ("clip.use_gelu", GgufValue::Bool(true)),
        ("clip.vision.projector.scale_factor", GgufValue::U32(2)),
    ];
    let patch = u64::from(PATCH);
    let mut tensors = vec![
        GgufTensor::random("v.patch_embd.weight", &[patch, patch, 3, WIDTH], 0.09),
        GgufTensor::filled("v.patch_embd.bias", &[WIDTH], 0.0),
        GgufTensor::random("v.position_embd.weight", &[WIDTH, patches], 0.035),
    ];
    for block in 0..BLOCKS {
        let name = |part: &str| format!("v.blk.{block}.{part}");
        for part in ["attn_q", "attn_k", "attn_v", "attn_out"] {
            tensors.push(GgufTensor::random(
                name(&format!("{part}.weight")),
                &[WIDTH, WIDTH],
                0.035,
            ));
            tensors.push(GgufTensor::filled(name(&format!("{part}.bias")), &[WIDTH], 0.0));
        }
        for part in ["ln1", "ln2"] {
            tensors.push(GgufTensor::filled(name(&format!("{part}.weight")), &[WIDTH], 1.0));
            tensors.push(GgufTensor::filled(name(&format!("{part}.bias")), &[WIDTH], 0.0));
        }
        tensors.push(GgufTensor::random(name("ffn_up.weight"), &[WIDTH, FEED_FORWARD], 0.035));
        tensors.push(GgufTensor::filled(name("ffn_up.bias"), &[FEED_FORWARD], 0.0));
        tensors.push(GgufTensor::random(
            name("ffn_down.weight"),
            &[FEED_FORWARD, WIDTH],
            0.035,
        ));
        tensors.push(GgufTensor::filled(name("ffn_down.bias"), &[WIDTH], 0.0));
    }
    tensors.extend([
        GgufTensor::filled("v.post_ln.weight", &[WIDTH], 1.0),
        GgufTensor::filled("v.post_ln.bias", &[WIDTH], 0.0),
        GgufTensor::filled("mm.soft_emb_norm.weight", &[WIDTH], 1.0),
        // Pooled tokens times this: [text width, vision width] in GGUF order.
        GgufTensor::random("mm.input_projection.weight", &[text_width, WIDTH], 4.0),
    ]);
    write_gguf(path, &metadata, &tensors);
}

/// A PNG file of `width` x `height` RGB pixels, `pixel(x, y)` each.
pub fn png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    use std::io::Write;
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut rows = Vec::new();
    for y in 0..height {
        rows.push(0); // filter: none
        (0..width).for_each(|x| rows.extend(pixel(x, y)));
    }
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&rows).unwrap();
    let mut header = Vec::new();
    header.extend(width.to_be_bytes());
    header.extend(height.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]); // 8 bits per channel, RGB, deflate, no filter, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &header);
    chunk(&mut out, b"IDAT", &zlib.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A small tmpfs, unmounted when dropped (the tests run as root, as CI does).
pub struct SmallDisk {
    /// Where it is mounted.
    pub mount: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes`.
    pub fn new(megabytes: u64) -> Self {
        let mount = tempfile::tempdir().unwrap();
        let done = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(mount.path())
            .status()
            .unwrap();
        assert!(done.success(), "mounting a tmpfs needs root (as CI runs)");
        Self { mount }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
    }
}
