//! The HTTP API: warp routes that decode a request, call one domain function and encode
//! the answer. Invariant: no handler touches files, sockets or llama.cpp.

mod handlers;
mod reply;
pub mod types;

use std::convert::Infallible;
use std::sync::Arc;

use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::config::Config;
use crate::inference::Inference;
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
}

/// Every route of the API.
pub fn routes(state: Arc<AppState>) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let state = warp::any().map(move || state.clone());
    let json_body = warp::body::content_length_limit(MAX_JSON_BODY).and(warp::body::bytes());

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
    let create = warp::path!("api" / "create")
        .and(warp::post())
        .and(state.clone())
        .and(json_body)
        .then(handlers::create);
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

    root.map(Reply::into_response)
        .or(version.map(Reply::into_response))
        .unify()
        .or(generate)
        .unify()
        .or(chat)
        .unify()
        .or(create)
        .unify()
        .or(show)
        .unify()
        .or(copy)
        .unify()
        .or(delete)
        .unify()
        .or(tags)
        .unify()
        .or(ps)
        .unify()
        .or(blob_head)
        .unify()
        .or(blob_upload)
        .unify()
        .recover(recover)
        .unify()
        .with(warp::trace::request())
}

/// Turns warp's rejections into Ollama-style `{"error": ...}` answers.
async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    let (status, message) = if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "404 page not found".to_string())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed".to_string())
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_JSON_BODY} bytes"),
        )
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length header is required".to_string(),
        )
    } else {
        (StatusCode::BAD_REQUEST, format!("{rejection:?}"))
    };
    Ok(reply::error(status.as_u16(), &message))
}
