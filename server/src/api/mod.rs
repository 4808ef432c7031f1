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

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::access::{Refusal, RequestFacts};
use crate::config::Config;
use crate::inference::Inference;
use crate::registry::Registry;
use crate::scheduler::Scheduler;
use crate::store::Store;

/// Largest JSON body accepted (blob uploads are streamed to disk instead).
const MAX_JSON_BODY: u64 = 64 * 1024 * 1024;

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
}

/// Every route of the API.
pub fn routes(state: Arc<AppState>) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let state = warp::any().map(move || state.clone());
    // Chunked bodies are read too (Ollama accepts them); the cap holds either way.
    let json_body = warp::body::stream().and_then(read_capped);

    let root = warp::path::end()
        .and(warp::get().or(warp::head()).unify())
        .map(|| "herd is running");
    let version = warp::path!("api" / "version")
        .and(warp::get().or(warp::head()).unify())
        .map(|| warp::reply::json(&serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })));
    let generate = warp::path!("api" / "generate")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::generate);
    let chat = warp::path!("api" / "chat")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::chat);
    let embed = warp::path!("api" / "embed")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::embed);
    let embeddings = warp::path!("api" / "embeddings")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::embeddings);
    let chat_completions = warp::path!("v1" / "chat" / "completions")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(v1::chat_completions);
    let completions = warp::path!("v1" / "completions")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(v1::completions);
    let v1_embeddings = warp::path!("v1" / "embeddings")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
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
        .and(json_body)
        .then(v1::messages);
    let v1_responses = warp::path!("v1" / "responses")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(v1::responses);
    let create = warp::path!("api" / "create")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::create);
    let pull = warp::path!("api" / "pull")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::pull);
    let push = warp::path!("api" / "push")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::push);
    let export = warp::path!("api" / "export")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::export);
    let import = warp::path!("api" / "import")
        .and(warp::post())
        .and(state.clone())
        .and(warp::body::stream())
        .then(handlers::import);
    let show = warp::path!("api" / "show")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::show);
    let copy = warp::path!("api" / "copy")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::copy);
    let delete = warp::path!("api" / "delete")
        .and(warp::delete())
        .and(state.clone())
        .and(json_body)
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
    let guard = warp::path::full()
        .and(warp::header::optional::<String>("host"))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::addr::remote())
        .and(state)
        .and_then(
            |path: warp::path::FullPath,
             host: Option<String>,
             authorization: Option<String>,
             remote: Option<std::net::SocketAddr>,
             state: Arc<AppState>| async move {
                let facts = RequestFacts {
                    path: path.as_str(),
                    host: host.as_deref(),
                    authorization: authorization.as_deref(),
                    remote,
                };
                state.config.access.check(&facts).map_err(|refusal| {
                    tracing::warn!(path = path.as_str(), ?remote, "refused: {refusal}");
                    warp::reject::custom(Refused(refusal))
                })
            },
        )
        .untuple_one();
    guard.and(all).recover(recover).unify().with(warp::trace::request())
}

/// A request the access policy refused.
#[derive(Debug)]
struct Refused(Refusal);

impl warp::reject::Reject for Refused {}

/// Why a JSON body could not be read.
#[derive(Debug)]
enum BadBody {
    /// Over [`MAX_JSON_BODY`].
    TooLarge,
    /// The connection failed while the body was arriving.
    Unreadable(String),
}

impl warp::reject::Reject for BadBody {}

/// Reads a request body into memory, refusing it as soon as it passes [`MAX_JSON_BODY`].
async fn read_capped(
    mut body: impl futures_util::Stream<Item = Result<impl bytes::Buf, warp::Error>> + Unpin,
) -> Result<bytes::Bytes, Rejection> {
    use bytes::BufMut;
    use futures_util::StreamExt;
    let mut collected = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| warp::reject::custom(BadBody::Unreadable(e.to_string())))?;
        if collected.len() + chunk.remaining() > MAX_JSON_BODY as usize {
            return Err(warp::reject::custom(BadBody::TooLarge));
        }
        collected.put(chunk);
    }
    Ok(collected.freeze())
}

/// Turns warp's rejections into Ollama-style `{"error": ...}` answers.
async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    let (status, message) = if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "404 page not found".to_string())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed".to_string())
    } else if let Some(Refused(refusal)) = rejection.find::<Refused>() {
        (
            StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN),
            refusal.to_string(),
        )
    } else if let Some(bad) = rejection.find::<BadBody>() {
        match bad {
            BadBody::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {MAX_JSON_BODY} bytes"),
            ),
            BadBody::Unreadable(e) => (StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")),
        }
    } else {
        (StatusCode::BAD_REQUEST, format!("{rejection:?}"))
    };
    Ok(reply::error(status.as_u16(), &message))
}
