//! Downloading one blob into the store: HTTP Range chunks handed out in order, over one
//! connection and over more (up to eight at once) while the link proves slow, written into
//! `blobs/sha256-<hex>-partial`, their progress kept beside it in `...-partial.json` so that
//! a pull stopped by Ctrl-C, a crash, a restart or a dead registry resumes where it stopped.
//! The blob enters the store only after its sha256 matched.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::client::Connection;
use super::RegistryError;
use crate::store::{Digest, Store, StoreError};

/// Smallest chunk a blob is fetched in.
const MIN_CHUNK: u64 = 16 << 20;
/// Largest chunk.
const MAX_CHUNK: u64 = 64 << 20;
/// Chunks a blob is fetched in at least, when they may be as small as [`MIN_CHUNK`].
const CHUNKS_PER_BLOB: u64 = 16;
/// Connections a download uses at most.
const MAX_CONNECTIONS: usize = 8;
/// A download opens one more connection while it receives less than this many bytes a
/// second (1 Gbit/s): a faster link gains little from more, and every connection and
/// request costs the registry (and a small machine's cores) more work.
const ENOUGH_RATE: u64 = 128 << 20;
/// How often the download's rate is checked.
const RATE_INTERVAL: Duration = Duration::from_millis(200);
/// Failed requests a chunk may make before the pull fails.
const ATTEMPTS: u32 = 5;
/// A chunk that receives nothing for this long is retried.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes written to disk at once.
const WRITE_BUFFER: usize = 1 << 20;
/// Received pieces waiting for the writer, at most (each up to [`WRITE_BUFFER`] bytes).
const QUEUED_PIECES: usize = 32;
/// Bytes written ahead of the hash that are kept for it in memory, at most.
const HASH_AHEAD: usize = 64 << 20;
/// Bytes the hash reads back from the file at once.
const READ_BACK: usize = 1 << 20;
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
    progress: &Arc<BlobProgress>,
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

/// Bytes received for a chunk, in the order they came, to be written at `offset`.
struct Piece {
    /// Where the chunk they belong to starts.
    chunk: u64,
    offset: u64,
    bytes: Bytes,
}

/// What the fetches of one download share.
struct Shared<'a> {
    connection: &'a Connection,
    digest: &'a Digest,
    state: &'a Mutex<PartialState>,
}

/// Fetches what is missing of the blob and returns the digest of the whole partial file.
///
/// Three kinds of work run at once, so that none waits for another: the fetches receive, one
/// blocking task (the [`Writer`]) writes what they received, records it and hashes the piece
/// next in order while it is still in the CPU's cache, and another hashes the rest in order,
/// from the pieces the writer passes on or else read back from the file, so that the digest
/// is known soon after the last byte.
async fn fetch_parts(
    connection: &Connection,
    digest: &Digest,
    size: u64,
    partial: &Path,
    state_path: &Path,
    progress: &Arc<BlobProgress>,
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
    let file = Arc::new(file);
    let state = Arc::new(Mutex::new(state));
    let (written, to_hash) = std::sync::mpsc::channel();
    let hash = Arc::new(Mutex::new(OrderedHash::default()));
    let writer = Writer {
        hash: hash.clone(),
        file: file.clone(),
        state: state.clone(),
        state_path: state_path.to_path_buf(),
        progress: progress.clone(),
        written,
    };
    writer
        .save()
        .map_err(|e| RegistryError::Store(StoreError::from_io("cannot record download progress", e)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let hashing = {
        let (file, state, stop) = (file.clone(), state.clone(), stop.clone());
        tokio::task::spawn_blocking(move || hash_in_order(&file, &state, &hash, &to_hash, &stop))
    };
    let (pieces, received) = mpsc::channel(QUEUED_PIECES);
    let writing = tokio::task::spawn_blocking(move || writer.run(received));
    let shared = Shared {
        connection,
        digest,
        state: &state,
    };
    let started = std::time::Instant::now();
    let fetched = fetch_all(&shared, &pieces, progress).await;
    drop(pieces);
    let fetch_time = started.elapsed();
    // A failed write (a full disk) is why the fetches stopped, if one failed.
    let wrote = writing.await.map_err(|e| RegistryError::Interrupted(e.to_string()))?;
    if fetched.is_err() || wrote.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    wrote.map_err(|e| RegistryError::Store(StoreError::from_io("cannot write the partial blob", e)))?;
    fetched?;
    // Every byte is written: flush them while the hash catches up with the last pieces, so
    // that the two tails overlap and the store's own flush finds nothing left to write.
    let flushing = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || file.sync_data())
    };
    let actual = hashing
        .await
        .map_err(|e| RegistryError::Interrupted(e.to_string()))?
        .map_err(|e| RegistryError::Store(StoreError::from_io("cannot read the downloaded blob", e)))?
        .ok_or_else(|| RegistryError::Interrupted("the download stopped".into()))?;
    let hash_time = started.elapsed();
    flushing
        .await
        .map_err(|e| RegistryError::Interrupted(e.to_string()))?
        .map_err(|e| RegistryError::Store(StoreError::from_io("cannot flush the downloaded blob", e)))?;
    tracing::debug!(%digest, size, fetched = ?fetch_time, hashed = ?hash_time, flushed = ?started.elapsed(), "blob downloaded");
    Ok(actual)
}

/// Runs the fetches, one at first and one more each time the download proves slow, until
/// the first error or until every chunk is fetched.
async fn fetch_all(
    shared: &Shared<'_>,
    pieces: &mpsc::Sender<Piece>,
    progress: &BlobProgress,
) -> Result<(), RegistryError> {
    let mut fetches = FuturesUnordered::new();
    fetches.push(fetch_chunks(shared, pieces.clone()));
    let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + RATE_INTERVAL, RATE_INTERVAL);
    let mut last = progress.completed.load(Ordering::Relaxed);
    // A fetch ends well only once no chunk is left to claim: a new one would find nothing.
    let mut chunks_left = true;
    loop {
        tokio::select! {
            ended = fetches.next() => match ended {
                Some(Ok(())) => chunks_left = false,
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            _ = checks.tick(), if chunks_left && fetches.len() < MAX_CONNECTIONS => {
                let now = progress.completed.load(Ordering::Relaxed);
                let rate = now.saturating_sub(last) as f64 / RATE_INTERVAL.as_secs_f64();
                last = now;
                if rate < ENOUGH_RATE as f64 {
                    fetches.push(fetch_chunks(shared, pieces.clone()));
                }
            }
        }
    }
}

/// Stops the hash when the download ends in any way: finished, failed, or dropped because
/// every pull waiting for it went away.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A piece written into the partial file, passed on to the hash.
type Written = (u64, Bytes);

/// Writes the received pieces into the partial file, records them and passes them on to the
/// hash.
struct Writer {
    file: Arc<File>,
    state: Arc<Mutex<PartialState>>,
    state_path: std::path::PathBuf,
    progress: Arc<BlobProgress>,
    written: std::sync::mpsc::Sender<Written>,
    hash: Arc<Mutex<OrderedHash>>,
}

impl Writer {
    /// Writes pieces until the fetches stop sending or a write fails, and records the progress
    /// as it ends: whatever was received is written, so that the next pull need not fetch it.
    fn run(self, mut received: mpsc::Receiver<Piece>) -> io::Result<()> {
        let outcome = self.write_all(&mut received);
        if let Err(e) = self.save() {
            tracing::warn!(digest = %self.state.lock().expect("state lock").digest, "cannot record download progress: {e}");
        }
        outcome
    }

    /// Writes every piece received, recording the progress every [`SAVE_INTERVAL`].
    fn write_all(&self, received: &mut mpsc::Receiver<Piece>) -> io::Result<()> {
        let mut last_save = std::time::Instant::now();
        while let Some(piece) = received.blocking_recv() {
            self.write(piece)?;
            if last_save.elapsed() >= SAVE_INTERVAL {
                last_save = std::time::Instant::now();
                self.save()?;
            }
        }
        Ok(())
    }

    /// Writes one piece, starts its writeback, records it and passes it on.
    fn write(&self, piece: Piece) -> io::Result<()> {
        let length = piece.bytes.len() as u64;
        self.file.write_all_at(&piece.bytes, piece.offset)?;
        start_writeback(&self.file, piece.offset, length);
        // The piece next in order is hashed here, while the write has left it in this core's
        // cache; any other is passed on to the hash's thread before it is recorded, so that
        // the hash never reads it back (see there).
        let hashed = self
            .hash
            .try_lock()
            .is_ok_and(|mut hash| hash.add(piece.offset, &piece.bytes));
        if !hashed {
            let _ = self.written.send((piece.offset, piece.bytes));
        }
        self.state.lock().expect("state lock").record(piece.chunk, length);
        self.progress.completed.fetch_add(length, Ordering::Relaxed);
        crate::metrics::pulled(length);
        Ok(())
    }

    /// Records the bytes written so far. Not fsynced: a killed process loses nothing from
    /// the page cache, and should a power cut leave the record ahead of the data, the digest
    /// check at the end catches it and the blob is fetched again.
    fn save(&self) -> io::Result<()> {
        let snapshot = self.state.lock().expect("state lock").clone();
        let temp = self
            .state_path
            .with_extension(format!("json.{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&temp, serde_json::to_vec(&snapshot).map_err(io::Error::other)?)?;
        std::fs::rename(&temp, &self.state_path)
    }
}

/// Hashes the partial file from its start while the pieces arrive, following the bytes that
/// are all written. Pieces the writer passed on are hashed from memory; the rest (resumed
/// bytes, pieces that came too far ahead) is read back from the file. `None` if `stop` is
/// set first.
fn hash_in_order(
    file: &File,
    state: &Mutex<PartialState>,
    hash: &Mutex<OrderedHash>,
    written: &std::sync::mpsc::Receiver<Written>,
    stop: &AtomicBool,
) -> io::Result<Option<Digest>> {
    let mut arrived = Arrived::default();
    let mut buf = vec![0u8; READ_BACK];
    loop {
        let mut hash = hash.lock().expect("hash lock");
        let position = hash.position;
        arrived.add_all(written, position);
        if let Some(bytes) = arrived.take(position) {
            hash.add(position, &bytes);
            continue;
        }
        let (ready, size) = {
            let state = state.lock().expect("state lock");
            (state.contiguous(), state.size)
        };
        if position < ready {
            // A piece is passed on before it is recorded: one recorded since the last look
            // is already queued.
            arrived.add_all(written, position);
            if arrived.next_start().is_some_and(|start| start <= position) {
                continue;
            }
            let until = arrived.next_start().map_or(ready, |start| start.min(ready));
            let n = buf.len().min((until - position) as usize);
            file.read_exact_at(&mut buf[..n], position)?;
            hash.add(position, &buf[..n]);
        } else if position == size {
            return Ok(Some(Digest::from_hasher(std::mem::take(&mut hash.hasher))));
        } else if stop.load(Ordering::Relaxed) {
            return Ok(None);
        } else {
            // The writer hashes what comes in order while this waits.
            drop(hash);
            match written.recv_timeout(Duration::from_millis(5)) {
                Ok((offset, bytes)) => arrived.add(offset, bytes, position),
                Err(RecvTimeoutError::Timeout) => {}
                // The writer is done; whatever it wrote is recorded.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// The sha256 of a blob's bytes from its start, shared by the writer (for the piece next in
/// order) and the hash's thread (for the rest).
#[derive(Default)]
struct OrderedHash {
    hasher: Sha256,
    /// Bytes hashed.
    position: u64,
}

impl OrderedHash {
    /// Hashes `bytes`, those at `offset`, if they are the next ones; whether they were.
    fn add(&mut self, offset: u64, bytes: &[u8]) -> bool {
        if offset != self.position {
            return false;
        }
        self.hasher.update(bytes);
        self.position += bytes.len() as u64;
        true
    }
}

/// Pieces written ahead of the hash, by offset, [`HASH_AHEAD`] bytes at most; the hash
/// reads the others back from the file.
#[derive(Default)]
struct Arrived {
    pieces: BTreeMap<u64, Bytes>,
    held: usize,
}

impl Arrived {
    /// Keeps `bytes` (those at `offset`) unless the hash is past them or too much is held.
    fn add(&mut self, offset: u64, bytes: Bytes, position: u64) {
        if offset + bytes.len() as u64 <= position || self.held + bytes.len() > HASH_AHEAD {
            return;
        }
        self.held += bytes.len();
        if let Some(replaced) = self.pieces.insert(offset, bytes) {
            self.held -= replaced.len();
        }
    }

    /// Keeps every piece queued in `written`.
    fn add_all(&mut self, written: &std::sync::mpsc::Receiver<Written>, position: u64) {
        while let Ok((offset, bytes)) = written.try_recv() {
            self.add(offset, bytes, position);
        }
    }

    /// The kept bytes from `position` on, to the end of the piece that holds them. Drops the
    /// pieces that end before `position`.
    fn take(&mut self, position: u64) -> Option<Bytes> {
        while let Some(entry) = self.pieces.first_entry() {
            if *entry.key() + entry.get().len() as u64 > position {
                break;
            }
            self.held -= entry.remove().len();
        }
        if self.next_start()? > position {
            return None;
        }
        let (offset, bytes) = self.pieces.pop_first()?;
        self.held -= bytes.len();
        Some(bytes.slice((position - offset) as usize..))
    }

    /// Where the first kept piece starts.
    fn next_start(&self) -> Option<u64> {
        self.pieces.keys().next().copied()
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
async fn fetch_chunks(shared: &Shared<'_>, pieces: mpsc::Sender<Piece>) -> Result<(), RegistryError> {
    loop {
        let claimed = shared.state.lock().expect("state lock").claim();
        match claimed {
            Some(offset) => fetch_chunk(shared, &pieces, offset).await?,
            None => return Ok(()),
        }
    }
}

/// Fetches the rest of the chunk at `offset`, retrying failures that may pass.
async fn fetch_chunk(shared: &Shared<'_>, pieces: &mpsc::Sender<Piece>, offset: u64) -> Result<(), RegistryError> {
    let Some(part) = shared.state.lock().expect("state lock").part(offset) else {
        return Ok(());
    };
    let end = part.offset + part.size;
    // The first byte not yet handed to the writer.
    let mut next = part.offset + part.completed;
    let mut failures = 0;
    while next < end {
        let before = next;
        match fetch_range(shared, pieces, offset, &mut next, end).await {
            Ok(()) if next == end => return Ok(()),
            Ok(()) => {
                tracing::debug!(digest = %shared.digest, offset, "chunk ended early; continuing");
            }
            Err(e) if e.is_retryable() && failures + 1 < ATTEMPTS => {
                tracing::warn!(digest = %shared.digest, offset, "chunk failed, retrying: {e}");
            }
            Err(e) => return Err(e),
        }
        // A try is used up only when it brought nothing.
        if next == before {
            failures += 1;
            if failures >= ATTEMPTS {
                return Err(shared
                    .connection
                    .protocol(format!("the download of {} stopped making progress", shared.digest)));
            }
            tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(failures - 1)).await;
        }
    }
    Ok(())
}

/// GETs the bytes from `*next` up to `end` (exclusive) of the blob and hands them to the
/// writer as pieces of the chunk at `chunk`, moving `*next` past each piece handed over.
async fn fetch_range(
    shared: &Shared<'_>,
    pieces: &mpsc::Sender<Piece>,
    chunk: u64,
    next: &mut u64,
    end: u64,
) -> Result<(), RegistryError> {
    let connection = shared.connection;
    let response = connection
        .get_blob(&shared.digest.to_string(), Some((*next, end - 1)))
        .await?;
    // A server that ignores Range answers 200 with the whole blob: skip to `*next`.
    let mut skip = match response.status() {
        StatusCode::PARTIAL_CONTENT => 0,
        StatusCode::OK => *next,
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
    let mut buffer = BytesMut::new();
    let mut body = response.bytes_stream();
    loop {
        let (chunk_bytes, failure) = match tokio::time::timeout(STALL_TIMEOUT, body.next()).await {
            Err(_) => (
                None,
                Some(RegistryError::Interrupted(format!(
                    "no data for {}s",
                    STALL_TIMEOUT.as_secs()
                ))),
            ),
            Ok(Some(Ok(bytes))) => (Some(bytes), None),
            Ok(Some(Err(e))) => (
                None,
                Some(RegistryError::Interrupted(format!(
                    "the connection to {} broke: {e}",
                    connection.authority()
                ))),
            ),
            Ok(None) => (None, None),
        };
        let finished = chunk_bytes.is_none();
        if let Some(mut bytes) = chunk_bytes {
            let dropped = skip.min(bytes.len() as u64);
            skip -= dropped;
            let _ = bytes.split_to(dropped as usize);
            let room = (end - *next) as usize - buffer.len();
            if buffer.is_empty() {
                buffer.reserve(WRITE_BUFFER);
            }
            buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        let full = *next + buffer.len() as u64 >= end;
        if !buffer.is_empty() && (buffer.len() >= WRITE_BUFFER || full || finished) {
            let bytes = buffer.split().freeze();
            let length = bytes.len() as u64;
            let piece = Piece {
                chunk,
                offset: *next,
                bytes,
            };
            if pieces.send(piece).await.is_err() {
                // The writer failed, and says why: not worth a retry.
                let stopped = io::Error::other("the writer stopped");
                return Err(RegistryError::Store(StoreError::from_io(
                    "cannot write the partial blob",
                    stopped,
                )));
            }
            *next += length;
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

    /// Writes `data[range]` as the writer does: hashes it when it is next, else passes it on
    /// to the hash's thread when `pass_on`.
    #[allow(clippy::too_many_arguments)]
    fn write_piece(
        file: &File,
        state: &Mutex<PartialState>,
        hash: &Mutex<OrderedHash>,
        written: &std::sync::mpsc::Sender<Written>,
        data: &[u8],
        chunk: u64,
        range: std::ops::Range<u64>,
        pass_on: bool,
    ) {
        let bytes = Bytes::copy_from_slice(&data[range.start as usize..range.end as usize]);
        file.write_all_at(&bytes, range.start).unwrap();
        let hashed = hash.try_lock().is_ok_and(|mut hash| hash.add(range.start, &bytes));
        if !hashed && pass_on {
            written.send((range.start, bytes)).unwrap();
        }
        state.lock().unwrap().record(chunk, range.end - range.start);
    }

    #[test]
    fn the_hash_follows_pieces_in_any_order_and_reads_back_the_rest() {
        let data: Vec<u8> = (0..3 * MIN_CHUNK + 12_345).map(|i| (i * 31 % 251) as u8).collect();
        let size = data.len() as u64;
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(open_partial(&dir.path().join("partial"), size, true).unwrap());
        let mut state = PartialState::new(Digest::of(&data), size);
        let chunks = claim_all(&mut state);
        let state = Arc::new(Mutex::new(state));
        let (written, to_hash) = std::sync::mpsc::channel();
        // An earlier run wrote the start: the hash reads it back.
        file.write_all_at(&data[..1_000], 0).unwrap();
        state.lock().unwrap().record(0, 1_000);
        let hash = Arc::new(Mutex::new(OrderedHash::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let hashing = {
            let (file, state, hash, stop) = (file.clone(), state.clone(), hash.clone(), stop.clone());
            std::thread::spawn(move || hash_in_order(&file, &state, &hash, &to_hash, &stop))
        };
        // The chunks land last first, in pieces of odd sizes; every third piece that is not
        // next in order is written but not passed on.
        let mut pieces = 0;
        for (index, &chunk) in chunks.iter().enumerate().rev() {
            let end = chunks.get(index + 1).copied().unwrap_or(size);
            let mut offset = chunk.max(1_000);
            while offset < end {
                let next = (offset + 700_001).min(end);
                let pass_on = pieces % 3 != 0;
                write_piece(&file, &state, &hash, &written, &data, chunk, offset..next, pass_on);
                pieces += 1;
                offset = next;
            }
        }
        let digest = hashing.join().unwrap().unwrap();
        assert_eq!(digest, Some(Digest::of(&data)));
    }

    #[test]
    fn the_hash_stops_when_told_with_bytes_missing() {
        let dir = tempfile::tempdir().unwrap();
        let size = 2 * MIN_CHUNK;
        let file = open_partial(&dir.path().join("partial"), size, true).unwrap();
        let mut state = PartialState::new(Digest::of(b"x"), size);
        claim_all(&mut state);
        state.record(0, 10);
        let (written, to_hash) = std::sync::mpsc::channel::<Written>();
        let stop = AtomicBool::new(true);
        let hash = Mutex::new(OrderedHash::default());
        assert_eq!(
            hash_in_order(&file, &Mutex::new(state), &hash, &to_hash, &stop).unwrap(),
            None
        );
        drop(written);
    }

    #[test]
    fn pieces_ahead_of_the_hash_are_kept_up_to_a_limit() {
        let mut arrived = Arrived::default();
        let piece = |n: usize| Bytes::from(vec![7u8; n]);
        arrived.add(0, piece(10), 20);
        assert_eq!(arrived.next_start(), None, "behind the hash");
        arrived.add(100, piece(50), 20);
        arrived.add(10, piece(20), 20);
        assert_eq!(
            arrived.take(20).map(|b| b.len()),
            Some(10),
            "the rest of a piece the hash is in"
        );
        assert_eq!(arrived.take(30), None, "a gap");
        assert_eq!(arrived.next_start(), Some(100));
        arrived.add(1_000, piece(HASH_AHEAD), 30);
        assert_eq!(arrived.held, 50, "over the limit: left to be read back");
        assert_eq!(arrived.take(120).map(|b| b.len()), Some(30));
        assert_eq!((arrived.held, arrived.next_start()), (0, None));
    }
}
