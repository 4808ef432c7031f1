//! Model bundles for air-gapped machines: one model as an OCI image-layout tar
//! (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), written by `export` and read back by
//! `import` with every digest verified. Entry names are never used as paths: a blob entry
//! only names the digest its bytes must hash to.

use std::collections::HashSet;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::HerdError;
use crate::store::{Digest, Manifest, ModelName, Store, StoreError};

/// The annotation OCI layouts name an image by.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Largest `index.json` or `oci-layout` read.
const MAX_METADATA: u64 = 1 << 20;
/// Most models one bundle may hold.
const MAX_MODELS: usize = 64;

#[derive(Serialize, Deserialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    manifests: Vec<IndexEntry>,
}

#[derive(Serialize, Deserialize)]
struct IndexEntry {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: serde_json::Map<String, serde_json::Value>,
}

/// Writes the model `name` as an OCI image-layout tar (blocking).
pub fn export_model(store: &Store, name: &ModelName, out: impl Write) -> Result<(), HerdError> {
    let stored = store.read_manifest(name)?;
    let manifest_bytes = store.read_manifest_bytes(name)?;
    let index = Index {
        schema_version: 2,
        manifests: vec![IndexEntry {
            media_type: stored.manifest.media_type.clone(),
            digest: Digest::of(&manifest_bytes),
            size: manifest_bytes.len() as u64,
            annotations: [(REF_NAME.to_string(), json!(name.display_long()))]
                .into_iter()
                .collect(),
        }],
    };
    let mut tar = tar::Builder::new(out);
    let io = |e: std::io::Error| HerdError::from(StoreError::from_io("cannot write the bundle", e));
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
    append(
        &mut tar,
        "index.json",
        &serde_json::to_vec(&index).map_err(|e| HerdError::Internal(e.to_string()))?,
    )
    .map_err(io)?;
    append(&mut tar, &blob_entry(&index.manifests[0].digest), &manifest_bytes).map_err(io)?;
    let mut seen = HashSet::new();
    for layer in stored.manifest.blobs().filter(|l| seen.insert(l.digest.clone())) {
        let mut file = std::fs::File::open(store.blob_path(&layer.digest))
            .map_err(|_| StoreError::BlobNotFound(layer.digest.clone()))?;
        let mut header = tar::Header::new_ustar();
        header.set_size(layer.size);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, blob_entry(&layer.digest), &mut file)
            .map_err(io)?;
    }
    tar.into_inner().and_then(|mut w| w.flush()).map_err(io)
}

fn append(tar: &mut tar::Builder<impl Write>, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, path, bytes)
}

fn blob_entry(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Reads an OCI image-layout tar into the store (blocking): each blob verified against the
/// digest its entry names, each manifest validated and complete before it is written.
/// Returns the models imported. Blobs of a failed import that no model uses are removed.
pub fn import_bundle(store: &Store, input: impl Read) -> Result<Vec<ModelName>, HerdError> {
    let mut imported = Vec::new();
    let result = read_bundle(store, input, &mut imported);
    // Whatever no manifest references (manifest blobs themselves, a failed import's blobs).
    store.remove_unused_blobs(&imported);
    result
}

fn read_bundle(store: &Store, input: impl Read, imported: &mut Vec<Digest>) -> Result<Vec<ModelName>, HerdError> {
    let bad = |message: String| HerdError::bad_request(format!("invalid bundle: {message}"));
    let mut archive = tar::Archive::new(input);
    // Every blob met, written or found present, stays until the manifests refer to it: a
    // delete or a failed pull running meanwhile removes what no manifest uses.
    let mut pins = Vec::new();
    let mut index = None;
    let mut layout = false;
    let entries = archive.entries().map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("unreadable tar entry: {e}")))?;
        let path = entry
            .path()
            .map_err(|_| bad("an entry name that is not UTF-8".into()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            other => return Err(bad(format!("{path:?} is a {other:?} entry; only files are allowed"))),
        }
        match path.as_str() {
            "oci-layout" => {
                read_small(&mut entry).map_err(bad)?;
                layout = true;
            }
            "index.json" => {
                let bytes = read_small(&mut entry).map_err(bad)?;
                index = Some(serde_json::from_slice::<Index>(&bytes).map_err(|e| bad(format!("index.json: {e}")))?);
            }
            _ => {
                let digest = path
                    .strip_prefix("blobs/sha256/")
                    .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "unexpected entry {:?}",
                            path.chars().take(100).collect::<String>()
                        ))
                    })?;
                pins.push(store.pin([digest.clone()]));
                if store.has_blob(&digest) {
                    continue;
                }
                store
                    .write_blob_reader(Some(&digest), &mut entry, "cannot read the bundle")
                    .map_err(|e| match e {
                        StoreError::DigestMismatch { expected, actual } => {
                            bad(format!("blob {expected} holds bytes whose digest is {actual}"))
                        }
                        other => other.into(),
                    })?;
                imported.push(digest);
            }
        }
    }
    if !layout {
        return Err(bad("no oci-layout file".into()));
    }
    let index = index.ok_or_else(|| bad("no index.json".into()))?;
    if index.manifests.is_empty() || index.manifests.len() > MAX_MODELS {
        return Err(bad(format!("index.json lists {} models", index.manifests.len())));
    }
    let mut models = Vec::new();
    for entry in &index.manifests {
        let name = entry
            .annotations
            .get(REF_NAME)
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(format!("manifest {} has no {REF_NAME} annotation", entry.digest)))?;
        let name = ModelName::parse(name).map_err(|_| bad(format!("invalid model name {name:?}")))?;
        let bytes = store
            .read_blob(&entry.digest)
            .map_err(|_| bad(format!("manifest {} is not in the bundle", entry.digest)))?;
        let manifest: Manifest =
            Manifest::parse_untrusted(&bytes).map_err(|e| bad(format!("manifest of {name}: {e}")))?;
        for layer in manifest.blobs() {
            let size = store
                .blob_size(&layer.digest)
                .map_err(|_| bad(format!("blob {} of {name} is not in the bundle", layer.digest)))?;
            if size != layer.size {
                return Err(bad(format!(
                    "blob {} has {size} bytes, its manifest says {}",
                    layer.digest, layer.size
                )));
            }
        }
        models.push((name, bytes));
    }
    let mut names = Vec::new();
    for (name, bytes) in models {
        store.write_manifest_bytes(&name, &bytes)?;
        names.push(name);
    }
    Ok(names)
}

fn read_small(entry: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    entry
        .take(MAX_METADATA + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_METADATA {
        return Err(format!("a metadata file over {MAX_METADATA} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Layer, LayerKind, CONFIG_MEDIA_TYPE};

    fn model(store: &Store, name: &str) -> ModelName {
        let (weights, size) = store.write_blob_bytes(b"GGUF weights").unwrap();
        let (config, config_size) = store.write_blob_bytes(b"{}").unwrap();
        let mut config = Layer::new(LayerKind::Model, config, config_size);
        config.media_type = CONFIG_MEDIA_TYPE.into();
        let name = ModelName::parse(name).unwrap();
        store
            .write_manifest(
                &name,
                &Manifest::new(config, vec![Layer::new(LayerKind::Model, weights, size)]),
            )
            .unwrap();
        name
    }

    /// A model exported from one fresh store, and a second empty store (with their dirs).
    fn exported() -> (tempfile::TempDir, tempfile::TempDir, Store, Store, ModelName, Vec<u8>) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (source, target) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
        let name = model(&source, "m:t");
        let mut tar = Vec::new();
        export_model(&source, &name, &mut tar).unwrap();
        (a, b, source, target, name, tar)
    }

    #[test]
    fn a_bundle_round_trips_into_another_store() {
        let (_a, b, source, target, name, tar) = exported();
        assert_eq!(import_bundle(&target, tar.as_slice()).unwrap(), vec![name.clone()]);
        assert_eq!(
            target.read_manifest_bytes(&name).unwrap(),
            source.read_manifest_bytes(&name).unwrap()
        );
        // The manifest is not left behind as a blob.
        assert_eq!(std::fs::read_dir(b.path().join("blobs")).unwrap().count(), 2);
    }

    #[test]
    fn tampered_or_foreign_bundles_are_refused_and_leave_nothing() {
        let (_a, b, _source, target, _name, tar) = exported();
        let at = tar.windows(12).position(|w| w == b"GGUF weights").unwrap();
        let mut tampered = tar.clone();
        tampered[at] = b'X';
        let error = import_bundle(&target, tampered.as_slice()).unwrap_err().to_string();
        assert!(error.contains("holds bytes whose digest is"), "{error}");

        // The tar crate refuses to write `..`, so the name goes into the header by hand.
        let mut evil = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"../../escape");
        header.set_size(1);
        header.set_mode(0o644);
        header.set_cksum();
        evil.append(&header, &b"x"[..]).unwrap();
        let error = import_bundle(&target, evil.into_inner().unwrap().as_slice())
            .unwrap_err()
            .to_string();
        assert!(error.contains("unexpected entry"), "{error}");
        let error = import_bundle(&target, &b"not a tar at all"[..])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("invalid bundle"), "{error}");
        assert_eq!(std::fs::read_dir(b.path().join("blobs")).unwrap().count(), 0);
        assert!(target.list().unwrap().is_empty());
    }

    /// Hands out a tar and, once `at` bytes are read, runs what a concurrent delete runs.
    struct DeleteMidway<'a> {
        tar: &'a [u8],
        read: usize,
        at: usize,
        delete: Option<Box<dyn FnOnce() + 'a>>,
    }

    impl Read for DeleteMidway<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.read >= self.at {
                if let Some(delete) = self.delete.take() {
                    delete();
                }
            }
            let n = (&self.tar[self.read..]).read(buf)?;
            self.read += n;
            Ok(n)
        }
    }

    #[test]
    fn a_delete_during_an_import_leaves_the_blobs_it_brought() {
        let (_a, _b, _source, target, name, tar) = exported();
        let unused = [Digest::of(b"GGUF weights"), Digest::of(b"{}")];
        let deleted = std::cell::Cell::new(false);
        let reader = DeleteMidway {
            tar: &tar,
            read: 0,
            at: tar.len() - 1024,
            delete: Some(Box::new(|| {
                target.remove_unused_blobs(&unused);
                deleted.set(true);
            })),
        };
        assert_eq!(import_bundle(&target, reader).unwrap(), vec![name.clone()]);
        assert!(deleted.get(), "the delete ran before the manifests were written");
        assert!(
            unused.iter().all(|d| target.has_blob(d)),
            "a blob of the import was removed"
        );
    }
}
