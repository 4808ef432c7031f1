//! Downloading one blob into the store: HTTP Range chunks, several at once and handed out in
//! order, written into `blobs/sha256-<hex>-partial`, their progress kept beside it in `...-partial.json` so that a
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
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::client::Connection;
use super::RegistryError;
use crate::store::{Digest, Store, StoreError};

/// Smallest chunk a blob is fetched in.
const MIN_CHUNK: u64 = 4 << 20;
/// Largest chunk.
const MAX_CHUNK: u64 = 64 << 20;
/// Chunks a blob is fetched in at least, when they may be as small as [`MIN_CHUNK`].
const CHUNKS_PER_BLOB: u64 = 64;
/// Chunks fetched at once.
const PARALLEL_CHUNKS: usize = 8;
/// Failed requests a chunk may make before the pull fails.
const ATTEMPTS: u32 = 5;
/// A chunk that receives nothing for this long is retried.
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
}

/// The resume record of a partial download: a written prefix, then the chunks started
/// after it, which tile the bytes from `done` to where the next chunk starts.
///
/// Chunks are handed out in order and are small against the blob, so the bytes written
/// from the start follow close behind the last byte received, and hashing them (which must
/// go in order) ends soon after the download does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PartialState {
    digest: Digest,
    size: u64,
    /// Bytes from the start that are all written.
    #[serde(default)]
    done: u64,
    parts: Vec<Part>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Part {
    offset: u64,
    size: u64,
    completed: u64,
    /// Whether a fetch is working on it (this run only).
    #[serde(skip)]
    claimed: bool,
}

impl PartialState {
    fn new(digest: Digest, size: u64) -> Self {
        Self {
            digest,
            size,
            done: 0,
            parts: Vec::new(),
        }
    }

    fn chunk_size(&self) -> u64 {
        (self.size / CHUNKS_PER_BLOB).clamp(MIN_CHUNK, MAX_CHUNK)
    }

    fn completed(&self) -> u64 {
        self.done + self.parts.iter().map(|p| p.completed).sum::<u64>()
    }

    /// How many bytes from the start are all written.
    fn contiguous(&self) -> u64 {
        self.done + self.parts.first().map_or(0, |p| p.completed)
    }

    /// Where the next new chunk starts.
    fn next_offset(&self) -> u64 {
        self.parts.last().map_or(self.done, |p| p.offset + p.size)
    }

    /// Claims a chunk to fetch: an unfinished one nobody works on (left by an earlier run),
    /// else a new one. `None` when every byte is written or being fetched.
    fn claim(&mut self) -> Option<u64> {
        if let Some(part) = self.parts.iter_mut().find(|p| !p.claimed && p.completed < p.size) {
            part.claimed = true;
            return Some(part.offset);
        }
        let offset = self.next_offset();
        if offset >= self.size {
            return None;
        }
        let size = self.chunk_size().min(self.size - offset);
        self.parts.push(Part {
            offset,
            size,
            completed: 0,
            claimed: true,
        });
        Some(offset)
    }

    /// The chunk starting at `offset`; `None` once it is finished and folded into the prefix.
    fn part(&self, offset: u64) -> Option<Part> {
        self.parts.iter().find(|p| p.offset == offset).copied()
    }

    /// Records `length` more bytes written in the chunk at `offset`, folding finished chunks
    /// at the front into the prefix.
    fn record(&mut self, offset: u64, length: u64) {
        if let Some(part) = self.parts.iter_mut().find(|p| p.offset == offset) {
            part.completed += length;
        }
        let finished = self.parts.iter().take_while(|p| p.completed == p.size).count();
        self.done += self.parts.drain(..finished).map(|p| p.size).sum::<u64>();
    }

    /// A saved record, if it is for this blob and its chunks tile the bytes after the prefix.
    fn load(path: &Path, digest: &Digest, size: u64) -> Option<Self> {
        let state: Self = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let mut next = state.done;
        for part in &state.parts {
            if part.offset != next || part.completed > part.size || part.size == 0 {
                return None;
            }
            next += part.size;
        }
        (state.digest == *digest && state.size == size && next <= size).then_some(state)
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
    let started = std::time::Instant::now();
    futures_util::future::try_join_all((0..PARALLEL_CHUNKS).map(|_| fetch_chunks(&shared))).await?;
    let fetched = started.elapsed();
    // Every byte is written: flush them while the hash catches up with the last chunks, so
    // that the two tails overlap and the store's own flush finds nothing left to write.
    let flushing = {
        let file = shared.file.clone();
        tokio::task::spawn_blocking(move || file.sync_data())
    };
    let actual = hashing
        .await
        .map_err(|e| RegistryError::Interrupted(e.to_string()))?
        .map_err(|e| RegistryError::Store(StoreError::from_io("cannot read the downloaded blob", e)))?
        .ok_or_else(|| RegistryError::Interrupted("the download stopped".into()))?;
    let hashed = started.elapsed();
    flushing
        .await
        .map_err(|e| RegistryError::Interrupted(e.to_string()))?
        .map_err(|e| RegistryError::Store(StoreError::from_io("cannot flush the downloaded blob", e)))?;
    tracing::debug!(%digest, size, ?fetched, ?hashed, flushed = ?started.elapsed(), "blob downloaded");
    Ok(actual)
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

/// Fetches chunks one after another until none is left to claim.
async fn fetch_chunks(shared: &Shared<'_>) -> Result<(), RegistryError> {
    loop {
        let claimed = shared.state.lock().expect("state lock").claim();
        match claimed {
            Some(offset) => fetch_chunk(shared, offset).await?,
            None => return Ok(()),
        }
    }
}

/// Fetches the rest of the chunk at `offset`, retrying failures that may pass.
async fn fetch_chunk(shared: &Shared<'_>, offset: u64) -> Result<(), RegistryError> {
    let mut failures = 0;
    loop {
        let Some(part) = shared.state.lock().expect("state lock").part(offset) else {
            return Ok(());
        };
        if part.completed == part.size {
            return Ok(());
        }
        let before = part.completed;
        let start = part.offset + part.completed;
        let end = part.offset + part.size - 1;
        let outcome = fetch_range(shared, offset, start, end).await;
        let after = shared
            .state
            .lock()
            .expect("state lock")
            .part(offset)
            .map_or(part.size, |p| p.completed);
        match outcome {
            Ok(()) if after == part.size => return Ok(()),
            Ok(()) => {
                tracing::debug!(digest = %shared.digest, offset, "chunk ended early; continuing");
            }
            Err(e) if e.is_retryable() && failures + 1 < ATTEMPTS => {
                tracing::warn!(digest = %shared.digest, offset, "chunk failed, retrying: {e}");
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

/// GETs `start..=end` of the blob and writes it into the chunk at `offset`.
async fn fetch_range(shared: &Shared<'_>, offset: u64, start: u64, end: u64) -> Result<(), RegistryError> {
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
            tokio::task::spawn_blocking(move || {
                file.write_all_at(&data, position)?;
                start_writeback(&file, position, length);
                Ok(())
            })
            .await
            .map_err(|e| RegistryError::Interrupted(e.to_string()))?
            .map_err(|e| RegistryError::Store(StoreError::from_io("cannot write the partial blob", e)))?;
            position += length;
            shared.state.lock().expect("state lock").record(offset, length);
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

/// Starts writing `length` bytes at `offset` back to disk without waiting for it, so that the
/// flush before the blob enters the store finds little left to do.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, length: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor stays open while `file` lives; the call reads only its arguments.
    // A failure only leaves the bytes for the final flush.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            length as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Writeback is left to the final flush where `sync_file_range` does not exist.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

/// [`Shared::save`], allowed to block.
async fn save_state(shared: &Shared<'_>) -> Result<(), RegistryError> {
    tokio::task::block_in_place(|| shared.save())
        .map_err(|e| RegistryError::Store(StoreError::from_io("cannot record download progress", e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims every chunk of a fresh download, in order.
    fn claim_all(state: &mut PartialState) -> Vec<u64> {
        std::iter::from_fn(|| state.claim()).collect()
    }

    #[test]
    fn chunks_tile_the_blob_in_order() {
        let digest = Digest::of(b"x");
        for size in [0, 1, MIN_CHUNK, MIN_CHUNK + 1, 300 << 20, 40 << 30] {
            let mut state = PartialState::new(digest.clone(), size);
            let offsets = claim_all(&mut state);
            assert_eq!(state.parts.iter().map(|p| p.size).sum::<u64>(), size);
            assert!(state.parts.iter().all(|p| (1..=MAX_CHUNK).contains(&p.size)));
            assert!(
                offsets.len() as u64 <= (CHUNKS_PER_BLOB + 1).max(size.div_ceil(MAX_CHUNK)),
                "{size}"
            );
            let mut next = 0;
            for (part, offset) in state.parts.iter().zip(&offsets) {
                assert_eq!((part.offset, *offset), (next, next));
                next += part.size;
            }
        }
    }

    #[test]
    fn finished_chunks_fold_into_the_prefix() {
        let mut state = PartialState::new(Digest::of(b"x"), 3 * MIN_CHUNK);
        let offsets = claim_all(&mut state);
        assert_eq!(offsets, [0, MIN_CHUNK, 2 * MIN_CHUNK]);
        state.record(MIN_CHUNK, MIN_CHUNK);
        assert_eq!((state.done, state.contiguous()), (0, 0), "a chunk after a gap waits");
        state.record(0, 10);
        assert_eq!(state.contiguous(), 10);
        state.record(0, MIN_CHUNK - 10);
        assert_eq!((state.done, state.parts.len()), (2 * MIN_CHUNK, 1), "both fold in");
        assert_eq!(state.part(0), None);
        assert_eq!(state.completed(), 2 * MIN_CHUNK);
        assert_eq!(state.claim(), None, "the last chunk is still claimed");
    }

    #[test]
    fn a_resumed_download_claims_its_unfinished_chunks_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let digest = Digest::of(b"x");
        let size = 100 << 20;
        let mut state = PartialState::new(digest.clone(), size);
        let first = state.claim().unwrap();
        let second = state.claim().unwrap();
        state.record(second, 5);
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let mut resumed = PartialState::load(&path, &digest, size).expect("a valid record");
        assert!(resumed.parts.iter().all(|p| !p.claimed), "claims are not saved");
        assert_eq!(resumed.completed(), 5);
        assert_eq!((resumed.claim(), resumed.claim()), (Some(first), Some(second)));
        assert_eq!(resumed.claim(), Some(second + state.chunk_size()), "then new chunks");
    }

    #[test]
    fn a_saved_state_is_used_only_for_the_same_blob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let digest = Digest::of(b"x");
        let mut state = PartialState::new(digest.clone(), 100 << 20);
        claim_all(&mut state);
        state.record(state.parts[1].offset, 5);
        state.parts.iter_mut().for_each(|p| p.claimed = false);
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(PartialState::load(&path, &digest, 100 << 20), Some(state.clone()));
        assert_eq!(PartialState::load(&path, &digest, 99 << 20), None);
        assert_eq!(PartialState::load(&path, &Digest::of(b"y"), 100 << 20), None);
        let mut overfull = state.clone();
        overfull.parts[1].completed = overfull.parts[1].size + 1;
        std::fs::write(&path, serde_json::to_vec(&overfull).unwrap()).unwrap();
        assert_eq!(PartialState::load(&path, &digest, 100 << 20), None);
        let mut gap = state.clone();
        gap.parts.remove(1);
        std::fs::write(&path, serde_json::to_vec(&gap).unwrap()).unwrap();
        assert_eq!(PartialState::load(&path, &digest, 100 << 20), None, "chunks must tile");
    }
}
