//! `pull`: fetch and validate the manifest, download the missing blobs (shared with any other
//! pull of the same blob), then write the registry's exact manifest bytes last.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use reqwest::header::ACCEPT;
use reqwest::StatusCode;

use super::client::{read_capped, Connection};
use super::download::{download_blob, resumable_bytes, BlobProgress};
use super::{report_while, Downloads, InFlight, Progress, Registry, RegistryError, TransferStatus};
use crate::store::{Digest, Layer, Manifest, ModelName, Store, MANIFEST_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE};

/// Largest manifest read (the OCI norm), compressed or not.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

impl Registry {
    /// Pulls `name` through `connection` into `store`, reporting Ollama's status lines.
    pub async fn pull(
        &self,
        connection: Connection,
        store: &Arc<Store>,
        name: &ModelName,
        progress: &Progress,
    ) -> Result<(), RegistryError> {
        progress.send(TransferStatus::message("pulling manifest"));
        let connection = Arc::new(connection);
        let url = connection.url(&format!("manifests/{}", name.tag));
        let response = connection
            .send(|c| {
                c.get(url.clone())
                    .header(ACCEPT, format!("{MANIFEST_MEDIA_TYPE}, {OCI_MANIFEST_MEDIA_TYPE}"))
            })
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::ManifestNotFound {
                    name: name.display_shortest(),
                    registry: connection.authority().to_string(),
                })
            }
            _ => return Err(connection.unexpected("fetching the manifest", response).await),
        }
        let bytes = read_capped(response, MAX_MANIFEST_BYTES, "manifest").await?;
        let manifest = Manifest::parse_untrusted(&bytes).map_err(|reason| RegistryError::InvalidManifest {
            registry: connection.authority().to_string(),
            reason,
        })?;
        self.check_space(store, name, &manifest)?;
        // Blobs found present stay until this manifest refers to them.
        let _pins = store.pin(manifest.blobs().map(|l| l.digest.clone()));

        // Every missing blob at once: the small ones (template, parameters, config) then cost
        // no round trips after the weights.
        let mut seen = HashSet::new();
        let fetches = manifest
            .layers
            .iter()
            .chain(std::iter::once(&manifest.config))
            .filter(|layer| seen.insert(layer.digest.clone()))
            .map(|layer| async {
                if store.has_blob(&layer.digest) {
                    progress.send(TransferStatus::blob("pulling", &layer.digest, layer.size, layer.size));
                    return Ok(());
                }
                self.fetch_blob(&connection, store, layer, progress).await
            });
        futures_util::future::try_join_all(fetches).await?;
        // Each blob was hashed as it arrived and entered the store only if it matched.
        progress.send(TransferStatus::message("verifying sha256 digest"));

        progress.send(TransferStatus::message("writing manifest"));
        let previous = store.read_manifest(name).ok();
        store.write_manifest_bytes(name, &bytes)?;
        if let Some(previous) = previous {
            let kept: HashSet<&Digest> = manifest.blobs().map(|l| &l.digest).collect();
            let dropped: Vec<Digest> = previous
                .manifest
                .blobs()
                .map(|l| l.digest.clone())
                .filter(|d| !kept.contains(d))
                .collect();
            if !dropped.is_empty() {
                progress.send(TransferStatus::message("removing unused layers"));
                store.remove_unused_blobs(&dropped);
            }
        }
        progress.send(TransferStatus::message("success"));
        Ok(())
    }

    /// Fails fast when the blobs still to download cannot fit on the disk.
    fn check_space(&self, store: &Store, name: &ModelName, manifest: &Manifest) -> Result<(), RegistryError> {
        let mut seen = HashSet::new();
        let needed: u64 = manifest
            .blobs()
            .filter(|l| seen.insert(&l.digest) && !store.has_blob(&l.digest))
            .map(|l| l.size - resumable_bytes(store, &l.digest, l.size))
            .sum();
        let Some(free) = store.free_space() else {
            return Ok(());
        };
        if needed > free {
            return Err(RegistryError::NotEnoughSpace {
                name: name.display_shortest(),
                needed,
                free,
            });
        }
        Ok(())
    }

    /// Downloads one blob, or waits for the download another pull already started, reporting
    /// its progress either way. The download stops when every pull waiting for it has gone;
    /// what it fetched stays on disk for the next pull to resume.
    async fn fetch_blob(
        &self,
        connection: &Arc<Connection>,
        store: &Arc<Store>,
        layer: &Layer,
        progress: &Progress,
    ) -> Result<(), RegistryError> {
        let waiter = join_download(&self.downloads, connection, store, layer);
        let (blob_progress, mut result) = (waiter.progress.clone(), waiter.result.clone());
        let (digest, total) = (layer.digest.clone(), layer.size);
        let outcome = report_while(result.wait_for(Option::is_some), || {
            progress.send(TransferStatus::blob(
                "pulling",
                &digest,
                total,
                blob_progress.completed.load(Ordering::Relaxed),
            ));
        })
        .await
        .map(|value| value.clone().expect("wait_for returns a finished result"));
        drop(waiter);
        match outcome {
            Ok(Ok(())) => {
                progress.send(TransferStatus::blob("pulling", &digest, total, total));
                Ok(())
            }
            Ok(Err(shared)) => Err(match Arc::try_unwrap(shared) {
                Ok(own) => own,
                Err(shared) => RegistryError::Shared(shared),
            }),
            Err(_) => Err(RegistryError::Interrupted(format!("the download of {digest} stopped"))),
        }
    }
}

/// A pull waiting for a download; when the last one goes, the download is stopped.
struct Waiter {
    downloads: Downloads,
    digest: Digest,
    progress: Arc<BlobProgress>,
    result: tokio::sync::watch::Receiver<Option<Result<(), Arc<RegistryError>>>>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut downloads = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = downloads.get_mut(&self.digest) else {
            return;
        };
        if !Arc::ptr_eq(&entry.progress, &self.progress) {
            return;
        }
        entry.waiters -= 1;
        if entry.waiters == 0 {
            entry.task.abort();
            downloads.remove(&self.digest);
        }
    }
}

/// Joins the download of `layer` in flight, or starts it.
fn join_download(downloads: &Downloads, connection: &Arc<Connection>, store: &Arc<Store>, layer: &Layer) -> Waiter {
    let mut map = downloads.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = map.get_mut(&layer.digest) {
        entry.waiters += 1;
        return Waiter {
            downloads: downloads.clone(),
            digest: layer.digest.clone(),
            progress: entry.progress.clone(),
            result: entry.result.clone(),
        };
    }
    let progress = Arc::new(BlobProgress::default());
    progress
        .completed
        .store(resumable_bytes(store, &layer.digest, layer.size), Ordering::Relaxed);
    let (sender, result) = tokio::sync::watch::channel(None);
    let task = {
        let (connection, store, progress) = (connection.clone(), store.clone(), progress.clone());
        let (digest, size, downloads) = (layer.digest.clone(), layer.size, downloads.clone());
        tokio::spawn(async move {
            let outcome = download_blob(&connection, &store, &digest, size, &progress).await;
            let mut map = downloads.lock().unwrap_or_else(|e| e.into_inner());
            if map.get(&digest).is_some_and(|e| Arc::ptr_eq(&e.progress, &progress)) {
                map.remove(&digest);
            }
            let _ = sender.send(Some(outcome.map_err(Arc::new)));
        })
    };
    map.insert(
        layer.digest.clone(),
        InFlight {
            progress: progress.clone(),
            result: result.clone(),
            task: task.abort_handle(),
            waiters: 1,
        },
    );
    Waiter {
        downloads: downloads.clone(),
        digest: layer.digest.clone(),
        progress,
        result,
    }
}
