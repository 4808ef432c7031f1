//! The model store, in Ollama's exact on-disk layout: content-addressed
//! `blobs/sha256-<hex>` and `manifests/<host>/<namespace>/<model>/<tag>`.
//!
//! Every write is atomic (temp file in the same directory, fsync, rename), so a crash never
//! leaves a half blob or a half manifest. Paths are built only from validated [`ModelName`]s
//! and [`Digest`]s, so no request can reach outside the store.

mod digest;
mod manifest;
pub mod name;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};

pub use digest::Digest;
pub use manifest::{
    Layer, LayerKind, Manifest, ModelConfig, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
};
pub use name::ModelName;

/// Prefix of temporary files in `blobs/` and `manifests/`; never a valid blob or tag name.
const TEMP_PREFIX: &str = ".tmp-";
/// Suffix of an interrupted download's data (`sha256-<hex>-partial`), Ollama's name for it.
const PARTIAL_SUFFIX: &str = "-partial";
/// Suffix of its resume record.
const PARTIAL_STATE_SUFFIX: &str = "-partial.json";

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No manifest for this name.
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    /// A manifest points at a blob that is not in the store.
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    /// Uploaded bytes do not hash to the digest they were sent under.
    #[error("digest mismatch, expected \"{expected}\", got \"{actual}\"")]
    DigestMismatch {
        /// The digest the client named.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A stored blob whose content no longer hashes to its name (a bad disk, or an edit).
    #[error("blob {digest} is corrupt: its content hashes to {actual}; remove the model and pull or create it again")]
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to.
        actual: Digest,
    },
    /// A manifest file that is not valid JSON of the expected shape.
    #[error("manifest of '{name}' is corrupt: {source}")]
    CorruptManifest {
        /// The model.
        name: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The disk is full.
    #[error("no space left on the device holding the models directory")]
    DiskFull,
    /// Another `herd serve` holds the models directory.
    #[error("another herd server is using the models directory {0}; stop it or set HERD_MODELS to another directory")]
    InUse(PathBuf),
    /// Any other I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The failure.
        source: io::Error,
    },
}

impl StoreError {
    /// An I/O failure while doing `context` (ENOSPC becomes [`StoreError::DiskFull`]).
    pub fn from_io(context: &str, source: io::Error) -> Self {
        io_error(context)(source)
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    move |source| {
        if source.raw_os_error() == Some(28) {
            StoreError::DiskFull
        } else {
            StoreError::Io {
                context: context.into(),
                source,
            }
        }
    }
}

/// A manifest as read from disk.
#[derive(Clone, Debug)]
pub struct StoredManifest {
    /// The model's name, as spelled on disk.
    pub name: ModelName,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// sha256 of the manifest file's bytes: the model's ID.
    pub digest: Digest,
    /// When the manifest was last written.
    pub modified_at: SystemTime,
}

/// The store rooted at the models directory.
pub struct Store {
    root: PathBuf,
    /// Serialises manifest writes and deletes, so a delete never removes a blob that a
    /// manifest being written at the same moment references.
    manifests_lock: Mutex<()>,
    /// Blobs that a transfer in progress relies on (how many hold each): a delete keeps
    /// them until the transfer has written its manifest.
    pins: Mutex<HashMap<Digest, usize>>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for dir in ["blobs", "manifests"] {
            fs::create_dir_all(root.join(dir))
                .map_err(io_error(format!("cannot create {}", root.join(dir).display())))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            manifests_lock: Mutex::new(()),
            pins: Mutex::default(),
        })
    }

    /// Claims the directory for this server until the returned file is dropped (or the
    /// process dies): two servers writing one store would race on partials and deletes.
    pub fn claim(&self) -> Result<fs::File, StoreError> {
        let path = self.root.join(".herd-serve.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(format!("cannot open {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::InUse(self.root.clone())),
            Err(fs::TryLockError::Error(e)) => Err(StoreError::from_io(&format!("cannot lock {}", path.display()), e)),
        }
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.file_name())
    }

    /// Whether the blob is in the store.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        fs::metadata(self.blob_path(digest))
            .map(|m| m.len())
            .map_err(|_| StoreError::BlobNotFound(digest.clone()))
    }

    /// Streams a blob into the store, hashing as it goes; with `expected`, bytes that do not
    /// match are discarded. Returns the digest and size.
    pub async fn write_blob_stream<S, E>(
        &self,
        expected: Option<&Digest>,
        mut body: S,
    ) -> Result<(Digest, u64), StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut temp = TempFile::create(&self.root.join("blobs"))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Io {
                context: "upload interrupted".into(),
                source: io::Error::other(e.to_string()),
            })?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            tokio::task::block_in_place(|| temp.file.write_all(&chunk)).map_err(io_error("cannot write blob"))?;
        }
        let digest = Digest::from_hasher(hasher);
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        tokio::task::block_in_place(|| temp.persist(&self.blob_path(&digest)))?;
        Ok((digest, size))
    }

    /// Stores a small blob held in memory.
    pub fn write_blob_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64), StoreError> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        if !path.is_file() {
            let mut temp = TempFile::create(&self.root.join("blobs"))?;
            temp.file.write_all(bytes).map_err(io_error("cannot write blob"))?;
            temp.persist(&path)?;
        }
        Ok((digest, bytes.len() as u64))
    }

    /// Copies a local file into the store as a blob (blocking; for server-side paths).
    pub fn import_file(&self, source: &Path) -> Result<(Digest, u64), StoreError> {
        let input = File::open(source).map_err(io_error(format!("cannot open {}", source.display())))?;
        self.write_blob_reader(None, input, &format!("cannot read {}", source.display()))
    }

    /// Streams a reader into the store as a blob (blocking), hashing as it goes; with
    /// `expected`, bytes that do not match are discarded. `context` names the source in errors.
    pub fn write_blob_reader(
        &self,
        expected: Option<&Digest>,
        mut input: impl Read,
        context: &str,
    ) -> Result<(Digest, u64), StoreError> {
        let mut temp = TempFile::create(&self.root.join("blobs"))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(io_error(context))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            temp.file.write_all(&buf[..n]).map_err(io_error("cannot write blob"))?;
            size += n as u64;
        }
        let digest = Digest::from_hasher(hasher);
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        temp.persist(&self.blob_path(&digest))?;
        Ok((digest, size))
    }

    /// Reads a whole (small) blob.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        fs::read(self.blob_path(digest)).map_err(|_| StoreError::BlobNotFound(digest.clone()))
    }

    /// The manifest file of `name`, matching each path part case-insensitively as Ollama does.
    fn find_manifest_path(&self, name: &ModelName) -> Option<PathBuf> {
        let mut path = self.root.join("manifests");
        for part in name.manifest_components() {
            let exact = path.join(part);
            if exact.exists() {
                path = exact;
                continue;
            }
            let found = fs::read_dir(&path)
                .ok()?
                .flatten()
                .find(|entry| entry.file_name().to_str().is_some_and(|n| n.eq_ignore_ascii_case(part)))?;
            path = found.path();
        }
        path.is_file().then_some(path)
    }

    /// Reads the manifest of `name`.
    pub fn read_manifest(&self, name: &ModelName) -> Result<StoredManifest, StoreError> {
        let not_found = || StoreError::ModelNotFound(name.to_string());
        let path = self.find_manifest_path(name).ok_or_else(not_found)?;
        let bytes = fs::read(&path).map_err(|_| not_found())?;
        let modified_at = fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let manifest = serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptManifest {
            name: name.to_string(),
            source,
        })?;
        let on_disk = self.name_of_manifest_path(&path).unwrap_or_else(|| name.clone());
        Ok(StoredManifest {
            name: on_disk,
            manifest,
            digest: Digest::of(&bytes),
            modified_at,
        })
    }

    fn name_of_manifest_path(&self, path: &Path) -> Option<ModelName> {
        let rel = path.strip_prefix(self.root.join("manifests")).ok()?;
        let parts: Vec<&str> = rel.iter().map(|p| p.to_str()).collect::<Option<_>>()?;
        match parts[..] {
            [host, namespace, model, tag] => ModelName::from_manifest_components(host, namespace, model, tag).ok(),
            _ => None,
        }
    }

    /// Writes the manifest of `name` atomically, replacing an existing one (whatever its case).
    pub fn write_manifest(&self, name: &ModelName, manifest: &Manifest) -> Result<Digest, StoreError> {
        let bytes = serde_json::to_vec(manifest).map_err(|e| StoreError::Io {
            context: "cannot encode manifest".into(),
            source: io::Error::other(e),
        })?;
        self.write_manifest_bytes(name, &bytes)
    }

    /// Writes manifest bytes exactly as given (a pulled manifest keeps the registry's bytes,
    /// so its digest, the model's ID, is the registry's).
    pub fn write_manifest_bytes(&self, name: &ModelName, bytes: &[u8]) -> Result<Digest, StoreError> {
        let _guard = self.manifests_lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = match self.find_manifest_path(name) {
            Some(existing) => existing,
            None => {
                let mut path = self.root.join("manifests");
                path.extend(name.manifest_components());
                path
            }
        };
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_error("cannot create manifest directory"))?;
        let mut temp = TempFile::create(dir)?;
        temp.file.write_all(bytes).map_err(io_error("cannot write manifest"))?;
        temp.persist(&path)?;
        Ok(Digest::of(bytes))
    }

    /// The manifest file of `name`, byte for byte.
    pub fn read_manifest_bytes(&self, name: &ModelName) -> Result<Vec<u8>, StoreError> {
        let not_found = || StoreError::ModelNotFound(name.to_string());
        let path = self.find_manifest_path(name).ok_or_else(not_found)?;
        fs::read(&path).map_err(|_| not_found())
    }

    /// Every model in the store. Unreadable manifests are skipped with a warning.
    pub fn list(&self) -> Result<Vec<StoredManifest>, StoreError> {
        let mut models = Vec::new();
        let root = self.root.join("manifests");
        for path in manifest_files(&root) {
            let Some(name) = self.name_of_manifest_path(&path) else {
                tracing::warn!(path = %path.display(), "ignoring a manifest path that is not a valid model name");
                continue;
            };
            match self.read_manifest(&name) {
                Ok(stored) => models.push(stored),
                Err(e) => tracing::warn!(model = %name, "skipping unreadable manifest: {e}"),
            }
        }
        Ok(models)
    }

    /// Makes `destination` another name for the model `source` (blobs are shared).
    pub fn copy(&self, source: &ModelName, destination: &ModelName) -> Result<(), StoreError> {
        let stored = self.read_manifest(source)?;
        self.write_manifest(destination, &stored.manifest)?;
        Ok(())
    }

    /// Deletes the model `name`, then every blob of it that no other manifest references.
    pub fn delete(&self, name: &ModelName) -> Result<(), StoreError> {
        let stored = self.read_manifest(name)?;
        let _guard = self.manifests_lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = self
            .find_manifest_path(name)
            .ok_or_else(|| StoreError::ModelNotFound(name.to_string()))?;
        fs::remove_file(&path).map_err(io_error("cannot remove manifest"))?;
        prune_empty_dirs(path.parent(), &self.root.join("manifests"));
        let candidates: Vec<Digest> = stored.manifest.blobs().map(|l| l.digest.clone()).collect();
        self.remove_blobs_unreferenced(&candidates);
        Ok(())
    }

    /// Removes each of `candidates` that no manifest references any more.
    pub fn remove_unused_blobs(&self, candidates: &[Digest]) {
        let _guard = self.manifests_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.remove_blobs_unreferenced(candidates);
    }

    /// Keeps `digests` from being removed as unused until the returned pins drop: a pull
    /// skips a blob it finds present and writes its manifest later, so a delete of the
    /// model that referenced the blob meanwhile must leave it.
    pub fn pin(&self, digests: impl IntoIterator<Item = Digest>) -> BlobPins<'_> {
        let digests: Vec<Digest> = digests.into_iter().collect();
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        for digest in &digests {
            *pins.entry(digest.clone()).or_default() += 1;
        }
        BlobPins { store: self, digests }
    }

    /// [`Store::remove_unused_blobs`] with the manifests lock already held.
    fn remove_blobs_unreferenced(&self, candidates: &[Digest]) {
        let still_used: std::collections::HashSet<Digest> = manifest_files(&self.root.join("manifests"))
            .filter_map(|p| fs::read(p).ok())
            .filter_map(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
            .flat_map(|m| m.blobs().map(|l| l.digest.clone()).collect::<Vec<_>>())
            .collect();
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        for digest in candidates {
            if !still_used.contains(digest) && !pins.contains_key(digest) {
                if let Err(e) = fs::remove_file(self.blob_path(digest)) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(%digest, "cannot remove unused blob: {e}");
                    }
                }
            }
        }
    }

    /// Where an interrupted download of `digest` keeps its bytes.
    pub fn partial_blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(format!("{}{PARTIAL_SUFFIX}", digest.file_name()))
    }

    /// Where an interrupted download of `digest` records which bytes it has.
    pub fn partial_state_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(format!("{}{PARTIAL_STATE_SUFFIX}", digest.file_name()))
    }

    /// Moves a finished, verified download into the store and drops its resume record.
    pub fn commit_partial(&self, digest: &Digest) -> Result<(), StoreError> {
        let partial = self.partial_blob_path(digest);
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io_error("cannot flush the downloaded blob"))?;
        fs::rename(&partial, self.blob_path(digest)).map_err(io_error("cannot move the downloaded blob into place"))?;
        let _ = fs::remove_file(self.partial_state_path(digest));
        if let Ok(dir) = File::open(self.root.join("blobs")) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Checks that a blob file hashes to the digest its name (`sha256-<hex>`) says; a file
    /// named otherwise (a GGUF outside the store) has nothing to be checked against.
    pub fn check_blob_file(path: &Path) -> Result<(), StoreError> {
        let Some(digest) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("sha256-"))
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
        else {
            return Ok(());
        };
        let mut file = fs::File::open(path).map_err(io_error(format!("cannot open blob {digest}")))?;
        let mut hasher = Sha256::new();
        io::copy(&mut file, &mut hasher).map_err(io_error(format!("cannot read blob {digest}")))?;
        let actual = Digest::from_hasher(hasher);
        if actual == digest {
            Ok(())
        } else {
            Err(StoreError::CorruptBlob { digest, actual })
        }
    }

    /// Whether this process may write blobs and manifests now.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        for dir in ["blobs", "manifests"] {
            let path = self.root.join(dir);
            nix::unistd::access(&path, nix::unistd::AccessFlags::W_OK)
                .map_err(|e| StoreError::from_io(&format!("cannot write {}", path.display()), e.into()))?;
        }
        Ok(())
    }

    /// Bytes free on the file system holding the store, if it can tell.
    pub fn free_space(&self) -> Option<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.root).ok()?;
        Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
    }

    /// Removes interrupted downloads untouched for longer than `max_age` (younger ones are
    /// kept so the next pull resumes them, across restarts too).
    pub fn prune_stale_partials(&self, max_age: std::time::Duration) {
        let Ok(entries) = fs::read_dir(self.root.join("blobs")) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.ends_with(PARTIAL_SUFFIX) || name.ends_with(PARTIAL_STATE_SUFFIX)) {
                continue;
            }
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok());
            if age.is_some_and(|age| age > max_age) {
                tracing::info!(file = %name, "removing a partial download older than {}h", max_age.as_secs() / 3600);
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Removes temp files left by a crash (they are never referenced by anything).
    pub fn remove_stale_temp_files(&self) {
        fn sweep(dir: &Path) {
            let Ok(entries) = fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    sweep(&path);
                } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let _ = fs::remove_file(path);
                }
            }
        }
        sweep(&self.root.join("blobs"));
        sweep(&self.root.join("manifests"));
    }
}

/// Every file four levels below `manifests/`.
fn manifest_files(root: &Path) -> impl Iterator<Item = PathBuf> {
    fn children(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
    let mut files = Vec::new();
    for host in children(root) {
        for namespace in children(&host) {
            for model in children(&namespace) {
                for tag in children(&model) {
                    let temp = tag
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX));
                    if tag.is_file() && !temp {
                        files.push(tag);
                    }
                }
            }
        }
    }
    files.into_iter()
}

fn prune_empty_dirs(mut dir: Option<&Path>, stop: &Path) {
    while let Some(d) = dir {
        if d == stop || fs::remove_dir(d).is_err() {
            return;
        }
        dir = d.parent();
    }
}

/// A temp file that is removed unless it is persisted.
struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    fn create(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error("cannot create a temp file in the models directory"))?;
        Ok(Self {
            path,
            file,
            persisted: false,
        })
    }

    /// fsyncs and renames the file into place.
    fn persist(&mut self, target: &Path) -> Result<(), StoreError> {
        self.file.sync_all().map_err(io_error("cannot flush to disk"))?;
        fs::rename(&self.path, target).map_err(io_error("cannot move file into place"))?;
        if let Some(dir) = target.parent().and_then(|d| File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Blobs held by [`Store::pin`]; released when dropped.
pub struct BlobPins<'a> {
    store: &'a Store,
    digests: Vec<Digest>,
}

impl Drop for BlobPins<'_> {
    fn drop(&mut self) {
        let mut pins = self.store.pins.lock().unwrap_or_else(|e| e.into_inner());
        for digest in &self.digests {
            if let Some(count) = pins.get_mut(digest) {
                *count -= 1;
                if *count == 0 {
                    pins.remove(digest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        // The TempDir is returned so the directory lives as long as the test.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn sample_manifest(store: &Store, text: &[u8]) -> Manifest {
        let (digest, size) = store.write_blob_bytes(text).unwrap();
        let (cfg, cfg_size) = store.write_blob_bytes(b"{}").unwrap();
        Manifest::new(
            Layer {
                media_type: CONFIG_MEDIA_TYPE.into(),
                digest: cfg,
                size: cfg_size,
                from: None,
                name: None,
            },
            vec![Layer::new(LayerKind::Model, digest, size)],
        )
    }

    #[test]
    fn manifests_round_trip_and_lookup_ignores_case() {
        let (_dir, store) = store();
        let name = ModelName::parse("Gemma3:270M").unwrap();
        let manifest = sample_manifest(&store, b"weights");
        let digest = store.write_manifest(&name, &manifest).unwrap();
        let read = store.read_manifest(&ModelName::parse("gemma3:270m").unwrap()).unwrap();
        assert_eq!(read.manifest, manifest);
        assert_eq!(read.digest, digest);
        assert_eq!(read.name.to_string(), "Gemma3:270M");
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn delete_keeps_blobs_other_models_use() {
        let (dir, store) = store();
        let a = ModelName::parse("a").unwrap();
        let b = ModelName::parse("b").unwrap();
        let manifest = sample_manifest(&store, b"shared");
        store.write_manifest(&a, &manifest).unwrap();
        store.copy(&a, &b).unwrap();
        store.delete(&a).unwrap();
        assert!(store.has_blob(&manifest.layers[0].digest));
        store.delete(&b).unwrap();
        assert!(!store.has_blob(&manifest.layers[0].digest));
        assert!(matches!(store.read_manifest(&b), Err(StoreError::ModelNotFound(_))));
        assert!(fs::read_dir(dir.path().join("manifests")).unwrap().next().is_none());
    }

    #[test]
    fn a_delete_leaves_pinned_blobs_until_the_pins_go() {
        let (_dir, store) = store();
        let a = ModelName::parse("a").unwrap();
        let manifest = sample_manifest(&store, b"weights a pull found present");
        store.write_manifest(&a, &manifest).unwrap();
        let weights = manifest.layers[0].digest.clone();
        let pins = store.pin([weights.clone()]);
        let again = store.pin([weights.clone()]);
        store.delete(&a).unwrap();
        assert!(store.has_blob(&weights));
        drop(pins);
        store.remove_unused_blobs(std::slice::from_ref(&weights));
        assert!(store.has_blob(&weights), "still pinned once");
        drop(again);
        store.remove_unused_blobs(std::slice::from_ref(&weights));
        assert!(!store.has_blob(&weights));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn mismatched_upload_leaves_nothing_behind() {
        let (dir, store) = store();
        let wrong = Digest::of(b"something else");
        let body = futures_util::stream::iter([Ok::<_, io::Error>(Bytes::from_static(b"data"))]);
        let err = store.write_blob_stream(Some(&wrong), body).await.unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }));
        assert_eq!(fs::read_dir(dir.path().join("blobs")).unwrap().count(), 0);
    }
}
