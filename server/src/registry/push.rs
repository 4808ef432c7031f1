//! `push`: for each blob, skip it when the registry has it, mount it from the repository it
//! came from when that is on the same registry, else upload it in chunks; then PUT the
//! manifest's exact bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Response, StatusCode, Url};

use super::client::Connection;
use super::{report_while, Progress, Registry, RegistryError, TransferStatus};
use crate::store::{Layer, ModelName, Store, StoreError};

/// Bytes sent per PATCH.
const CHUNK: u64 = 64 << 20;
/// Bytes read from disk per body piece.
const READ_PIECE: usize = 1 << 20;

impl Registry {
    /// Pushes the local model `name` through `connection`, reporting Ollama's status lines.
    pub async fn push(
        &self,
        connection: Connection,
        store: &Arc<Store>,
        name: &ModelName,
        progress: &Progress,
    ) -> Result<(), RegistryError> {
        progress.send(TransferStatus::message("retrieving manifest"));
        let stored = store.read_manifest(name)?;
        let bytes = store.read_manifest_bytes(name)?;
        for layer in stored
            .manifest
            .layers
            .iter()
            .chain(std::iter::once(&stored.manifest.config))
        {
            push_blob(&connection, store, name, layer, progress).await?;
        }
        progress.send(TransferStatus::message("pushing manifest"));
        let url = connection.url(&format!("manifests/{}", name.tag));
        let media_type = stored.manifest.media_type.clone();
        let response = connection
            .send(|c| {
                c.put(url.clone())
                    .header(CONTENT_TYPE, media_type.as_str())
                    .body(bytes.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(connection.unexpected("pushing the manifest", response).await);
        }
        progress.send(TransferStatus::message("success"));
        Ok(())
    }
}

async fn push_blob(
    connection: &Connection,
    store: &Store,
    name: &ModelName,
    layer: &Layer,
    progress: &Progress,
) -> Result<(), RegistryError> {
    let digest = &layer.digest;
    let path = store.blob_path(digest);
    let file = File::open(&path).map_err(|_| StoreError::BlobNotFound(digest.clone()))?;
    let actual = file
        .metadata()
        .map_err(|e| StoreError::from_io("cannot read a blob", e))?
        .len();
    if actual != layer.size {
        return Err(RegistryError::LocalBlobSize {
            digest: digest.clone(),
            expected: layer.size,
            actual,
        });
    }
    let done = |completed| progress.send(TransferStatus::blob("pushing", digest, layer.size, completed));
    let blob_url = connection.url(&format!("blobs/{digest}"));
    let head = connection.send(|c| c.head(blob_url.clone())).await?;
    if head.status() == StatusCode::OK {
        let remote = head
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if remote.is_some_and(|n| n != layer.size) {
            return Err(connection.protocol(format!(
                "the registry's {digest} has {} bytes, the manifest says {}",
                remote.unwrap_or_default(),
                layer.size
            )));
        }
        done(layer.size);
        return Ok(());
    }

    let mut location = match mount_source(connection, name, layer) {
        Some(source) => {
            let url = connection.url("blobs/uploads/");
            let response = connection
                .send(|c| {
                    c.post(url.clone())
                        .query(&[("mount", digest.to_string()), ("from", source.clone())])
                        .header(CONTENT_LENGTH, 0)
                })
                .await?;
            if response.status() == StatusCode::CREATED {
                tracing::info!(%digest, from = %source, "mounted a blob from another repository");
                done(layer.size);
                return Ok(());
            }
            upload_location(connection, response).await?
        }
        None => start_upload(connection).await?,
    };

    let file = Arc::new(file);
    let sent = Arc::new(AtomicU64::new(0));
    let upload = async {
        let mut restarted = false;
        let mut offset = 0u64;
        while offset < layer.size {
            let length = CHUNK.min(layer.size - offset);
            let chunk_url = location.clone();
            let response = connection
                .send(|c| {
                    c.patch(chunk_url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, length)
                        .header(CONTENT_RANGE, format!("{offset}-{}", offset + length - 1))
                        .body(file_body(file.clone(), offset, length, sent.clone()))
                })
                .await?;
            match response.status() {
                StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                    location = upload_location(connection, response).await?;
                    offset += length;
                }
                // The registry lost track of the upload (416: out of order): start it again, once.
                StatusCode::RANGE_NOT_SATISFIABLE if !restarted => {
                    restarted = true;
                    tracing::warn!(%digest, "the registry refused a chunk's range; restarting the upload");
                    location = start_upload(connection).await?;
                    offset = 0;
                    sent.store(0, Ordering::Relaxed);
                }
                _ => return Err(connection.unexpected(&format!("uploading {digest}"), response).await),
            }
        }
        let mut finish = location.clone();
        finish.query_pairs_mut().append_pair("digest", &digest.to_string());
        let response = connection
            .send(|c| c.put(finish.clone()).header(CONTENT_LENGTH, 0))
            .await?;
        if !response.status().is_success() {
            return Err(connection
                .unexpected(&format!("finishing the upload of {digest}"), response)
                .await);
        }
        Ok(())
    };
    report_while(upload, || done(sent.load(Ordering::Relaxed).min(layer.size))).await?;
    done(layer.size);
    Ok(())
}

/// The repository to mount `layer` from: the one its `from` names, when that is another
/// repository on the same registry.
fn mount_source(connection: &Connection, name: &ModelName, layer: &Layer) -> Option<String> {
    let from = ModelName::parse(layer.from.as_deref()?).ok()?;
    let source = format!("{}/{}", from.namespace, from.model);
    (from.host.eq_ignore_ascii_case(&name.host) && source != connection.repository()).then_some(source)
}

async fn start_upload(connection: &Connection) -> Result<Url, RegistryError> {
    let url = connection.url("blobs/uploads/");
    let response = connection
        .send(|c| c.post(url.clone()).header(CONTENT_LENGTH, 0))
        .await?;
    upload_location(connection, response).await
}

/// The upload URL a 202 names (always the latest one, as the protocol requires).
async fn upload_location(connection: &Connection, response: Response) -> Result<Url, RegistryError> {
    if !matches!(
        response.status(),
        StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED
    ) {
        return Err(connection.unexpected("starting an upload", response).await);
    }
    let location = response
        .headers()
        .get("Docker-Upload-Location")
        .or_else(|| response.headers().get(LOCATION))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| connection.protocol("an upload answer without a Location".into()))?
        .to_string();
    connection.resolve(&location)
}

/// `length` bytes of `file` from `offset` as a request body, read in pieces off the async
/// threads, counting what is sent.
fn file_body(file: Arc<File>, offset: u64, length: u64, sent: Arc<AtomicU64>) -> reqwest::Body {
    let end = offset + length;
    let pieces = futures_util::stream::try_unfold(offset, move |position| {
        let (file, sent) = (file.clone(), sent.clone());
        async move {
            if position >= end {
                return Ok(None);
            }
            let size = READ_PIECE.min((end - position) as usize);
            let piece = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                let mut buf = vec![0u8; size];
                file.read_exact_at(&mut buf, position)?;
                Ok(buf)
            })
            .await
            .map_err(std::io::Error::other)??;
            sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
            Ok::<_, std::io::Error>(Some((bytes::Bytes::from(piece), position + size as u64)))
        }
    });
    reqwest::Body::wrap_stream(pieces)
}
