//! Handlers of the OpenAI- and Anthropic-compatible routes: decode the foreign request, call
//! the same domain function the native route calls, encode the foreign answer (JSON or
//! server-sent events).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use warp::http::Response;
use warp::hyper::Body;

use super::anthropic::{self, MessagesRequest, StreamEncoder};
use super::handlers::{collect, Part};
use super::openai::{
    self, encode_vector, usage, wants_base64, ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Envelope,
};
use super::reply::{self, parse_body, EventEncoder, NamedEvent};
use super::responses::{ResponseFrame, ResponseStream, ResponsesRequest};
use super::AppState;
use crate::embedding::{self, Shape};
use crate::error::HerdError;
use crate::inference::{EmbedJob, FinalMetrics, Generation, GenerationEvent, Outcome};
use crate::show;

type Reply = Response<Body>;

/// An error in OpenAI's shape.
fn error(e: &HerdError) -> Reply {
    if e.status() >= 500 {
        tracing::error!("{e}");
    }
    reply::json(e.status(), &openai::error_body(e.status(), &e.to_string()))
}

macro_rules! request_or_reply {
    ($body:expr) => {
        match parse_body(&$body) {
            Ok(request) => request,
            Err(message) => return reply::json(400, &openai::error_body(400, &message)),
        }
    };
}

/// How one kind of completion looks on the wire.
struct Shapes {
    /// `object` of the whole answer.
    object: &'static str,
    /// `object` of a streamed chunk.
    chunk_object: &'static str,
    /// A choice carrying generated text, reasoning and tool calls (`delta` when streamed).
    choice: fn(Part, Option<&str>, bool) -> Value,
}

fn chat_choice(part: Part, finish_reason: Option<&str>, streamed: bool) -> Value {
    let mut message = json!({ "role": "assistant", "content": part.text });
    // Ollama's name for the reasoning, which OpenAI-compatible clients read.
    if !part.thinking.is_empty() {
        message["reasoning"] = json!(part.thinking);
    }
    if !part.tool_calls.is_empty() {
        message["tool_calls"] = part.tool_calls.iter().map(openai::tool_call).collect();
    }
    if streamed {
        json!({ "index": 0, "delta": message, "finish_reason": finish_reason })
    } else {
        json!({ "index": 0, "message": message, "finish_reason": finish_reason })
    }
}

fn text_choice(part: Part, finish_reason: Option<&str>, _streamed: bool) -> Value {
    json!({ "index": 0, "text": part.text, "logprobs": null, "finish_reason": finish_reason })
}

const CHAT: Shapes = Shapes {
    object: "chat.completion",
    chunk_object: "chat.completion.chunk",
    choice: chat_choice,
};

const TEXT: Shapes = Shapes {
    object: "text_completion",
    chunk_object: "text_completion",
    choice: text_choice,
};

/// OpenAI's finish reason: `tool_calls` when the answer called tools.
fn finish_reason(done: &FinalMetrics, called: bool) -> &'static str {
    if called && done.done_reason == "stop" {
        "tool_calls"
    } else {
        done.done_reason
    }
}

/// Answers a generation: one object, or server-sent events ending in `data: [DONE]`.
async fn reply_completion(
    outcome: Result<Outcome, HerdError>,
    envelope: Envelope,
    stream: bool,
    include_usage: bool,
    shapes: &'static Shapes,
) -> Reply {
    let generation = match outcome {
        Ok(Outcome::Streaming(generation)) => generation,
        Ok(_) => return error(&HerdError::bad_request("the request has nothing to complete")),
        Err(e) => return error(&e),
    };
    if stream {
        let timing = generation.timing();
        return reply::timed(reply::sse(events(generation, envelope, include_usage, shapes)), &timing);
    }
    match collect(generation).await {
        Ok(whole) => {
            let reason = finish_reason(&whole.done, !whole.part.tool_calls.is_empty());
            let timing = whole.done.timing();
            let choice = (shapes.choice)(whole.part, Some(reason), false);
            reply::timed(
                reply::json(
                    200,
                    &envelope.object(shapes.object, json!([choice]), Some(usage(&whole.done))),
                ),
                &timing,
            )
        }
        Err(e) => error(&e),
    }
}

/// The chunks of a streamed completion: text and tool calls, then the finish, then usage
/// when asked for.
fn events(
    generation: Box<Generation>,
    envelope: Envelope,
    include_usage: bool,
    shapes: &'static Shapes,
) -> impl Stream<Item = Value> + Send {
    let envelope = Arc::new(envelope);
    // The generation, and whether it has called tools yet.
    futures_util::stream::unfold(Some((generation, false)), move |state| {
        let envelope = envelope.clone();
        async move {
            let (mut generation, called) = state?;
            let chunk = |choices: Value, usage: Option<Value>| envelope.object(shapes.chunk_object, choices, usage);
            let choice = |part: Part, reason: Option<&str>| (shapes.choice)(part, reason, true);
            let (part, called) = match generation.next().await? {
                GenerationEvent::Text(text) => (
                    Part {
                        text,
                        ..Default::default()
                    },
                    called,
                ),
                GenerationEvent::Thinking(thinking) => (
                    Part {
                        thinking,
                        ..Default::default()
                    },
                    called,
                ),
                GenerationEvent::ToolCalls(tool_calls) => (
                    Part {
                        tool_calls,
                        ..Default::default()
                    },
                    true,
                ),
                GenerationEvent::Done(done) => {
                    let reason = finish_reason(&done, called);
                    let mut events = vec![chunk(json!([choice(Part::default(), Some(reason))]), None)];
                    if include_usage {
                        events.push(chunk(json!([]), Some(usage(&done))));
                    }
                    return Some((events, None));
                }
                GenerationEvent::Error(error) => {
                    return Some((vec![openai::error_body(error.status(), &error.to_string())], None))
                }
            };
            Some((
                vec![chunk(json!([choice(part, None)]), None)],
                Some((generation, called)),
            ))
        }
    })
    .flat_map(futures_util::stream::iter)
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: ChatCompletionRequest = request_or_reply!(body);
    let native = match request.to_native() {
        Ok(native) => native,
        Err(e) => return error(&e),
    };
    let outcome = state.inference.chat(&native).await;
    let envelope = Envelope::new("chatcmpl", &request.model);
    reply_completion(outcome, envelope, request.stream, request.include_usage(), &CHAT).await
}

/// `POST /v1/completions`.
pub async fn completions(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: CompletionRequest = request_or_reply!(body);
    let native = match request.to_native() {
        Ok(native) => native,
        Err(e) => return error(&e),
    };
    let outcome = state.inference.generate(&native).await;
    let envelope = Envelope::new("cmpl", &request.model);
    reply_completion(outcome, envelope, request.stream, request.include_usage(), &TEXT).await
}

/// `POST /v1/embeddings`.
pub async fn embeddings(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: EmbeddingRequest = request_or_reply!(body);
    let prepared = (|| {
        let base64 = wants_base64(request.encoding_format.as_deref())?;
        let inputs = embedding::parse_inputs(&request.input)?;
        if inputs.is_empty() {
            return Err(HerdError::bad_request(
                "invalid input: expected a non-empty string or list",
            ));
        }
        let job = EmbedJob {
            model: &request.model,
            inputs,
            truncate: true,
            shape: Shape {
                dimensions: embedding::parse_dimensions(request.dimensions)?,
                normalize: true,
            },
            options: None,
            keep_alive: None,
        };
        Ok((job, base64))
    })();
    let (job, base64) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return error(&e),
    };
    match state.inference.embed(job).await {
        Ok(embedded) => {
            let timing = embedded.timing();
            let data: Vec<Value> = embedded
                .vectors
                .into_iter()
                .enumerate()
                .map(|(index, vector)| {
                    json!({ "object": "embedding", "embedding": encode_vector(vector, base64), "index": index })
                })
                .collect();
            let tokens = embedded.prompt_tokens;
            let answer = json!({
                "object": "list",
                "data": data,
                "model": request.model,
                "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
            });
            reply::timed(reply::json(200, &answer), &timing)
        }
        Err(e) => error(&e),
    }
}

/// `GET /v1/models`.
pub async fn models(state: Arc<AppState>) -> Reply {
    match show::openai_models(&state.store) {
        Ok(models) => reply::json(200, &json!({ "object": "list", "data": models })),
        Err(e) => error(&e),
    }
}

/// `GET /v1/models/{model}`; the name may hold `/` (`host/namespace/model:tag`).
pub async fn model(name: warp::path::Tail, state: Arc<AppState>) -> Reply {
    // Clients escape `:` and `/` in the name.
    let name = percent_encoding::percent_decode_str(name.as_str()).decode_utf8_lossy();
    match show::openai_model(&state.store, &name) {
        Ok(model) => reply::json(200, &model),
        Err(e) => error(&e),
    }
}

/// An error in Anthropic's shape.
fn anthropic_error(e: &HerdError) -> Reply {
    if e.status() >= 500 {
        tracing::error!("{e}");
    }
    reply::json(e.status(), &anthropic::error_body(e.status(), &e.to_string()))
}

/// `POST /v1/messages` (Anthropic's Messages API).
pub async fn messages(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: MessagesRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(message) => return reply::json(400, &anthropic::error_body(400, &message)),
    };
    let native = match request.to_native() {
        Ok(native) => native,
        Err(e) => return anthropic_error(&e),
    };
    let generation = match state.inference.chat(&native).await {
        Ok(Outcome::Streaming(generation)) => generation,
        Ok(_) => return anthropic_error(&HerdError::bad_request("the request has nothing to complete")),
        Err(e) => return anthropic_error(&e),
    };
    let id = anthropic::message_id();
    if request.stream {
        let timing = generation.timing();
        let events = encoded_events(generation, StreamEncoder::new(id, request.model));
        return reply::timed(reply::named_sse(events), &timing);
    }
    match collect(generation).await {
        Ok(whole) => reply::timed(
            reply::json(200, &anthropic::message(&id, &request.model, whole.part, &whole.done)),
            &whole.done.timing(),
        ),
        Err(e) => anthropic_error(&e),
    }
}

/// The named events an encoder makes of one generation (Anthropic's, the Responses API's).
fn encoded_events(generation: Box<Generation>, encoder: impl EventEncoder) -> impl Stream<Item = NamedEvent> + Send {
    futures_util::stream::unfold(Some((generation, encoder)), |state| async move {
        let (mut generation, mut encoder) = state?;
        match generation.next().await? {
            GenerationEvent::Text(text) => Some((encoder.text(text), Some((generation, encoder)))),
            GenerationEvent::Thinking(text) => Some((encoder.thinking(text), Some((generation, encoder)))),
            GenerationEvent::ToolCalls(calls) => Some((encoder.tool_calls(&calls), Some((generation, encoder)))),
            GenerationEvent::Done(done) => Some((encoder.done(&done), None)),
            GenerationEvent::Error(error) => Some((encoder.error(&error.to_string()), None)),
        }
    })
    .flat_map(futures_util::stream::iter)
}

/// `POST /v1/responses` (OpenAI's Responses API, stateless).
pub async fn responses(state: Arc<AppState>, body: Bytes) -> Reply {
    let request: ResponsesRequest = request_or_reply!(body);
    let native = match request.to_native() {
        Ok(native) => native,
        Err(e) => return error(&e),
    };
    let generation = match state.inference.chat(&native).await {
        Ok(Outcome::Streaming(generation)) => generation,
        Ok(_) => return error(&HerdError::bad_request("the request has nothing to complete")),
        Err(e) => return error(&e),
    };
    let frame = ResponseFrame::new(&request);
    if request.stream {
        let timing = generation.timing();
        return reply::timed(
            reply::named_sse(encoded_events(generation, ResponseStream::new(frame))),
            &timing,
        );
    }
    match collect(generation).await {
        Ok(whole) => reply::timed(
            reply::json(200, &frame.finished(&whole.part, &whole.done)),
            &whole.done.timing(),
        ),
        Err(e) => error(&e),
    }
}
