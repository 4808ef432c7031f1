//! The HTTP API: warp routes that decode a request, call one domain function and encode
//! the answer. Invariant: no handler touches files, sockets or llama.cpp.

mod anthropic;
mod handlers;
mod openai;
mod reply;
mod responses;
pub mod types;
mod v1;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::access::{Refusal, RequestFacts};
use crate::config::Config;
use crate::inference::Inference;
use crate::readiness::Readiness;
use crate::registry::Registry;
use crate::scheduler::Scheduler;
use crate::store::Store;

/// Largest body of an inference request: prompts, conversations, inline images.
const MAX_INFERENCE_BODY: u64 = 64 * 1024 * 1024;
/// Largest `/api/create` body: a template, messages, a license, the `files` map.
const MAX_CREATE_BODY: u64 = 16 * 1024 * 1024;
/// Largest body of every other JSON request (a model name and a few flags). Blob uploads
/// and imports are streamed to disk instead, never held in memory.
const MAX_SMALL_BODY: u64 = 1024 * 1024;

/// What every handler can reach.
pub struct AppState {
    /// Server configuration.
    pub config: Arc<Config>,
    /// The model store.
    pub store: Arc<Store>,
    /// Loaded runners.
    pub scheduler: Scheduler,
    /// Generate and chat.
    pub inference: Inference,
    /// Pull and push.
    pub registry: Registry,
    /// What `GET /ready` answers.
    pub readiness: Readiness,
}

/// Every route of the API.
pub fn routes(state: Arc<AppState>) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let state = warp::any().map(move || state.clone());
    let inference_body = json_body(MAX_INFERENCE_BODY);
    let small_body = json_body(MAX_SMALL_BODY);

    let root = warp::path::end()
        .and(warp::get().or(warp::head()).unify())
        .map(|| "herd is running");
    let version = warp::path!("api" / "version")
        .and(warp::get().or(warp::head()).unify())
        .map(|| warp::reply::json(&serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })));
    let ready = warp::path!("ready")
        .and(warp::get().or(warp::head()).unify())
        .and(state.clone())
        .then(handlers::ready);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(state.clone())
        .then(handlers::prometheus_metrics);
    let generate = warp::path!("api" / "generate")
        .and(warp::post())
        .and(state.clone())
        .and(inference_body.clone())
        .then(handlers::generate);
    let chat = warp::path!("api" / "chat")
        .and(warp::post())
        .and(state.clone())
        .and(inference_body.clone())
        .then(handlers::chat);
    let embed = warp::path!("api" / "embed")
        .and(warp::post())
        .and(state.clone())
        .and(inference_body.clone())
        .then(handlers::embed);
    let embeddings = warp::path!("api" / "embeddings")
        .and(warp::post())
        .and(state.clone())
        .and(inference_body.clone())
        .then(handlers::embeddings);
    let chat_completions = warp::path!("v1" / "chat" / "completions")
        .and(warp::post())
        .and(state.clone())
        .and(inference_body.clone())
        .then(v1::chat_completions);
    let completions = warp::path!("v1" / "completions")
        .and(warp::post())
        .and(state.clone())
        .and(inference_body.clone())
        .then(v1::completions);
    let v1_embeddings = warp::path!("v1" / "embeddings")
        .and(warp::post())
        .and(state.clone())
        .and(inference_body.clone())
        .then(v1::embeddings);
    let v1_models = warp::path!("v1" / "models")
        .and(warp::get())
        .and(state.clone())
        .then(v1::models);
    let v1_model = warp::path("v1")
        .and(warp::path("models"))
        .and(warp::path::tail())
        .and(warp::get())
        .and(state.clone())
        .then(v1::model);
    let messages = warp::path!("v1" / "messages")
        .and(warp::post())
        .and(state.clone())
        .and(inference_body.clone())
        .then(v1::messages);
    let v1_responses = warp::path!("v1" / "responses")
        .and(warp::post())
        .and(state.clone())
        .and(inference_body.clone())
        .then(v1::responses);
    let create = warp::path!("api" / "create")
        .and(warp::post())
        .and(state.clone())
        .and(json_body(MAX_CREATE_BODY))
        .then(handlers::create);
    let pull = warp::path!("api" / "pull")
        .and(warp::post())
        .and(state.clone())
        .and(small_body.clone())
        .then(handlers::pull);
    let push = warp::path!("api" / "push")
        .and(warp::post())
        .and(state.clone())
        .and(small_body.clone())
        .then(handlers::push);
    let export = warp::path!("api" / "export")
        .and(warp::post())
        .and(state.clone())
        .and(small_body.clone())
        .then(handlers::export);
    let import = warp::path!("api" / "import")
        .and(warp::post())
        .and(state.clone())
        .and(warp::body::stream())
        .then(handlers::import);
    let show = warp::path!("api" / "show")
        .and(warp::post())
        .and(state.clone())
        .and(small_body.clone())
        .then(handlers::show);
    let copy = warp::path!("api" / "copy")
        .and(warp::post())
        .and(state.clone())
        .and(small_body.clone())
        .then(handlers::copy);
    let delete = warp::path!("api" / "delete")
        .and(warp::delete())
        .and(state.clone())
        .and(small_body.clone())
        .then(handlers::delete);
    let tags = warp::path!("api" / "tags")
        .and(warp::get().or(warp::head()).unify())
        .and(state.clone())
        .then(handlers::tags);
    let ps = warp::path!("api" / "ps")
        .and(warp::get())
        .and(state.clone())
        .then(handlers::ps);
    let blob_head = warp::path!("api" / "blobs" / String)
        .and(warp::head())
        .and(state.clone())
        .then(handlers::blob_exists);
    let blob_upload = warp::path!("api" / "blobs" / String)
        .and(warp::post())
        .and(state.clone())
        .and(warp::body::stream())
        .then(handlers::upload_blob);

    // Each route boxed, so the combined filter's type stays shallow (it compiles in seconds).
    let routes: Vec<BoxedFilter<(warp::reply::Response,)>> = vec![
        root.map(Reply::into_response).boxed(),
        version.map(Reply::into_response).boxed(),
        ready.boxed(),
        metrics.boxed(),
        generate.boxed(),
        chat.boxed(),
        embed.boxed(),
        embeddings.boxed(),
        chat_completions.boxed(),
        completions.boxed(),
        v1_embeddings.boxed(),
        v1_models.boxed(),
        v1_model.boxed(),
        messages.boxed(),
        v1_responses.boxed(),
        create.boxed(),
        pull.boxed(),
        push.boxed(),
        export.boxed(),
        import.boxed(),
        show.boxed(),
        copy.boxed(),
        delete.boxed(),
        tags.boxed(),
        ps.boxed(),
        blob_head.boxed(),
        blob_upload.boxed(),
    ];
    let all = routes
        .into_iter()
        .reduce(|all, route| all.or(route).unify().boxed())
        .expect("at least one route");
    // Every request passes the access policy first.
    let asked = warp::path::full()
        .and(warp::header::optional::<String>("host"))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::addr::remote())
        .and(warp::header::optional::<String>("origin"))
        .map(
            |path: warp::path::FullPath, host, authorization, remote, origin| AccessRequest {
                path: path.as_str().to_string(),
                host,
                authorization,
                remote,
                origin,
            },
        );
    let guard = asked
        .and(state.clone())
        .and_then(|asked: AccessRequest, state: Arc<AppState>| async move {
            let facts = asked.facts();
            state.config.access.check(&facts).map_err(refuse(&facts))
        })
        .untuple_one();
    // OPTIONS: a browser asking before a cross-origin request that is not a simple one (any
    // OPTIONS answers 204 on an allowed host, as Ollama's does).
    // (Not `warp::options()`: its 405 for other methods would outrank every route's 404.)
    let options = warp::method()
        .and_then(|method: warp::http::Method| async move {
            match method {
                warp::http::Method::OPTIONS => Ok(()),
                _ => Err(warp::reject::not_found()),
            }
        })
        .untuple_one();
    let preflight =
        options
            .and(asked)
            .and(state.clone())
            .and_then(|asked: AccessRequest, state: Arc<AppState>| async move {
                let facts = asked.facts();
                state.config.access.check_preflight(&facts).map_err(refuse(&facts))?;
                Ok::<_, Rejection>(preflight_answer())
            });
    let answered = preflight.or(guard.and(all)).unify().recover(recover).unify();
    // Every answer is counted and timed; every answer to an allowed page says so, errors
    // too, so that the page can read them.
    warp::any()
        .map(Instant::now)
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(answered)
        .and(state)
        .map(
            |arrived: Instant,
             method: warp::http::Method,
             path: warp::path::FullPath,
             asked: warp::http::HeaderMap,
             mut response: warp::reply::Response,
             state: Arc<AppState>| {
                crate::metrics::request_answered(endpoint(path.as_str()), method.as_str(), response.status().as_u16());
                // Busy (queue full) or not ready: clients that honour it retry in a second.
                if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                    let headers = response.headers_mut();
                    headers
                        .entry("retry-after")
                        .or_insert(warp::http::HeaderValue::from_static("1"));
                }
                let total = reply::server_timing_entry("total", arrived.elapsed());
                if let Ok(value) = warp::http::HeaderValue::from_str(&total) {
                    response.headers_mut().append("server-timing", value);
                }
                let header = |name: &str| asked.get(name).and_then(|v| v.to_str().ok());
                if let Some(origin) = header("origin").filter(|o| state.config.access.allows_origin(o, header("host")))
                {
                    let headers = response.headers_mut();
                    if let Ok(value) = warp::http::HeaderValue::from_str(origin) {
                        headers.insert("access-control-allow-origin", value);
                    }
                    headers.append("vary", warp::http::HeaderValue::from_static("Origin"));
                }
                response
            },
        )
        .with(warp::trace::request())
}

/// Every route's path, its variable part as a placeholder; `/metrics` counts requests by it.
const ENDPOINTS: &[&str] = &[
    "/",
    "/ready",
    "/metrics",
    "/api/version",
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/api/create",
    "/api/pull",
    "/api/push",
    "/api/export",
    "/api/import",
    "/api/show",
    "/api/copy",
    "/api/delete",
    "/api/tags",
    "/api/ps",
    "/api/blobs/:digest",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/:model",
    "/v1/messages",
    "/v1/responses",
];

/// The endpoint a request path belongs to (`other` for none: unknown paths would otherwise
/// make a series each).
fn endpoint(path: &str) -> &'static str {
    let matches = |route: &&&str| match route.split_once(':') {
        Some((prefix, _)) => path.len() > prefix.len() && path.starts_with(prefix),
        None => path == **route,
    };
    ENDPOINTS.iter().find(matches).copied().unwrap_or("other")
}

/// What the access policy looks at, taken from a request.
struct AccessRequest {
    path: String,
    host: Option<String>,
    authorization: Option<String>,
    remote: Option<std::net::SocketAddr>,
    origin: Option<String>,
}

impl AccessRequest {
    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            path: &self.path,
            host: self.host.as_deref(),
            authorization: self.authorization.as_deref(),
            remote: self.remote,
            origin: self.origin.as_deref(),
        }
    }
}

/// Logs a refusal and turns it into a rejection.
fn refuse(facts: &RequestFacts<'_>) -> impl FnOnce(Refusal) -> Rejection {
    let (path, remote) = (facts.path.to_string(), facts.remote);
    move |refusal| {
        tracing::warn!(path, ?remote, "refused: {refusal}");
        warp::reject::custom(Refused(refusal))
    }
}

/// Headers a client may send cross-origin: Ollama's list, and the Anthropic SDK's.
const CORS_ALLOWED_HEADERS: &str = "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, \
x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, x-stainless-helper-method, x-stainless-lang, \
x-stainless-package-version, x-stainless-poll-helper, x-stainless-retry-count, x-stainless-runtime, \
x-stainless-runtime-version, x-stainless-timeout, anthropic-version, anthropic-beta, x-api-key, \
anthropic-dangerous-direct-browser-access";

/// The answer to an allowed preflight: 204 with what cross-origin requests may do; the
/// Allow-Origin header is added with every answer's.
fn preflight_answer() -> warp::reply::Response {
    let mut response = warp::reply::Response::new(Default::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        "access-control-allow-methods",
        warp::http::HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
    );
    headers.insert(
        "access-control-allow-headers",
        warp::http::HeaderValue::from_static(CORS_ALLOWED_HEADERS),
    );
    headers.insert("access-control-max-age", warp::http::HeaderValue::from_static("43200"));
    response
}

/// A request the access policy refused.
#[derive(Debug)]
struct Refused(Refusal);

impl warp::reject::Reject for Refused {}

/// Why a JSON body could not be read.
#[derive(Debug)]
enum BadBody {
    /// Over the route's limit, in bytes.
    TooLarge(u64),
    /// The connection failed while the body was arriving.
    Unreadable(String),
}

impl warp::reject::Reject for BadBody {}

/// A request body read into memory, refused (413) as soon as it passes `limit` bytes.
/// Chunked bodies are read too (Ollama accepts them); the cap holds either way.
fn json_body(limit: u64) -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    warp::body::stream().and_then(move |body| read_capped(body, limit))
}

async fn read_capped(
    mut body: impl futures_util::Stream<Item = Result<impl bytes::Buf, warp::Error>> + Unpin,
    limit: u64,
) -> Result<bytes::Bytes, Rejection> {
    use bytes::BufMut;
    use futures_util::StreamExt;
    let mut collected = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| warp::reject::custom(BadBody::Unreadable(e.to_string())))?;
        if (collected.len() + chunk.remaining()) as u64 > limit {
            return Err(warp::reject::custom(BadBody::TooLarge(limit)));
        }
        collected.put(chunk);
    }
    Ok(collected.freeze())
}

/// Turns warp's rejections into Ollama-style `{"error": ...}` answers. A rejected request's
/// body may be unread (an oversized one is cut off), so the connection closes after the
/// answer, and says so: a client that reused it would see its next request fail.
async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    // A refusal or a bad body first: such a request also fails the routes it did not reach.
    let (status, message) = if let Some(Refused(refusal)) = rejection.find::<Refused>() {
        (
            StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN),
            refusal.to_string(),
        )
    } else if let Some(bad) = rejection.find::<BadBody>() {
        match bad {
            BadBody::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {limit} bytes"),
            ),
            BadBody::Unreadable(e) => (StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")),
        }
    } else if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "404 page not found".to_string())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed".to_string())
    } else {
        (StatusCode::BAD_REQUEST, format!("{rejection:?}"))
    };
    let mut response = reply::error(status.as_u16(), &message);
    response.headers_mut().insert(
        warp::http::header::CONNECTION,
        warp::http::HeaderValue::from_static("close"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn paths_are_counted_by_their_route() {
        assert_eq!(endpoint("/"), "/");
        assert_eq!(endpoint("/api/chat"), "/api/chat");
        assert_eq!(endpoint("/api/blobs/sha256-abc"), "/api/blobs/:digest");
        assert_eq!(endpoint("/api/blobs/"), "other");
        assert_eq!(endpoint("/v1/models"), "/v1/models");
        assert_eq!(endpoint("/v1/models/gemma3:270m"), "/v1/models/:model");
        assert_eq!(endpoint("/../../etc/passwd"), "other");
    }
}
