//! A stored model with its layers read: what inference and `/api/show` work from.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::error::HerdError;
use crate::store::{LayerKind, ModelConfig, ModelName, Store, StoreError, StoredManifest};
use crate::template::Message;

/// A model from the store, its small layers read into memory.
#[derive(Clone, Debug)]
pub struct Model {
    /// The name as requested.
    pub name: ModelName,
    /// The manifest as stored.
    pub stored: StoredManifest,
    /// The config blob.
    pub config: ModelConfig,
    /// The GGUF weights.
    pub model_path: PathBuf,
    /// A LoRA adapter GGUF applied on top of the weights.
    pub adapter_path: Option<PathBuf>,
    /// A vision projector (mmproj GGUF): the model reads images.
    pub projector_path: Option<PathBuf>,
    /// Go template text.
    pub template: Option<String>,
    /// System prompt.
    pub system: Option<String>,
    /// Default options.
    pub params: Map<String, Value>,
    /// Messages prepended to chats.
    pub messages: Vec<Message>,
    /// License texts.
    pub licenses: Vec<String>,
    /// The model the manifest's weights came from, if recorded.
    pub parent_model: Option<String>,
}

/// Parses a model name from a request, with Ollama's error text.
pub fn parse_name(text: &str) -> Result<ModelName, HerdError> {
    ModelName::parse(text).map_err(|_| HerdError::bad_request("invalid model name"))
}

impl Model {
    /// Parses `requested` and reads that model; not found names it as the request spelled it,
    /// as Ollama does (`model 'x' not found`, not `x:latest`).
    pub fn open(store: &Store, requested: &str) -> Result<Self, HerdError> {
        Self::load(store, &parse_name(requested)?).map_err(|e| match e {
            HerdError::Store(StoreError::ModelNotFound(_)) => {
                HerdError::Store(StoreError::ModelNotFound(requested.to_string()))
            }
            other => other,
        })
    }

    /// Reads the model `name` from the store.
    pub fn load(store: &Store, name: &ModelName) -> Result<Self, HerdError> {
        let stored = store.read_manifest(name)?;
        let manifest = &stored.manifest;
        let config: ModelConfig = serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
            .map_err(|e| HerdError::Internal(format!("config blob of '{name}' is corrupt: {e}")))?;
        let weights = manifest
            .layer(LayerKind::Model)
            .ok_or_else(|| HerdError::Internal(format!("model '{name}' has no weights layer")))?;
        let text = |kind| -> Result<Option<String>, HerdError> {
            match manifest.layer(kind) {
                Some(layer) => Ok(Some(
                    String::from_utf8_lossy(&store.read_blob(&layer.digest)?).into_owned(),
                )),
                None => Ok(None),
            }
        };
        let params = match text(LayerKind::Params)? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| HerdError::Internal(format!("params layer of '{name}' is corrupt: {e}")))?,
            None => Map::new(),
        };
        let messages = match text(LayerKind::Messages)? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| HerdError::Internal(format!("messages layer of '{name}' is corrupt: {e}")))?,
            None => Vec::new(),
        };
        let licenses = manifest
            .layers
            .iter()
            .filter(|l| l.kind() == Some(LayerKind::License))
            .map(|l| {
                store
                    .read_blob(&l.digest)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: name.clone(),
            model_path: store.blob_path(&weights.digest),
            adapter_path: manifest.layer(LayerKind::Adapter).map(|l| store.blob_path(&l.digest)),
            projector_path: manifest.layer(LayerKind::Projector).map(|l| store.blob_path(&l.digest)),
            parent_model: weights.from.clone(),
            template: text(LayerKind::Template)?,
            system: text(LayerKind::System)?,
            params,
            messages,
            licenses,
            config,
            stored,
        })
    }
}
