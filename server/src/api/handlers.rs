//! Route handlers: decode, call one domain function, encode. Nothing else.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use warp::http::Response;
use warp::hyper::Body;

use super::reply::{self, now_rfc3339, parse_body};
use super::types::{
    ChatChunk, ChatMessageOut, ChatRequest, CopyRequest, CreateRequest, EmbedRequest, EmbedResponse, EmbeddingsRequest,
    GenerateChunk, GenerateRequest, Metrics, ModelRequest, ShowRequest, TransferRequest,
};
use super::AppState;
use crate::bundle;
use crate::create::{create_model, CreateProgress};
use crate::embedding::{self, Shape};
use crate::error::HerdError;
use crate::inference::{EmbedJob, FinalMetrics, Generation, GenerationEvent, Outcome};
use crate::model::parse_name;
use crate::registry::{Access, Progress};
use crate::show;
use crate::store::{Digest, StoreError};
use crate::tools::ToolCall;

type Reply = Response<Body>;

macro_rules! body_or_reply {
    ($body:expr) => {
        match parse_body(&$body) {
            Ok(request) => request,
            Err(message) => return reply::error(400, &message),
        }
    };
}

fn final_metrics(done: &FinalMetrics) -> Metrics {
    Metrics {
        done_reason: Some(done.done_reason.to_string()),
        total_duration: done.total_duration.as_nanos() as u64,
        load_duration: done.load_duration.as_nanos() as u64,
        prompt_eval_count: done.runner.prompt_eval_count as u64,
        prompt_eval_duration: done.runner.prompt_eval_duration_ns,
        eval_count: done.runner.eval_count as u64,
        eval_duration: done.runner.eval_duration_ns,
        prompt_truncated_tokens: done.truncated_tokens as u64,
    }
}

fn done_only(reason: &str, load_duration: std::time::Duration) -> Metrics {
    Metrics {
        done_reason: Some(reason.to_string()),
        load_duration: load_duration.as_nanos() as u64,
        total_duration: load_duration.as_nanos() as u64,
        ..Default::default()
    }
}

/// One piece of an answer: text, reasoning or whole tool calls.
#[derive(Default)]
pub(super) struct Part {
    /// Answer text.
    pub text: String,
    /// Reasoning text.
    pub thinking: String,
    /// Whole tool calls.
    pub tool_calls: Vec<ToolCall>,
}

/// Streams a generation as chunks built by `chunk(part, final)`; an error after the start is
/// a last `{"error": ...}` line.
fn stream_chunks<F>(generation: Box<Generation>, chunk: F) -> impl Stream<Item = Value> + Send
where
    F: Fn(Part, Option<&FinalMetrics>) -> Value + Send + Sync + 'static,
{
    let chunk = Arc::new(chunk);
    futures_util::stream::unfold(Some(generation), move |state| {
        let chunk = chunk.clone();
        async move {
            let mut generation = state?;
            let part = match generation.next().await? {
                GenerationEvent::Text(text) => Part {
                    text,
                    ..Default::default()
                },
                GenerationEvent::Thinking(thinking) => Part {
                    thinking,
                    ..Default::default()
                },
                GenerationEvent::ToolCalls(tool_calls) => Part {
                    tool_calls,
                    ..Default::default()
                },
                GenerationEvent::Done(done) => return Some((chunk(Part::default(), Some(&done)), None)),
                GenerationEvent::Error(error) => return Some((json!({ "error": error.to_string() }), None)),
            };
            Some((chunk(part, None), Some(generation)))
        }
    })
}

/// A whole answer, for `"stream": false`.
pub(super) struct Collected {
    /// Text, reasoning and tool calls, each joined.
    pub part: Part,
    /// The final metrics.
    pub done: FinalMetrics,
}

/// Runs a generation to its end, for `"stream": false`.
pub(super) async fn collect(mut generation: Box<Generation>) -> Result<Collected, HerdError> {
    let mut part = Part::default();
    while let Some(event) = generation.next().await {
        match event {
            GenerationEvent::Text(piece) => part.text.push_str(&piece),
            GenerationEvent::Thinking(piece) => part.thinking.push_str(&piece),
            GenerationEvent::ToolCalls(calls) => part.tool_calls.extend(calls),
            GenerationEvent::Done(done) => return Ok(Collected { part, done }),
            GenerationEvent::Error(error) => return Err(error),
        }
    }
    Err(HerdError::Internal("generation ended without a result".into()))
}

/// Builds one `/api/generate` or `/api/chat` chunk: model, the part, the final metrics (on
/// the last chunk) and, for generate, the `context` tokens.
type ChunkBuilder = fn(&str, Part, Option<Metrics>, Option<Vec<i32>>) -> Value;

fn generate_chunk(model: &str, part: Part, metrics: Option<Metrics>, context: Option<Vec<i32>>) -> Value {
    let chunk = GenerateChunk {
        model: model.to_string(),
        created_at: now_rfc3339(),
        response: part.text,
        thinking: (!part.thinking.is_empty()).then_some(part.thinking),
        done: metrics.is_some(),
        context,
        metrics,
    };
    serde_json::to_value(chunk).unwrap_or_default()
}

fn chat_chunk(model: &str, part: Part, metrics: Option<Metrics>, _context: Option<Vec<i32>>) -> Value {
    let chunk = ChatChunk {
        model: model.to_string(),
        created_at: now_rfc3339(),
        message: ChatMessageOut {
            role: "assistant",
            content: part.text,
            thinking: (!part.thinking.is_empty()).then_some(part.thinking),
            tool_calls: (!part.tool_calls.is_empty()).then(|| part.tool_calls.iter().map(ToolCall::to_json).collect()),
        },
        done: metrics.is_some(),
        metrics,
    };
    serde_json::to_value(chunk).unwrap_or_default()
}

/// Answers a generate or chat outcome: one object (load, unload, render, `"stream": false`)
/// or an NDJSON stream of chunks.
async fn reply_outcome(outcome: Result<Outcome, HerdError>, model: String, stream: bool, chunk: ChunkBuilder) -> Reply {
    let last = |done: &FinalMetrics| (Some(final_metrics(done)), done.runner.tokens.clone());
    match outcome {
        Err(e) => reply::herd_error(&e),
        Ok(Outcome::Loaded { load_duration }) => reply::json(
            200,
            &chunk(&model, Part::default(), Some(done_only("load", load_duration)), None),
        ),
        Ok(Outcome::Unloaded) => reply::json(
            200,
            &chunk(
                &model,
                Part::default(),
                Some(done_only("unload", Default::default())),
                None,
            ),
        ),
        Ok(Outcome::Rendered { prompt, image_count }) => reply::json(200, &debug_info(&model, prompt, image_count)),
        Ok(Outcome::Streaming(generation)) if stream => {
            let timing = generation.timing();
            let chunks = stream_chunks(generation, move |part, done| {
                let (metrics, context) = done.map(last).unwrap_or_default();
                chunk(&model, part, metrics, context)
            });
            reply::timed(reply::ndjson(chunks), &timing)
        }
        Ok(Outcome::Streaming(generation)) => match collect(generation).await {
            Ok(whole) => {
                let (metrics, context) = last(&whole.done);
                reply::timed(
                    reply::json(200, &chunk(&model, whole.part, metrics, context)),
                    &whole.done.timing(),
                )
            }
            Err(e) => reply::herd_error(&e),
        },
    }
}

/// `POST /api/generate`.
pub async fn generate(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: GenerateRequest = body_or_reply!(body);
    let outcome = state.inference.generate(&request).await;
    reply_outcome(outcome, request.model, request.stream.unwrap_or(true), generate_chunk).await
}

/// `POST /api/chat`.
pub async fn chat(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: ChatRequest = body_or_reply!(body);
    let outcome = state.inference.chat(&request).await;
    reply_outcome(outcome, request.model, request.stream.unwrap_or(true), chat_chunk).await
}

/// `POST /api/embed`.
pub async fn embed(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: EmbedRequest = body_or_reply!(body);
    let job = embedding::parse_inputs(&request.input).and_then(|inputs| {
        Ok(EmbedJob {
            model: &request.model,
            inputs,
            truncate: request.truncate.unwrap_or(true),
            shape: Shape {
                dimensions: embedding::parse_dimensions(request.dimensions)?,
                normalize: true,
            },
            options: request.options.as_ref(),
            keep_alive: request.keep_alive.as_ref(),
        })
    });
    let embedded = match job {
        Ok(job) => state.inference.embed(job).await,
        Err(e) => Err(e),
    };
    match embedded {
        Ok(embedded) => {
            let timing = embedded.timing();
            let answer = EmbedResponse {
                model: request.model,
                embeddings: embedded.vectors,
                total_duration: embedded.total_duration.as_nanos() as u64,
                load_duration: embedded.load_duration.as_nanos() as u64,
                prompt_eval_count: u64::from(embedded.prompt_tokens),
            };
            reply::timed(reply::json(200, &answer), &timing)
        }
        Err(e) => reply::herd_error(&e),
    }
}

/// `POST /api/embeddings`: the legacy form, one prompt, the vector as the model pools it.
pub async fn embeddings(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: EmbeddingsRequest = body_or_reply!(body);
    let inputs = if request.prompt.is_empty() {
        Vec::new()
    } else {
        vec![request.prompt.clone()]
    };
    let job = EmbedJob {
        model: &request.model,
        inputs,
        truncate: true,
        shape: Shape {
            dimensions: None,
            normalize: false,
        },
        options: request.options.as_ref(),
        keep_alive: request.keep_alive.as_ref(),
    };
    match state.inference.embed(job).await {
        Ok(embedded) => {
            let timing = embedded.timing();
            let embedding = embedded.vectors.into_iter().next().unwrap_or_default();
            reply::timed(reply::json(200, &json!({ "embedding": embedding })), &timing)
        }
        Err(e) => reply::herd_error(&e),
    }
}

fn debug_info(model: &str, prompt: String, image_count: usize) -> Value {
    json!({
        "model": model,
        "created_at": now_rfc3339(),
        "done": true,
        "_debug_info": { "rendered_template": prompt, "image_count": image_count },
    })
}

/// Sends create progress into a channel the response streams from.
struct ChannelProgress(tokio::sync::mpsc::UnboundedSender<Result<String, HerdError>>);

impl CreateProgress for ChannelProgress {
    fn status(&mut self, status: String) {
        let _ = self.0.send(Ok(status));
    }
}

/// `POST /api/create`.
pub async fn create(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: CreateRequest = body_or_reply!(body);
    let stream = request.stream.unwrap_or(true);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker_state = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut progress = ChannelProgress(tx.clone());
        if let Err(e) = create_model(&worker_state.store, &worker_state.config, &request, &mut progress) {
            let _ = tx.send(Err(e));
        }
    });
    if !stream {
        let mut last = None;
        while let Some(message) = rx.recv().await {
            match message {
                Ok(status) => last = Some(status),
                Err(e) => return reply::herd_error(&e),
            }
        }
        return reply::json(200, &json!({ "status": last.unwrap_or_default() }));
    }
    // An error before anything was sent gets its own status code.
    let first = match rx.recv().await {
        Some(Ok(status)) => status,
        Some(Err(e)) => return reply::herd_error(&e),
        None => return reply::error(500, "create ended without a result"),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        let value = match rx.recv().await? {
            Ok(status) => json!({ "status": status }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        Some((value, rx))
    });
    reply::ndjson(futures_util::stream::once(async move { json!({ "status": first }) }).chain(rest))
}

/// `POST /api/pull`.
pub async fn pull(state: Arc<AppState>, body: Bytes) -> Reply {
    transfer(state, body, Access::Pull).await
}

/// `POST /api/push`.
pub async fn push(state: Arc<AppState>, body: Bytes) -> Reply {
    transfer(state, body, Access::Push).await
}

/// A pull or push: refusals (bad name, registry not allowed) get their status code; then
/// the transfer runs in a task whose progress is streamed, and which stops when the client
/// hangs up.
async fn transfer(state: Arc<AppState>, body: Bytes, access: Access) -> Reply {
    let request: TransferRequest = body_or_reply!(body);
    let name = match parse_name(&request.model) {
        Ok(name) => name,
        Err(e) => return reply::herd_error(&e),
    };
    let connection = match state.registry.connect(&name, request.insecure.unwrap_or(false), access) {
        Ok(connection) => connection,
        Err(e) => return reply::herd_error(&e.into()),
    };
    if access == Access::Push {
        if let Err(e) = state.store.read_manifest(&name) {
            return reply::herd_error(&e.into());
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = AbortOnDrop(tokio::spawn(async move {
        let progress = Progress::new(tx);
        match access {
            Access::Pull => state.registry.pull(connection, &state.store, &name, &progress).await,
            Access::Push => state.registry.push(connection, &state.store, &name, &progress).await,
        }
    }));
    if !request.stream.unwrap_or(true) {
        return match task.finish().await {
            Ok(()) => reply::json(200, &json!({ "status": "success" })),
            Err(e) => reply::herd_error(&e),
        };
    }
    let lines = futures_util::stream::unfold((rx, Some(task)), |(mut rx, task)| async move {
        if let Some(status) = rx.recv().await {
            return Some((json!(status), (rx, task)));
        }
        match task?.finish().await {
            Ok(()) => None,
            Err(e) => Some((json!({ "error": e.to_string() }), (rx, None))),
        }
    });
    reply::ndjson(lines)
}

/// A spawned transfer, aborted if its answer is dropped (the client hung up).
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), crate::registry::RegistryError>>);

impl AbortOnDrop {
    async fn finish(mut self) -> Result<(), HerdError> {
        match (&mut self.0).await {
            Ok(result) => result.map_err(HerdError::from),
            Err(e) => Err(HerdError::Internal(format!("the transfer stopped: {e}"))),
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `POST /api/export`: the model as an OCI image-layout tar, streamed as it is written.
pub async fn export(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: ModelRequest = body_or_reply!(body);
    let name = match parse_name(&request.model) {
        Ok(name) => name,
        Err(e) => return reply::herd_error(&e),
    };
    if let Err(StoreError::ModelNotFound(_)) = state.store.read_manifest(&name) {
        return reply::error(404, &format!("model '{}' not found", request.model));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::with_capacity(1 << 20, ChannelWriter(tx.clone()));
        if let Err(e) = bundle::export_model(&state.store, &name, out) {
            tracing::warn!(model = %name, "export stopped: {e}");
            // An error in the body makes the server cut the connection: the client sees a
            // failed download, never a short tar.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    Response::builder()
        .header("content-type", "application/x-tar")
        .body(Body::wrap_stream(chunks))
        .unwrap_or_default()
}

/// Writes into a response body's channel; fails once the client has gone.
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `POST /api/import`: the body is an OCI image-layout tar, read straight into the store.
pub async fn import(
    state: Arc<AppState>,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send + Unpin + 'static,
) -> Reply {
    let chunks = body.map(|chunk| {
        chunk
            .map(|mut buf| buf.copy_to_bytes(buf.remaining()))
            .map_err(std::io::Error::other)
    });
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(chunks));
    match tokio::task::spawn_blocking(move || bundle::import_bundle(&state.store, reader)).await {
        Ok(Ok(models)) => reply::json(
            200,
            &json!({ "status": "success", "models": models.iter().map(|m| m.display_shortest()).collect::<Vec<_>>() }),
        ),
        Ok(Err(e)) => reply::herd_error(&e),
        Err(e) => reply::error(500, &e.to_string()),
    }
}

/// `POST /api/show`.
pub async fn show(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: ShowRequest = body_or_reply!(body);
    let result =
        tokio::task::spawn_blocking(move || show::show_model(&state.store, &request.model, request.verbose)).await;
    match result {
        Ok(Ok(info)) => reply::json(200, &info),
        Ok(Err(e)) => reply::herd_error(&e),
        Err(e) => reply::error(500, &e.to_string()),
    }
}

/// `GET /api/tags`.
pub async fn tags(state: Arc<AppState>) -> Reply {
    match show::list_models(&state.store) {
        Ok(models) => reply::json(200, &json!({ "models": models })),
        Err(e) => reply::herd_error(&e),
    }
}

/// `GET /api/ps`.
pub async fn ps(state: Arc<AppState>) -> Reply {
    let models = show::running_models(&state.store, &state.scheduler);
    reply::json(200, &json!({ "models": models }))
}

/// `POST /api/copy`.
pub async fn copy(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: CopyRequest = body_or_reply!(body);
    let Ok(source) = parse_name(&request.source) else {
        return reply::error(400, &format!("source \"{}\" is invalid", request.source));
    };
    let Ok(destination) = parse_name(&request.destination) else {
        return reply::error(400, &format!("destination \"{}\" is invalid", request.destination));
    };
    match state.store.copy(&source, &destination) {
        Ok(()) => reply::empty_ok(),
        Err(StoreError::ModelNotFound(_)) => reply::error(404, &format!("model \"{}\" not found", request.source)),
        Err(e) => reply::herd_error(&e.into()),
    }
}

/// `DELETE /api/delete`.
pub async fn delete(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: ModelRequest = body_or_reply!(body);
    let name = match parse_name(&request.model) {
        Ok(name) => name,
        Err(e) => return reply::herd_error(&e),
    };
    match state.inference.delete(&name).await {
        Ok(()) => reply::empty_ok(),
        Err(StoreError::ModelNotFound(_)) => reply::error(404, &format!("model '{}' not found", request.model)),
        Err(e) => reply::herd_error(&e.into()),
    }
}

/// `HEAD /api/blobs/:digest`.
pub async fn blob_exists(digest: String, state: Arc<AppState>) -> Reply {
    match Digest::parse(&digest) {
        Err(e) => reply::error(400, &e.to_string()),
        Ok(digest) if state.store.has_blob(&digest) => reply::empty_ok(),
        Ok(digest) => reply::error(404, &format!("blob \"{digest}\" not found")),
    }
}

/// `POST /api/blobs/:digest`: the body is streamed to disk and verified.
pub async fn upload_blob(
    digest: String,
    state: Arc<AppState>,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send + Unpin + 'static,
) -> Reply {
    let digest = match Digest::parse(&digest) {
        Ok(d) => d,
        Err(e) => return reply::error(400, &e.to_string()),
    };
    if state.store.has_blob(&digest) {
        return reply::empty_ok();
    }
    let mut chunks = body.map(|chunk| chunk.map(|mut buf| buf.copy_to_bytes(buf.remaining())));
    match state.store.write_blob_stream(Some(&digest), &mut chunks).await {
        Ok(_) => Response::builder().status(201).body(Body::empty()).unwrap_or_default(),
        Err(e) => {
            // A client still sending (a full disk stops the write midway) reads no answer
            // from a connection closed under it: the rest of the body is read and dropped
            // first, for a while at most.
            let rest = async { while chunks.next().await.is_some_and(|chunk| chunk.is_ok()) {} };
            let _ = tokio::time::timeout(UPLOAD_DRAIN_LIMIT, rest).await;
            reply::herd_error(&e.into())
        }
    }
}

/// How long a failed upload's remaining body is read, so that its client gets the error.
const UPLOAD_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `GET /ready`: 200 when the server can take work, else 503 with the reason.
pub async fn ready(state: Arc<AppState>) -> Reply {
    match state.readiness.check(&state.config.runner_path, &state.store) {
        Ok(()) => reply::json(200, &json!({ "status": "ready" })),
        Err(e) => reply::error(503, &e.to_string()),
    }
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
pub async fn prometheus_metrics(state: Arc<AppState>) -> Reply {
    Response::builder()
        .header(warp::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
        .body(Body::from(crate::metrics::render(state.inference.snapshot())))
        .unwrap_or_default()
}
