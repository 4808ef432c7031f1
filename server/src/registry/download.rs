//! Downloading one blob into the store: parallel HTTP Range parts written into
//! `blobs/sha256-<hex>-partial`, their progress kept beside it in `...-partial.json` so that a
//! pull stopped by Ctrl-C, a crash, a restart or a dead registry resumes where it stopped.
//! The blob enters the store only after its sha256 matched.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::client::Connection;
use super::RegistryError;
use crate::store::{Digest, Store, StoreError};

/// Smallest part a blob is split into.
const MIN_PART: u64 = 16 << 20;
/// Largest part.
const MAX_PART: u64 = 1 << 30;
/// Parts fetched at once.
const PARALLEL_PARTS: usize = 8;
/// Failed requests a part may make before the pull fails.
const ATTEMPTS: u32 = 5;
/// A part that receives nothing for this long is retried.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes written to disk at once.
const WRITE_BUFFER: usize = 1 << 20;
/// How often progress is recorded while bytes arrive (a crash loses at most this much).
const SAVE_INTERVAL: Duration = Duration::from_millis(100);

/// Progress of one blob, read by whoever reports it.
#[derive(Debug, Default)]
pub struct BlobProgress {
    /// Bytes on disk.
    pub completed: AtomicU64,
    /// Set while the finished download is being hashed.
    pub verifying: AtomicBool,
}

/// The resume record of a partial download.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PartialState {
    digest: Digest,
    size: u64,
    parts: Vec<Part>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Part {
    offset: u64,
    size: u64,
    completed: u64,
}

impl PartialState {
    fn new(digest: Digest, size: u64) -> Self {
        let part_size = (size / 16).clamp(MIN_PART, MAX_PART);
        let parts = (0..size.div_ceil(part_size).max(1))
            .map(|i| {
                let offset = i * part_size;
                Part {
                    offset,
                    size: part_size.min(size - offset),
                    completed: 0,
                }
            })
            .collect();
        Self { digest, size, parts }
    }

    fn completed(&self) -> u64 {
        self.parts.iter().map(|p| p.completed).sum()
    }

    /// How many bytes from the start are all written.
    fn contiguous(&self) -> u64 {
        match self.parts.iter().find(|p| p.completed < p.size) {
            Some(part) => part.offset + part.completed,
            None => self.size,
        }
    }

    /// A saved record, if it is for this blob and its parts tile the blob.
    fn load(path: &Path, digest: &Digest, size: u64) -> Option<Self> {
        let state: Self = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let mut next = 0;
        for part in &state.parts {
            if part.offset != next || part.completed > part.size {
                return None;
            }
            next += part.size;
        }
        (state.digest == *digest && state.size == size && next == size).then_some(state)
    }
}

/// Bytes of `digest` already on disk from an interrupted download (0 when there is none).
pub fn resumable_bytes(store: &Store, digest: &Digest, size: u64) -> u64 {
    if !store.partial_blob_path(digest).is_file() {
        return 0;
    }
    PartialState::load(&store.partial_state_path(digest), digest, size).map_or(0, |s| s.completed())
}

/// Downloads the blob `digest` of `size` bytes into the store, resuming a partial download,
/// and verifies it. A blob whose bytes do not match is fetched once more from scratch.
pub async fn download_blob(
    connection: &Connection,
    store: &Store,
    digest: &Digest,
    size: u64,
    progress: &BlobProgress,
) -> Result<(), RegistryError> {
    let partial = store.partial_blob_path(digest);
    let state_path = store.partial_state_path(digest);
    for attempt in 0..2 {
        progress.verifying.store(false, Ordering::Relaxed);
        let actual = fetch_parts(connection, digest, size, &partial, &state_path, progress).await?;
        let expected = digest;
        if actual == *expected {
            return store.commit_partial(digest).map_err(RegistryError::Store);
        }
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&state_path);
        progress.completed.store(0, Ordering::Relaxed);
        if attempt == 0 {
            tracing::warn!(%digest, %actual, "downloaded blob does not match its digest; fetching it again");
            continue;
        }
        return Err(RegistryError::DigestMismatch {
            expected: expected.clone(),
            actual,
        });
    }
    unreachable!("the loop returns on its second pass")
}

/// What the parts of one download share.
struct Shared<'a> {
    connection: &'a Connection,
    digest: &'a Digest,
    file: Arc<File>,
    state: Arc<Mutex<PartialState>>,
    state_path: &'a Path,
    progress: &'a BlobProgress,
    last_save: Mutex<std::time::Instant>,
}

impl Shared<'_> {
    /// Records the bytes written so far (blocking). Not fsynced: a killed process loses
    /// nothing from the page cache, and should a power cut leave the record ahead of the
    /// data, the digest check at the end catches it and the blob is fetched again.
    fn save(&self) -> io::Result<()> {
        let snapshot = self.state.lock().expect("state lock").clone();
        let temp = self
            .state_path
            .with_extension(format!("json.{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&temp, serde_json::to_vec(&snapshot).map_err(io::Error::other)?)?;
        std::fs::rename(&temp, self.state_path)
    }
}

/// Records what arrived when the download ends in any way: finished, failed, or dropped
/// because every pull waiting for it went away.
struct SaveOnDrop<'a, 'b>(&'a Shared<'b>, Arc<AtomicBool>);

impl Drop for SaveOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.1.store(true, Ordering::Relaxed);
        if let Err(e) = self.0.save() {
            tracing::warn!(digest = %self.0.digest, "cannot record download progress: {e}");
        }
    }
}

/// Fetches what is missing of the blob and returns the digest of the whole partial file.
async fn fetch_parts(
    connection: &Connection,
    digest: &Digest,
    size: u64,
    partial: &Path,
    state_path: &Path,
    progress: &BlobProgress,
) -> Result<Digest, RegistryError> {
    let resumed = if partial.is_file() {
        PartialState::load(state_path, digest, size)
    } else {
        None
    };
    let state = match resumed {
        Some(state) => {
            tracing::info!(%digest, done = state.completed(), size, "resuming a partial download");
            state
        }
        None => PartialState::new(digest.clone(), size),
    };
    let file = {
        let (path, fresh) = (partial.to_path_buf(), state.completed() == 0);
        tokio::task::spawn_blocking(move || open_partial(&path, size, fresh))
            .await
            .map_err(|e| RegistryError::Interrupted(e.to_string()))?
            .map_err(|e| RegistryError::Store(StoreError::from_io("cannot create the partial blob", e)))?
    };
    progress.completed.store(state.completed(), Ordering::Relaxed);
    let pending: Vec<usize> = (0..state.parts.len())
        .filter(|&i| state.parts[i].completed < state.parts[i].size)
        .collect();
    let shared = Shared {
        connection,
        digest,
        file: Arc::new(file),
        state: Arc::new(Mutex::new(state)),
        state_path,
        progress,
        last_save: Mutex::new(std::time::Instant::now()),
    };
    shared
        .save()
        .map_err(|e| RegistryError::Store(StoreError::from_io("cannot record download progress", e)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let hashing = {
        let (file, state, stop) = (shared.file.clone(), shared.state.clone(), stop.clone());
        tokio::task::spawn_blocking(move || hash_in_order(&file, &state, &stop))
    };
    let _save = SaveOnDrop(&shared, stop);
    futures_util::stream::iter(pending)
        .map(|index| fetch_part(&shared, index))
        .buffer_unordered(PARALLEL_PARTS)
        .try_collect::<Vec<()>>()
        .await?;
    progress.verifying.store(true, Ordering::Relaxed);
    hashing
        .await
        .map_err(|e| RegistryError::Interrupted(e.to_string()))?
        .map_err(|e| RegistryError::Store(StoreError::from_io("cannot read the downloaded blob", e)))?
        .ok_or_else(|| RegistryError::Interrupted("the download stopped".into()))
}

/// Hashes the partial file from its start while the parts arrive, following the bytes that
/// are all written, so that checking the digest costs little time after the last byte. The
/// bytes hashed are the ones on disk (read back), resumed ones included. `None` if `stop`
/// is set first.
fn hash_in_order(file: &File, state: &Mutex<PartialState>, stop: &AtomicBool) -> io::Result<Option<Digest>> {
    let mut hasher = Sha256::new();
    let mut position = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let (ready, size) = {
            let state = state.lock().expect("state lock");
            (state.contiguous(), state.size)
        };
        if position < ready {
            let n = buf.len().min((ready - position) as usize);
            file.read_exact_at(&mut buf[..n], position)?;
            hasher.update(&buf[..n]);
            position += n as u64;
        } else if position == size {
            return Ok(Some(Digest::from_hasher(hasher)));
        } else if stop.load(Ordering::Relaxed) {
            return Ok(None);
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn open_partial(path: &Path, size: u64, fresh: bool) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(fresh)
        .open(path)?;
    if file.metadata()?.len() != size {
        file.set_len(size)?;
    }
    Ok(file)
}

/// Fetches the rest of one part, retrying failures that may pass.
async fn fetch_part(shared: &Shared<'_>, index: usize) -> Result<(), RegistryError> {
    let mut failures = 0;
    loop {
        let part = shared.state.lock().expect("state lock").parts[index];
        if part.completed == part.size {
            return Ok(());
        }
        let before = part.completed;
        let start = part.offset + part.completed;
        let end = part.offset + part.size - 1;
        let outcome = fetch_range(shared, index, start, end).await;
        let after = shared.state.lock().expect("state lock").parts[index].completed;
        match outcome {
            Ok(()) if after == part.size => return Ok(()),
            Ok(()) => {
                tracing::debug!(digest = %shared.digest, index, "part ended early; continuing");
            }
            Err(e) if e.is_retryable() && failures + 1 < ATTEMPTS => {
                tracing::warn!(digest = %shared.digest, index, "part failed, retrying: {e}");
            }
            Err(e) => return Err(e),
        }
        // A try is used up only when it brought nothing.
        if after == before {
            failures += 1;
            if failures >= ATTEMPTS {
                return Err(shared
                    .connection
                    .protocol(format!("the download of {} stopped making progress", shared.digest)));
            }
            tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(failures - 1)).await;
        }
    }
}

/// GETs `start..=end` of the blob and writes it into part `index`.
async fn fetch_range(shared: &Shared<'_>, index: usize, start: u64, end: u64) -> Result<(), RegistryError> {
    let connection = shared.connection;
    let response = connection
        .get_blob(&shared.digest.to_string(), Some((start, end)))
        .await?;
    // A server that ignores Range answers 200 with the whole blob: skip to `start`.
    let mut skip = match response.status() {
        StatusCode::PARTIAL_CONTENT => 0,
        StatusCode::OK => start,
        StatusCode::NOT_FOUND => {
            return Err(connection.protocol(format!("the registry has no blob {}", shared.digest)));
        }
        status => {
            let retryable = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
            let message = connection.error_text(response).await;
            return Err(RegistryError::Status {
                registry: connection.authority().to_string(),
                message: format!("blob {}: {message}", shared.digest),
                retryable,
            });
        }
    };
    let mut position = start;
    let mut buffer = BytesMut::with_capacity(WRITE_BUFFER);
    let mut body = response.bytes_stream();
    loop {
        let (chunk, failure) = match tokio::time::timeout(STALL_TIMEOUT, body.next()).await {
            Err(_) => (
                None,
                Some(RegistryError::Interrupted(format!(
                    "no data for {}s",
                    STALL_TIMEOUT.as_secs()
                ))),
            ),
            Ok(Some(Ok(chunk))) => (Some(chunk), None),
            Ok(Some(Err(e))) => (
                None,
                Some(RegistryError::Interrupted(format!(
                    "the connection to {} broke: {e}",
                    connection.authority()
                ))),
            ),
            Ok(None) => (None, None),
        };
        let finished = chunk.is_none();
        if let Some(mut chunk) = chunk {
            let dropped = skip.min(chunk.len() as u64);
            skip -= dropped;
            let _ = chunk.split_to(dropped as usize);
            let room = (end + 1 - position) as usize - buffer.len();
            buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        let full = position + buffer.len() as u64 > end;
        if !buffer.is_empty() && (buffer.len() >= WRITE_BUFFER || full || finished) {
            let data = buffer.split().freeze();
            let file = shared.file.clone();
            let length = data.len() as u64;
            tokio::task::spawn_blocking(move || file.write_all_at(&data, position))
                .await
                .map_err(|e| RegistryError::Interrupted(e.to_string()))?
                .map_err(|e| RegistryError::Store(StoreError::from_io("cannot write the partial blob", e)))?;
            position += length;
            shared.state.lock().expect("state lock").parts[index].completed += length;
            shared.progress.completed.fetch_add(length, Ordering::Relaxed);
            crate::metrics::pulled(length);
            let due = {
                let mut last = shared.last_save.lock().expect("save lock");
                let due = last.elapsed() >= SAVE_INTERVAL;
                if due {
                    *last = std::time::Instant::now();
                }
                due
            };
            if due {
                save_state(shared).await?;
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if full || finished {
            return Ok(());
        }
    }
}

/// [`Shared::save`], allowed to block.
async fn save_state(shared: &Shared<'_>) -> Result<(), RegistryError> {
    tokio::task::block_in_place(|| shared.save())
        .map_err(|e| RegistryError::Store(StoreError::from_io("cannot record download progress", e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_tile_the_blob() {
        let digest = Digest::of(b"x");
        for size in [0, 1, MIN_PART, MIN_PART + 1, 300 << 20, 40 << 30] {
            let state = PartialState::new(digest.clone(), size);
            assert_eq!(state.parts.iter().map(|p| p.size).sum::<u64>(), size);
            assert!(state.parts.len() <= 41, "{size}: {} parts", state.parts.len());
            let mut next = 0;
            for part in &state.parts {
                assert_eq!(part.offset, next);
                next += part.size;
            }
        }
    }

    #[test]
    fn a_saved_state_is_used_only_for_the_same_blob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let digest = Digest::of(b"x");
        let mut state = PartialState::new(digest.clone(), 100 << 20);
        state.parts[1].completed = 5;
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(PartialState::load(&path, &digest, 100 << 20), Some(state.clone()));
        assert_eq!(PartialState::load(&path, &digest, 99 << 20), None);
        assert_eq!(PartialState::load(&path, &Digest::of(b"y"), 100 << 20), None);
        state.parts[1].completed = state.parts[1].size + 1;
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(PartialState::load(&path, &digest, 100 << 20), None);
    }
}
