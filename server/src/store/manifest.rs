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
