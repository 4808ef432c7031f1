//! Manifests and config blobs in the Docker v2 / OCI form Ollama's registry serves.
//!
//! Own serde types rather than `oci-spec`'s: Ollama's layers carry `from` and `name` fields
//! that `oci_spec::image::Descriptor` drops, and a manifest must round-trip byte for byte.

use serde::{Deserialize, Serialize};

use super::Digest;

/// Media type of the manifest itself.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of the config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";

/// What a layer holds, by its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// GGUF weights.
    Model,
    /// LoRA adapter (GGUF).
    Adapter,
    /// Multimodal projector (GGUF).
    Projector,
    /// Go template text.
    Template,
    /// System prompt text.
    System,
    /// JSON object of default options.
    Params,
    /// JSON list of messages prepended to chats.
    Messages,
    /// License text.
    License,
}

impl LayerKind {
    /// The media type Ollama uses for this kind.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Model => "application/vnd.ollama.image.model",
            Self::Adapter => "application/vnd.ollama.image.adapter",
            Self::Projector => "application/vnd.ollama.image.projector",
            Self::Template => "application/vnd.ollama.image.template",
            Self::System => "application/vnd.ollama.image.system",
            Self::Params => "application/vnd.ollama.image.params",
            Self::Messages => "application/vnd.ollama.image.messages",
            Self::License => "application/vnd.ollama.image.license",
        }
    }

    /// The kind for a media type; `.prompt` is the legacy name of `.template`.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        Some(match media_type {
            "application/vnd.ollama.image.model" => Self::Model,
            "application/vnd.ollama.image.adapter" => Self::Adapter,
            "application/vnd.ollama.image.projector" => Self::Projector,
            "application/vnd.ollama.image.template" | "application/vnd.ollama.image.prompt" => Self::Template,
            "application/vnd.ollama.image.system" => Self::System,
            "application/vnd.ollama.image.params" => Self::Params,
            "application/vnd.ollama.image.messages" => Self::Messages,
            "application/vnd.ollama.image.license" => Self::License,
            _ => return None,
        })
    }
}

/// One blob a manifest points at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    /// What the blob holds.
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The repository the blob came from (enables cross-repository mounts on push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A file name or tensor name, for multi-file models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Layer {
    /// A layer of `kind` for a blob already in the store.
    pub fn new(kind: LayerKind, digest: Digest, size: u64) -> Self {
        Self {
            media_type: kind.media_type().to_string(),
            digest,
            size,
            from: None,
            name: None,
        }
    }

    /// The layer's kind, if herd knows its media type.
    pub fn kind(&self) -> Option<LayerKind> {
        LayerKind::from_media_type(&self.media_type)
    }
}

/// An image manifest: a config blob and the layers of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type.
    #[serde(default = "default_manifest_media_type")]
    pub media_type: String,
    /// The config blob.
    pub config: Layer,
    /// The model's layers, weights first.
    pub layers: Vec<Layer>,
}

fn default_manifest_media_type() -> String {
    MANIFEST_MEDIA_TYPE.to_string()
}

impl Manifest {
    /// A manifest in Ollama's form.
    pub fn new(config: Layer, layers: Vec<Layer>) -> Self {
        Self {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE.to_string(),
            config,
            layers,
        }
    }

    /// The config and every layer.
    pub fn blobs(&self) -> impl Iterator<Item = &Layer> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// Total bytes of the model: layers plus config, as `/api/tags` reports it.
    pub fn total_size(&self) -> u64 {
        self.blobs().map(|l| l.size).sum()
    }

    /// The first layer of `kind`.
    pub fn layer(&self, kind: LayerKind) -> Option<&Layer> {
        self.layers.iter().find(|l| l.kind() == Some(kind))
    }
}

/// The config blob: what `/api/tags` and `/api/show` report under `details`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Always `gguf` here.
    #[serde(default)]
    pub model_format: String,
    /// The GGUF architecture, e.g. `gemma3`.
    #[serde(default)]
    pub model_family: String,
    /// Families, the architecture first.
    #[serde(default)]
    pub model_families: Option<Vec<String>>,
    /// Parameter count, human form (`268.10M`).
    #[serde(default)]
    pub model_type: String,
    /// Quantization (`Q4_K_M`).
    #[serde(default)]
    pub file_type: String,
    /// Always `amd64` in Ollama's configs.
    #[serde(default)]
    pub architecture: String,
    /// Always `linux` in Ollama's configs.
    #[serde(default)]
    pub os: String,
    /// Layer digests, as published models carry them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootFs>,
}

/// The `rootfs` of a config blob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The layer digests.
    pub diff_ids: Vec<String>,
}

/// Media type of an OCI image manifest (accepted as well as Docker's).
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI config blob.
const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Prefix of every Ollama layer media type.
const OLLAMA_LAYER_PREFIX: &str = "application/vnd.ollama.image.";
/// Most layers a model manifest may have.
const MAX_LAYERS: usize = 1000;
/// Largest blob a manifest may announce (1 TiB).
const MAX_BLOB_SIZE: u64 = 1 << 40;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<serde_json::Number>,
}

impl Manifest {
    /// Parses a manifest from outside (a registry, an imported bundle), checking every field
    /// herd will act on before anything touches the disk: the schema, the media types, each
    /// digest (`sha256:<64 hex>`, nothing that could become a path) and each size.
    pub fn parse_untrusted(bytes: &[u8]) -> Result<Manifest, String> {
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
        if raw.schema_version != Some(2) {
            return Err("schemaVersion must be 2".into());
        }
        if let Some(media_type) = &raw.media_type {
            if media_type != MANIFEST_MEDIA_TYPE && media_type != OCI_MANIFEST_MEDIA_TYPE {
                return Err(format!("unsupported manifest media type {}", shorten(media_type)));
            }
        }
        let config = raw.config.as_ref().ok_or("the manifest has no config")?;
        check_descriptor(config, "config", |t| {
            t == CONFIG_MEDIA_TYPE || t == OCI_CONFIG_MEDIA_TYPE
        })?;
        let layers = raw.layers.as_deref().unwrap_or_default();
        if layers.is_empty() {
            return Err("the manifest has no layers".into());
        }
        if layers.len() > MAX_LAYERS {
            return Err(format!(
                "the manifest has {} layers, more than {MAX_LAYERS}",
                layers.len()
            ));
        }
        for (index, layer) in layers.iter().enumerate() {
            check_descriptor(layer, &format!("layer {index}"), |t| t.starts_with(OLLAMA_LAYER_PREFIX))?;
        }
        serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))
    }
}

fn check_descriptor(
    descriptor: &RawDescriptor,
    what: &str,
    media_type_ok: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let digest = descriptor.digest.as_deref().unwrap_or_default();
    Digest::parse(digest).map_err(|_| format!("invalid digest format in the {what}: {}", shorten(digest)))?;
    let size = descriptor
        .size
        .as_ref()
        .and_then(serde_json::Number::as_u64)
        .ok_or_else(|| format!("invalid size in the {what}"))?;
    if size > MAX_BLOB_SIZE {
        return Err(format!("absurd size in the {what}: {size} bytes"));
    }
    let media_type = descriptor.media_type.as_deref().unwrap_or_default();
    if !media_type_ok(media_type) {
        return Err(format!("unsupported media type in the {what}: {}", shorten(media_type)));
    }
    Ok(())
}

/// An untrusted string, quoted and cut short for an error message.
fn shorten(text: &str) -> String {
    let short: String = text.chars().take(80).collect();
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with(config_digest: &str, layer: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": 10},
            "layers": [layer],
        }))
        .unwrap()
    }

    #[test]
    fn accepts_ollama_manifests() {
        let good = format!("sha256:{}", "a".repeat(64));
        let bytes = manifest_with(
            &good,
            serde_json::json!({"mediaType": "application/vnd.ollama.image.model", "digest": good, "size": 5}),
        );
        assert_eq!(Manifest::parse_untrusted(&bytes).unwrap().layers[0].size, 5);
    }

    #[test]
    fn rejects_every_malformed_descriptor() {
        let good = format!("sha256:{}", "a".repeat(64));
        let layer = |digest: &str, size: serde_json::Value, media: &str| serde_json::json!({"mediaType": media, "digest": digest, "size": size});
        let model = "application/vnd.ollama.image.model";
        let cases = [
            (
                manifest_with(&good, layer("sha256:../../x", 5.into(), model)),
                "invalid digest format",
            ),
            (
                manifest_with(&good, layer(&format!("sha256:{}", "a".repeat(63)), 5.into(), model)),
                "invalid digest",
            ),
            (
                manifest_with(&good, layer(&format!("sha512:{}", "a".repeat(64)), 5.into(), model)),
                "invalid digest",
            ),
            (manifest_with(&good, layer("", 5.into(), model)), "invalid digest"),
            (
                manifest_with("sha256:../x", layer(&good, 5.into(), model)),
                "invalid digest format in the config",
            ),
            (manifest_with(&good, layer(&good, (-1).into(), model)), "invalid size"),
            (
                manifest_with(&good, layer(&good, (1u64 << 63).into(), model)),
                "absurd size",
            ),
            (
                manifest_with(&good, layer(&good, 5.into(), "text/html")),
                "unsupported media type",
            ),
            (b"not json".to_vec(), "not a manifest"),
            (
                br#"{"schemaVersion":2,"config":null,"layers":[]}"#.to_vec(),
                "no config",
            ),
            (br#"{"schemaVersion":1}"#.to_vec(), "schemaVersion"),
        ];
        for (bytes, expected) in cases {
            let error = Manifest::parse_untrusted(&bytes).unwrap_err();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
        let empty = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{CONFIG_MEDIA_TYPE}","digest":"{good}","size":1}},"layers":null}}"#
        );
        assert!(Manifest::parse_untrusted(empty.as_bytes())
            .unwrap_err()
            .contains("no layers"));
    }
}
