//! Building responses: JSON objects, NDJSON streams and `{"error": ...}` answers.

use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use warp::http::{header, Response, StatusCode};
use warp::hyper::Body;

use crate::error::HerdError;
use crate::inference::Timing;

/// A JSON answer with `status`.
pub fn json<T: Serialize>(status: u16, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// `{"error": message}` with `status`.
pub fn error(status: u16, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// The answer for a domain error.
pub fn herd_error(e: &HerdError) -> Response<Body> {
    if e.status() >= 500 {
        tracing::error!("{e}");
    }
    error(e.status(), &e.to_string())
}

/// Adds a `Server-Timing` header with what `timing` knows (milliseconds, as the header counts).
pub fn timed(mut response: Response<Body>, timing: &Timing) -> Response<Body> {
    let entries = [
        ("load", Some(timing.load)),
        ("queue", timing.queue),
        ("prompt_eval", timing.prompt_eval),
        ("decode", timing.decode),
    ];
    let value = entries
        .iter()
        .filter_map(|(name, duration)| duration.map(|d| server_timing_entry(name, d)))
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = header::HeaderValue::from_str(&value) {
        response.headers_mut().append("server-timing", value);
    }
    response
}

/// One `Server-Timing` metric: `name;dur=<milliseconds>`.
pub fn server_timing_entry(name: &str, duration: std::time::Duration) -> String {
    format!("{name};dur={:.3}", duration.as_secs_f64() * 1000.0)
}

/// An empty 200 (what `/api/copy` and `/api/delete` answer).
pub fn empty_ok() -> Response<Body> {
    Response::new(Body::empty())
}

/// One JSON object per line, flushed as each is produced.
pub fn ndjson<S>(lines: S) -> Response<Body>
where
    S: Stream<Item = serde_json::Value> + Send + 'static,
{
    use futures_util::StreamExt;
    let body = lines.map(|value| {
        let mut line = serde_json::to_vec(&value).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::wrap_stream(body))
        .unwrap_or_default()
}

/// Server-sent events: each value as a `data:` event, then `data: [DONE]` (OpenAI's end).
pub fn sse<S>(events: S) -> Response<Body>
where
    S: Stream<Item = serde_json::Value> + Send + 'static,
{
    use futures_util::StreamExt;
    let body = events
        .map(|value| format!("data: {value}\n\n"))
        .chain(futures_util::stream::once(async { "data: [DONE]\n\n".to_string() }))
        .map(|event| Ok::<_, std::convert::Infallible>(Bytes::from(event)));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::wrap_stream(body))
        .unwrap_or_default()
}

/// One named server-sent event: its name and data.
pub type NamedEvent = (&'static str, serde_json::Value);

/// Turns the events of one generation into named server-sent events (Anthropic's Messages
/// stream, the Responses API's), keeping whatever state the format needs between them.
pub trait EventEncoder: Send + 'static {
    /// Events for a piece of answer text.
    fn text(&mut self, text: String) -> Vec<NamedEvent>;
    /// Events for a piece of reasoning.
    fn thinking(&mut self, text: String) -> Vec<NamedEvent>;
    /// Events for whole tool calls.
    fn tool_calls(&mut self, calls: &[crate::tools::ToolCall]) -> Vec<NamedEvent>;
    /// The closing events.
    fn done(&mut self, done: &crate::inference::FinalMetrics) -> Vec<NamedEvent>;
    /// The events for a failure after the stream began.
    fn error(&mut self, message: &str) -> Vec<NamedEvent>;
}

/// Named server-sent events (`event: <name>` then `data: <json>`), as Anthropic streams.
pub fn named_sse<S>(events: S) -> Response<Body>
where
    S: Stream<Item = NamedEvent> + Send + 'static,
{
    use futures_util::StreamExt;
    let body = events.map(|(name, value)| {
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("event: {name}\ndata: {value}\n\n")))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::wrap_stream(body))
        .unwrap_or_default()
}

/// Decodes a JSON request body; the error is Ollama's message for an empty or malformed one.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("missing request body".to_string());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid request: {e}"))
}

/// The current time as Ollama writes `created_at`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
