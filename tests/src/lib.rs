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
    pub fn open_stream(&self, path: &str, body: &Value) -> BufReader<reqwest::blocking::Response> {
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

/// Writes a LoRA adapter GGUF as llama.cpp reads one (`general.type` `adapter`, `adapter.type`
/// `lora`, F32 `<tensor>.lora_a` of `[n_in, rank]` and `<tensor>.lora_b` of `[rank, n_out]`),
/// with pseudo-random values of magnitude `scale` from `seed`: a real adapter file for a base
/// model whose tensor shapes the caller names.
pub fn write_lora_adapter(path: &Path, architecture: &str, targets: &[(String, u64, u64)], rank: u64, scale: f32) {
    const ALIGNMENT: usize = 32;
    const TYPE_F32: u32 = 6;
    const TYPE_STRING: u32 = 8;
    const GGML_F32: u32 = 0;
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    };
    let mut tensors: Vec<(String, [u64; 2])> = Vec::new();
    for (name, n_in, n_out) in targets {
        tensors.push((format!("{name}.lora_a"), [*n_in, rank]));
        tensors.push((format!("{name}.lora_b"), [rank, *n_out]));
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(4u64.to_le_bytes());
    for (key, value) in [
        ("general.architecture", architecture),
        ("general.type", "adapter"),
        ("adapter.type", "lora"),
    ] {
        string(&mut out, key);
        out.extend(TYPE_STRING.to_le_bytes());
        string(&mut out, value);
    }
    string(&mut out, "adapter.lora.alpha");
    out.extend(TYPE_F32.to_le_bytes());
    out.extend((rank as f32).to_le_bytes());
    let mut offset = 0u64;
    for (name, dims) in &tensors {
        string(&mut out, name);
        out.extend(2u32.to_le_bytes());
        out.extend(dims[0].to_le_bytes());
        out.extend(dims[1].to_le_bytes());
        out.extend(GGML_F32.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (dims[0] * dims[1] * 4).next_multiple_of(ALIGNMENT as u64);
    }
    out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
    for (_, dims) in &tensors {
        for _ in 0..dims[0] * dims[1] {
            out.extend(random().to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
    }
    std::fs::write(path, out).expect("write the adapter");
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
