//! Route handlers: decode, call one domain function, encode. Nothing else.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use warp::http::Response;
use warp::hyper::Body;

use super::reply::{self, now_rfc3339, parse_body};
use super::types::{
    ChatChunk, ChatMessageOut, ChatRequest, CopyRequest, CreateRequest, DeleteRequest, GenerateChunk, GenerateRequest,
    Metrics, ShowRequest,
};
use super::AppState;
use crate::create::{create_model, CreateProgress};
use crate::error::HerdError;
use crate::inference::{FinalMetrics, Generation, GenerationEvent, Outcome};
use crate::model::parse_name;
use crate::show;
use crate::store::{Digest, StoreError};

type Reply = Response<Body>;

macro_rules! body_or_reply {
    ($body:expr) => {
        match parse_body(&$body) {
            Ok(request) => request,
            Err(message) => return reply::error(400, &message),
        }
    };
}

fn metrics(done: &FinalMetrics) -> Metrics {
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

/// Streams a generation as chunks built by `chunk(text, final)`; an error after the start is
/// a last `{"error": ...}` line.
fn stream_chunks<F>(generation: Generation, chunk: F) -> impl Stream<Item = Value> + Send
where
    F: Fn(String, Option<&FinalMetrics>) -> Value + Send + Sync + 'static,
{
    let chunk = Arc::new(chunk);
    futures_util::stream::unfold(Some(generation), move |state| {
        let chunk = chunk.clone();
        async move {
            let mut generation = state?;
            match generation.next().await? {
                GenerationEvent::Text(text) => Some((chunk(text, None), Some(generation))),
                GenerationEvent::Done(done) => Some((chunk(String::new(), Some(&done)), None)),
                GenerationEvent::Error(error) => Some((json!({ "error": error }), None)),
            }
        }
    })
}

/// Runs a generation to its end, for `"stream": false`.
async fn collect(mut generation: Generation) -> Result<(String, FinalMetrics), HerdError> {
    let mut text = String::new();
    while let Some(event) = generation.next().await {
        match event {
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::Done(done) => return Ok((text, done)),
            GenerationEvent::Error(error) => return Err(HerdError::Internal(error)),
        }
    }
    Err(HerdError::Internal("generation ended without a result".into()))
}

/// Builds one `/api/generate` or `/api/chat` chunk: model, text, the final metrics (on the
/// last chunk) and, for generate, the `context` tokens.
type ChunkBuilder = fn(&str, String, Option<Metrics>, Option<Vec<i32>>) -> Value;

fn generate_chunk(model: &str, text: String, metrics: Option<Metrics>, context: Option<Vec<i32>>) -> Value {
    let chunk = GenerateChunk {
        model: model.to_string(),
        created_at: now_rfc3339(),
        response: text,
        done: metrics.is_some(),
        context,
        metrics,
    };
    serde_json::to_value(chunk).unwrap_or_default()
}

fn chat_chunk(model: &str, text: String, metrics: Option<Metrics>, _context: Option<Vec<i32>>) -> Value {
    let chunk = ChatChunk {
        model: model.to_string(),
        created_at: now_rfc3339(),
        message: ChatMessageOut {
            role: "assistant",
            content: text,
        },
        done: metrics.is_some(),
        metrics,
    };
    serde_json::to_value(chunk).unwrap_or_default()
}

/// Answers a generate or chat outcome: one object (load, unload, render, `"stream": false`)
/// or an NDJSON stream of chunks.
async fn reply_outcome(outcome: Result<Outcome, HerdError>, model: String, stream: bool, chunk: ChunkBuilder) -> Reply {
    let last = |done: &FinalMetrics| (Some(metrics(done)), done.runner.tokens.clone());
    match outcome {
        Err(e) => reply::herd_error(&e),
        Ok(Outcome::Loaded { load_duration }) => reply::json(
            200,
            &chunk(&model, String::new(), Some(done_only("load", load_duration)), None),
        ),
        Ok(Outcome::Unloaded) => reply::json(
            200,
            &chunk(
                &model,
                String::new(),
                Some(done_only("unload", Default::default())),
                None,
            ),
        ),
        Ok(Outcome::Rendered(prompt)) => reply::json(200, &debug_info(&model, prompt)),
        Ok(Outcome::Streaming(generation)) if stream => reply::ndjson(stream_chunks(generation, move |text, done| {
            let (metrics, context) = done.map(last).unwrap_or_default();
            chunk(&model, text, metrics, context)
        })),
        Ok(Outcome::Streaming(generation)) => match collect(generation).await {
            Ok((text, done)) => {
                let (metrics, context) = last(&done);
                reply::json(200, &chunk(&model, text, metrics, context))
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

fn debug_info(model: &str, prompt: String) -> Value {
    json!({
        "model": model,
        "created_at": now_rfc3339(),
        "done": true,
        "_debug_info": { "rendered_template": prompt, "image_count": 0 },
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
    let request: DeleteRequest = body_or_reply!(body);
    let name = match parse_name(&request.model) {
        Ok(name) => name,
        Err(e) => return reply::herd_error(&e),
    };
    match state.store.delete(&name) {
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
    let chunks = body.map(|chunk| chunk.map(|mut buf| buf.copy_to_bytes(buf.remaining())));
    match state.store.write_blob_stream(Some(&digest), chunks).await {
        Ok(_) => Response::builder().status(201).body(Body::empty()).unwrap_or_default(),
        Err(e) => reply::herd_error(&e.into()),
    }
}
