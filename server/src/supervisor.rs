//! Starts runner processes, completes their handshake, and owns each runner connection.
//!
//! A [`RunnerClient`] is the single owner of one runner's socket: a writer task sends
//! [`ServerMessage`]s, a reader task routes each [`RunnerMessage`] to the request that waits
//! for it. When the runner dies, every waiting request gets an error and the client is
//! marked dead, so the scheduler starts a fresh runner for the next request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_proto::frame::{read_frame, write_frame};
use herd_proto::{
    CompletionMetrics, CompletionRequest, ModelFacts, OutputFormat, RequestId, RunnerMessage, ServerMessage,
    PROTOCOL_VERSION,
};
use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::GenericFilePath;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::placement::Placement;

/// How a runner is started; two requests can share a runner only if these are equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadSpec {
    /// The GGUF blob.
    pub model_path: PathBuf,
    /// A LoRA adapter GGUF to apply.
    pub adapter_path: Option<PathBuf>,
    /// A vision projector (mmproj GGUF) to load with the model.
    pub projector_path: Option<PathBuf>,
    /// Context length of each slot.
    pub context_length: u32,
    /// Slots.
    pub parallel: u32,
    /// CPU threads (0: all cores).
    pub threads: u32,
    /// Most tokens per decode call.
    pub batch_size: u32,
    /// GPU layers asked for (`num_gpu`); negative: decided at load from the free VRAM.
    pub num_gpu: i32,
}

/// The files a runner serves: the model, its adapter and its projector. One runner per key;
/// a request with other load options for the same key replaces it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightsKey {
    /// The GGUF weights.
    pub model: PathBuf,
    /// A LoRA adapter.
    pub adapter: Option<PathBuf>,
    /// A vision projector.
    pub projector: Option<PathBuf>,
}

impl WeightsKey {
    /// Every file of the key.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.model).chain(&self.adapter).chain(&self.projector)
    }
}

impl LoadSpec {
    /// The weights this spec loads.
    pub fn weights(&self) -> WeightsKey {
        WeightsKey {
            model: self.model_path.clone(),
            adapter: self.adapter_path.clone(),
            projector: self.projector_path.clone(),
        }
    }
}

/// Why a runner could not serve.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RunnerError {
    /// The runner binary could not be started.
    #[error("cannot start the model runner {path}: {reason}")]
    Spawn {
        /// The binary.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The runner started but could not load the model.
    #[error("{0}")]
    LoadFailed(String),
    /// Loading took longer than the load timeout.
    #[error("timed out loading the model after {0:?}")]
    LoadTimeout(Duration),
    /// The runner exited or its connection broke.
    #[error("model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check herd server logs for details{}", last_words(.0))]
    Stopped(String),
    /// Loading would take more memory than the machine has free.
    #[error(
        "model requires more system memory ({}) than is available ({})",
        crate::hardware::human_bytes(*needed),
        crate::hardware::human_bytes(*available)
    )]
    DoesNotFit {
        /// Estimated bytes: weights, adapter and KV cache.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The weights or adapter to load are not what the store holds them to be.
    #[error("{0}")]
    CorruptBlob(String),
    /// The runner said something that makes no sense.
    #[error("model runner protocol error: {0}")]
    Protocol(String),
    /// The runner could not do what it was asked; the message says why.
    #[error("{0}")]
    Failed(String),
}

fn last_words(stderr_tail: &str) -> String {
    if stderr_tail.is_empty() {
        String::new()
    } else {
        format!(": {stderr_tail}")
    }
}

/// One event of a running completion.
#[derive(Debug)]
pub enum CompletionEvent {
    /// Generated text.
    Piece(String),
    /// The completion ended; no more events follow.
    Done(CompletionMetrics),
    /// The completion failed; no more events follow.
    Failed(String),
    /// The request's input cannot be used (an image that does not decode); nothing was
    /// generated and no more events follow.
    Rejected(String),
}

type Waiters = Arc<Mutex<HashMap<RequestId, mpsc::UnboundedSender<RunnerMessage>>>>;

/// The connection to one runner process.
pub struct RunnerClient {
    /// How the runner was started.
    pub spec: LoadSpec,
    /// What the runner reported after loading.
    pub facts: ModelFacts,
    /// The runner's process id.
    pub pid: u32,
    outgoing: mpsc::UnboundedSender<ServerMessage>,
    waiters: Waiters,
    next_id: AtomicU64,
    alive: Arc<AtomicBool>,
    /// Set once the process has been reaped: its pid may then belong to someone else.
    exited: Arc<AtomicBool>,
    /// Set when the server stops the runner: an exit before that is a failure.
    stopping: Arc<AtomicBool>,
    stderr_tail: Arc<Mutex<String>>,
    /// Holds the private directory of the socket until the client goes away.
    _socket_dir: tempfile::TempDir,
}

impl RunnerClient {
    /// Starts a runner for `spec`, with its layers where `placement` puts them, and waits
    /// until its model is loaded.
    pub async fn start(
        runner_path: &std::path::Path,
        spec: LoadSpec,
        placement: &Placement,
        load_timeout: Duration,
        health_timeout: Duration,
    ) -> Result<Arc<Self>, RunnerError> {
        // A private (0700) directory: no other local user can connect to the runner.
        let socket_dir = tempfile::Builder::new()
            .prefix("herd-runner-")
            .tempdir()
            .map_err(|e| RunnerError::Spawn {
                path: runner_path.display().to_string(),
                reason: e.to_string(),
            })?;
        let socket_path = socket_dir.path().join("runner.sock");
        let mut command = tokio::process::Command::new(runner_path);
        command
            .arg("--model")
            .arg(&spec.model_path)
            .arg("--socket")
            .arg(&socket_path)
            .args(["--ctx-size", &spec.context_length.to_string()])
            .args(["--parallel", &spec.parallel.to_string()])
            .args(["--threads", &spec.threads.to_string()])
            .args(["--batch-size", &spec.batch_size.to_string()])
            .args(["--gpu-layers", &placement.gpu_layers.to_string()])
            .args(
                placement
                    .gpu
                    .iter()
                    .flat_map(|gpu| ["--main-gpu".to_string(), gpu.to_string()]),
            )
            .args(
                spec.adapter_path
                    .iter()
                    .flat_map(|path| [std::ffi::OsStr::new("--lora"), path.as_os_str()]),
            )
            .args(
                spec.projector_path
                    .iter()
                    .flat_map(|path| [std::ffi::OsStr::new("--projector"), path.as_os_str()]),
            )
            // CUDA numbers GPUs as NVML does, so `--main-gpu` means the GPU that was measured.
            .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                // The kernel kills the runner if the server dies, even by SIGKILL. The signal
                // follows the forking *thread*: this runs on a runtime worker, which lives as
                // long as the server (never spawn runners from `spawn_blocking`).
                nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGKILL)).map_err(std::io::Error::from)
            });
        }
        let mut child = command.spawn().map_err(|e| RunnerError::Spawn {
            path: runner_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let pid = child.id().unwrap_or_default();
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_stderr(stderr, pid, stderr_tail.clone()));
        }
        let alive = Arc::new(AtomicBool::new(true));
        let exited = Arc::new(AtomicBool::new(false));
        let stopping = Arc::new(AtomicBool::new(false));
        let (exited_tx, mut exited_rx) = tokio::sync::watch::channel(false);
        {
            let alive = alive.clone();
            let exited = exited.clone();
            let stopping = stopping.clone();
            tokio::spawn(async move {
                // Reaps the child, so a dead runner never lingers as a zombie.
                let status = child.wait().await;
                exited.store(true, Ordering::SeqCst);
                alive.store(false, Ordering::SeqCst);
                if stopping.load(Ordering::SeqCst) {
                    tracing::info!(pid, ?status, "runner exited");
                } else {
                    tracing::warn!(pid, ?status, "runner exited unasked");
                    crate::metrics::runner_failed();
                }
                let _ = exited_tx.send(true);
            });
        }

        let stopped =
            |tail: &Arc<Mutex<String>>| RunnerError::Stopped(tail.lock().map(|t| t.clone()).unwrap_or_default());
        let handshake = async {
            let stream = loop {
                let name = socket_path
                    .as_path()
                    .to_fs_name::<GenericFilePath>()
                    .map_err(|e| RunnerError::Protocol(e.to_string()))?;
                match Stream::connect(name).await {
                    Ok(stream) => break stream,
                    Err(_) if !*exited_rx.borrow() => {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                            _ = exited_rx.changed() => {}
                        }
                    }
                    Err(_) => return Err(stopped(&stderr_tail)),
                }
            };
            let mut reader = &stream;
            match read_frame::<_, RunnerMessage>(&mut reader).await {
                Ok(RunnerMessage::Hello { protocol, .. }) if protocol == PROTOCOL_VERSION => {}
                Ok(RunnerMessage::Hello { protocol, .. }) => {
                    return Err(RunnerError::Protocol(format!(
                        "runner speaks protocol {protocol}, server {PROTOCOL_VERSION}"
                    )))
                }
                Ok(other) => return Err(RunnerError::Protocol(format!("expected hello, got {other:?}"))),
                Err(_) => return Err(stopped(&stderr_tail)),
            }
            match read_frame::<_, RunnerMessage>(&mut reader).await {
                Ok(RunnerMessage::Loaded(facts)) => Ok((stream, facts)),
                Ok(RunnerMessage::LoadFailed { error }) => Err(RunnerError::LoadFailed(error)),
                Ok(other) => Err(RunnerError::Protocol(format!("expected loaded, got {other:?}"))),
                Err(_) => Err(stopped(&stderr_tail)),
            }
        };
        let (stream, facts) = match tokio::time::timeout(load_timeout, handshake).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                kill(pid, &exited);
                return Err(e);
            }
            Err(_) => {
                kill(pid, &exited);
                return Err(RunnerError::LoadTimeout(load_timeout));
            }
        };

        let stream = Arc::new(stream);
        let waiters: Waiters = Arc::default();
        let (outgoing, mut outgoing_rx) = mpsc::unbounded_channel::<ServerMessage>();
        {
            let stream = stream.clone();
            let alive = alive.clone();
            tokio::spawn(async move {
                let mut writer = &*stream;
                while let Some(message) = outgoing_rx.recv().await {
                    if write_frame(&mut writer, &message).await.is_err() {
                        alive.store(false, Ordering::SeqCst);
                        break;
                    }
                }
            });
        }
        {
            let waiters = waiters.clone();
            let alive = alive.clone();
            let stderr_tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut reader = &*stream;
                while let Ok(message) = read_frame::<_, RunnerMessage>(&mut reader).await {
                    route(&waiters, message);
                }
                alive.store(false, Ordering::SeqCst);
                // Let the reaper record the exit and stderr settle, for a useful message.
                tokio::time::sleep(Duration::from_millis(50)).await;
                fail_waiters(&waiters, &stopped(&stderr_tail).to_string());
            });
        }
        tracing::info!(pid, model = %spec.model_path.display(), ?facts, "runner ready");
        let client = Arc::new(Self {
            spec,
            facts,
            pid,
            outgoing,
            waiters,
            next_id: AtomicU64::new(1),
            alive,
            exited,
            stopping,
            stderr_tail,
            _socket_dir: socket_dir,
        });
        tokio::spawn(watch_health(Arc::downgrade(&client), health_timeout));
        Ok(client)
    }

    /// Whether the runner process and its connection are still up.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn register(&self) -> (RequestId, mpsc::UnboundedReceiver<RunnerMessage>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(id, tx);
        }
        (id, rx)
    }

    fn forget(&self, id: RequestId) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&id);
        }
    }

    fn send(&self, message: ServerMessage) -> Result<(), RunnerError> {
        if !self.is_alive() {
            return Err(self.stopped());
        }
        self.outgoing.send(message).map_err(|_| self.stopped())
    }

    fn stopped(&self) -> RunnerError {
        RunnerError::Stopped(self.stderr_tail.lock().map(|t| t.clone()).unwrap_or_default())
    }

    /// Starts a completion; dropping the returned [`Completion`] before it ends cancels it.
    pub fn complete(self: &Arc<Self>, mut request: CompletionRequest) -> Result<Completion, RunnerError> {
        let (id, events) = self.register();
        request.id = id;
        if let Err(e) = self.send(ServerMessage::Complete(request)) {
            self.forget(id);
            return Err(e);
        }
        Ok(Completion {
            id,
            events,
            client: self.clone(),
            finished: false,
        })
    }

    /// Sends a request that has exactly one answer, and waits for it.
    async fn ask(&self, make: impl FnOnce(RequestId) -> ServerMessage) -> Result<RunnerMessage, RunnerError> {
        let (id, mut events) = self.register();
        let result = match self.send(make(id)) {
            Ok(()) => events.recv().await.ok_or_else(|| self.stopped()),
            Err(e) => Err(e),
        };
        self.forget(id);
        result
    }

    /// Tokenizes text with the model's tokenizer.
    pub async fn tokenize(&self, text: &str) -> Result<Vec<i32>, RunnerError> {
        let text = text.to_string();
        match self.ask(|id| ServerMessage::Tokenize { id, text }).await? {
            RunnerMessage::Tokens { tokens, .. } => Ok(tokens),
            RunnerMessage::Failed { error, .. } => Err(RunnerError::Stopped(error)),
            other => Err(RunnerError::Protocol(format!("expected tokens, got {other:?}"))),
        }
    }

    /// Turns token ids back into text.
    pub async fn detokenize(&self, tokens: Vec<i32>) -> Result<String, RunnerError> {
        match self.ask(|id| ServerMessage::Detokenize { id, tokens }).await? {
            RunnerMessage::Text { text, .. } => Ok(text),
            RunnerMessage::Failed { error, .. } => Err(RunnerError::Stopped(error)),
            other => Err(RunnerError::Protocol(format!("expected text, got {other:?}"))),
        }
    }

    /// The GBNF grammar for a structured-output format, or why the model cannot be held to it.
    pub async fn compile_format(&self, format: OutputFormat) -> Result<Result<String, String>, RunnerError> {
        match self.ask(|id| ServerMessage::CompileFormat { id, format }).await? {
            RunnerMessage::Grammar { grammar, .. } => Ok(Ok(grammar)),
            RunnerMessage::Failed { error, .. } if self.is_alive() => Ok(Err(error)),
            // The runner died: the error is the stopped runner's message already.
            RunnerMessage::Failed { error, .. } => Err(RunnerError::Failed(error)),
            other => Err(RunnerError::Protocol(format!("expected a grammar, got {other:?}"))),
        }
    }

    /// The model's pooled embedding of each input (cut to the context), and the tokens read.
    pub async fn embed(&self, inputs: Vec<String>) -> Result<(Vec<Vec<f32>>, u32), RunnerError> {
        match self.ask(|id| ServerMessage::Embed { id, inputs }).await? {
            RunnerMessage::Embeddings {
                vectors, prompt_tokens, ..
            } => Ok((vectors, prompt_tokens)),
            RunnerMessage::Failed { error, .. } => Err(RunnerError::Failed(error)),
            other => Err(RunnerError::Protocol(format!("expected embeddings, got {other:?}"))),
        }
    }

    /// Ends every request waiting on this runner with `error`.
    pub fn fail_in_flight(&self, error: &str) {
        fail_waiters(&self.waiters, error);
    }

    /// Asks the runner to exit, and kills it if it has not within `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.outgoing.send(ServerMessage::Shutdown);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.exited.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        kill(self.pid, &self.exited);
    }
}

impl Drop for RunnerClient {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        kill(self.pid, &self.exited);
    }
}

/// Asks the runner's engine loop, every quarter of `timeout`, whether it still answers; one
/// that does not answer within `timeout` (hung, or stopped) is killed, so its requests fail
/// with an error instead of waiting forever and the next request starts a fresh runner.
async fn watch_health(client: std::sync::Weak<RunnerClient>, timeout: Duration) {
    let interval = (timeout / 4).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(interval).await;
        let Some(client) = client.upgrade() else { return };
        if !client.is_alive() {
            return;
        }
        let answer = tokio::time::timeout(timeout, client.ask(|id| ServerMessage::Health { id })).await;
        if answer.is_err() {
            tracing::error!(
                pid = client.pid,
                ?timeout,
                "runner did not answer a health check; killing it"
            );
            if let Ok(mut tail) = client.stderr_tail.lock() {
                *tail = format!("it did not answer a health check within {timeout:?} and was killed");
            }
            client.alive.store(false, Ordering::SeqCst);
            kill(client.pid, &client.exited);
            return;
        }
    }
}

/// Kills the runner unless it has already been reaped.
fn kill(pid: u32, exited: &AtomicBool) {
    if exited.load(Ordering::SeqCst) {
        return;
    }
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Ends every waiting request with `error`; later messages for them are dropped.
fn fail_waiters(waiters: &Waiters, error: &str) {
    let waiting: Vec<_> = waiters.lock().map(|mut w| w.drain().collect()).unwrap_or_default();
    for (id, tx) in waiting {
        let _ = tx.send(RunnerMessage::Failed {
            id,
            error: error.to_string(),
        });
    }
}

fn route(waiters: &Waiters, message: RunnerMessage) {
    let id = match &message {
        RunnerMessage::Piece { id, .. }
        | RunnerMessage::Done { id, .. }
        | RunnerMessage::Failed { id, .. }
        | RunnerMessage::Rejected { id, .. }
        | RunnerMessage::Tokens { id, .. }
        | RunnerMessage::Text { id, .. }
        | RunnerMessage::Grammar { id, .. }
        | RunnerMessage::Embeddings { id, .. }
        | RunnerMessage::Healthy { id, .. } => *id,
        other => {
            tracing::warn!(?other, "unexpected message from runner");
            return;
        }
    };
    let Ok(waiters) = waiters.lock() else { return };
    if let Some(tx) = waiters.get(&id) {
        let _ = tx.send(message);
    }
}

/// Copies the runner's log lines into the server's log, keeping the last error for reports.
async fn forward_stderr(stderr: tokio::process::ChildStderr, pid: u32, tail: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "herd::runner", pid, "{line}");
        let lower = line.to_ascii_lowercase();
        if lower.contains("error") || lower.contains("panic") || lower.contains("abort") {
            if let Ok(mut tail) = tail.lock() {
                *tail = line.chars().take(500).collect();
            }
        }
    }
}

/// A running completion; cancelled in the runner if dropped before it ends.
pub struct Completion {
    id: RequestId,
    events: mpsc::UnboundedReceiver<RunnerMessage>,
    client: Arc<RunnerClient>,
    finished: bool,
}

impl Completion {
    /// The next event; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<CompletionEvent> {
        if self.finished {
            return None;
        }
        let event = match self.events.recv().await {
            Some(RunnerMessage::Piece { text, .. }) => CompletionEvent::Piece(text),
            Some(RunnerMessage::Done { metrics, .. }) => CompletionEvent::Done(metrics),
            Some(RunnerMessage::Failed { error, .. }) => CompletionEvent::Failed(error),
            Some(RunnerMessage::Rejected { error, .. }) => CompletionEvent::Rejected(error),
            Some(other) => CompletionEvent::Failed(format!("unexpected runner message {other:?}")),
            None => CompletionEvent::Failed(self.client.stopped().to_string()),
        };
        if !matches!(event, CompletionEvent::Piece(_)) {
            self.finished = true;
            self.client.forget(self.id);
        }
        Some(event)
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away: stop generating (prompt evaluation included).
            let _ = self.client.send(ServerMessage::Cancel { id: self.id });
            self.client.forget(self.id);
        }
    }
}
