//! Building responses: JSON objects, NDJSON streams and `{"error": ...}` answers.

use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use warp::http::{header, Response, StatusCode};
use warp::hyper::Body;

use crate::error::HerdError;

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
