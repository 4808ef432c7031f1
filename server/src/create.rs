//! `/api/create`: builds a manifest from uploaded blobs, an existing model or (when allowed)
//! a server-side file, plus template, system, parameters, messages and license layers.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::api::types::CreateRequest;
use crate::config::Config;
use crate::error::HerdError;
use crate::gguf::{self, GgufInfo};
use crate::model::parse_name;
use crate::options::check_option;
use crate::store::{Digest, Layer, LayerKind, Manifest, ModelConfig, Store, StoreError, CONFIG_MEDIA_TYPE};

/// Reports create progress as Ollama's status lines.
pub trait CreateProgress: Send {
    /// One status line (`parsing GGUF`, `using existing layer sha256:...`, ...).
    fn status(&mut self, status: String);
}

/// Creates the model described by `request`.
pub fn create_model(
    store: &Store,
    config: &Arc<Config>,
    request: &CreateRequest,
    progress: &mut dyn CreateProgress,
) -> Result<(), HerdError> {
    let name = parse_name(&request.model)?;
    if request.quantize.as_deref().is_some_and(|q| !q.is_empty()) {
        return Err(HerdError::bad_request("quantization is not supported by herd yet"));
    }
    let mut layers: Vec<Layer>;
    let model_config: ModelConfig;
    let uploaded = match &request.files {
        Some(files) if !files.is_empty() => uploaded_ggufs(store, files, progress)?,
        _ => Uploaded::default(),
    };
    match (uploaded.weights, request.from.as_deref().filter(|f| !f.is_empty())) {
        (Some((layer, info)), _) => {
            model_config = config_from_gguf(&info);
            layers = vec![layer];
        }
        (_, Some(from)) if looks_like_path(from) => {
            if !config.allow_local_paths {
                return Err(HerdError::bad_request(
                    "creating a model from a path on the server is disabled; upload the file as a blob \
                     (`herd create` does this) or set HERD_ALLOW_LOCAL_PATHS=1 on the server",
                ));
            }
            let (layer, info) = weights_from_path(store, Path::new(from), progress)?;
            model_config = config_from_gguf(&info);
            layers = vec![layer];
        }
        (_, Some(from)) => {
            let base_name = parse_name(from)?;
            let base = store.read_manifest(&base_name)?;
            model_config = serde_json::from_slice(&store.read_blob(&base.manifest.config.digest)?)
                .map_err(|e| HerdError::Internal(format!("config blob of '{from}' is corrupt: {e}")))?;
            layers = base.manifest.layers.clone();
            for layer in &mut layers {
                if layer.kind() == Some(LayerKind::Model) && layer.from.is_none() {
                    layer.from = Some(base.name.display_long());
                }
            }
            for layer in &layers {
                progress.status(format!("using existing layer {}", layer.digest));
            }
        }
        (None, None) if uploaded.projector.is_some() => {
            return Err(HerdError::bad_request(
                "a projector needs a model: give 'from' or a model GGUF in 'files' too",
            ))
        }
        _ => return Err(HerdError::bad_request("neither 'from' or 'files' was specified")),
    }
    if let Some(projector) = uploaded.projector {
        layers.retain(|l| l.kind() != Some(LayerKind::Projector));
        layers.push(projector);
    }

    if let Some(adapters) = request.adapters.as_ref().filter(|a| !a.is_empty()) {
        let layer = adapter_from_files(store, adapters, &model_config, progress)?;
        layers.retain(|l| l.kind() != Some(LayerKind::Adapter));
        layers.push(layer);
    }
    if let Some(template) = &request.template {
        crate::prompt::ChatTemplate::go(template)?;
        replace_layer(store, &mut layers, LayerKind::Template, template.as_bytes(), progress)?;
    }
    if let Some(system) = &request.system {
        replace_layer(store, &mut layers, LayerKind::System, system.as_bytes(), progress)?;
    }
    if let Some(parameters) = &request.parameters {
        let merged = merge_parameters(store, &layers, parameters)?;
        let bytes = serde_json::to_vec(&merged).unwrap_or_default();
        replace_layer(store, &mut layers, LayerKind::Params, &bytes, progress)?;
    }
    if let Some(messages) = &request.messages {
        for m in messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
                return Err(HerdError::bad_request(format!("invalid message role {:?}", m.role)));
            }
        }
        let bytes = serde_json::to_vec(messages).unwrap_or_default();
        replace_layer(store, &mut layers, LayerKind::Messages, &bytes, progress)?;
    }
    if let Some(license) = &request.license {
        let texts: Vec<String> = match license {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => return Err(HerdError::bad_request("license must be a string or a list of strings")),
        };
        layers.retain(|l| l.kind() != Some(LayerKind::License));
        for text in texts {
            let (digest, size) = store.write_blob_bytes(text.as_bytes())?;
            progress.status(format!("creating new layer {digest}"));
            layers.push(Layer::new(LayerKind::License, digest, size));
        }
    }

    let config_bytes = serde_json::to_vec(&model_config).unwrap_or_default();
    let (config_digest, config_size) = store.write_blob_bytes(&config_bytes)?;
    let config_layer = Layer {
        media_type: CONFIG_MEDIA_TYPE.to_string(),
        digest: config_digest,
        size: config_size,
        from: None,
        name: None,
    };
    // A delete of the base model (or of another model sharing a layer) may have removed a
    // blob since it was seen: pinned now, each must still be there, or the manifest would
    // point at nothing.
    let _pins = store.pin(layers.iter().chain([&config_layer]).map(|l| l.digest.clone()));
    if let Some(gone) = layers
        .iter()
        .chain([&config_layer])
        .find(|l| !store.has_blob(&l.digest))
    {
        return Err(StoreError::BlobNotFound(gone.digest.clone()).into());
    }
    progress.status("writing manifest".into());
    store.write_manifest(&name, &Manifest::new(config_layer, layers))?;
    progress.status("success".into());
    Ok(())
}

/// Stores `bytes` as the model's only layer of `kind`.
fn replace_layer(
    store: &Store,
    layers: &mut Vec<Layer>,
    kind: LayerKind,
    bytes: &[u8],
    progress: &mut dyn CreateProgress,
) -> Result<(), HerdError> {
    layers.retain(|l| l.kind() != Some(kind));
    let (digest, size) = store.write_blob_bytes(bytes)?;
    progress.status(format!("creating new layer {digest}"));
    layers.push(Layer::new(kind, digest, size));
    Ok(())
}

fn looks_like_path(from: &str) -> bool {
    from.starts_with('/')
        || from.starts_with("./")
        || from.starts_with("../")
        || from.starts_with('~')
        || from.ends_with(".gguf")
}

/// The layers made of `files`, each GGUF uploaded as a blob beforehand.
#[derive(Default)]
struct Uploaded {
    /// The weights and what their GGUF says.
    weights: Option<(Layer, GgufInfo)>,
    /// A vision projector (a GGUF of architecture `clip`, as llama.cpp writes mmproj files).
    projector: Option<Layer>,
}

/// Sorts `files` into the weights and a projector, as Ollama does: at most one of each.
fn uploaded_ggufs(
    store: &Store,
    files: &Map<String, Value>,
    progress: &mut dyn CreateProgress,
) -> Result<Uploaded, HerdError> {
    let mut uploaded = Uploaded::default();
    for (file_name, digest) in files {
        let digest = uploaded_file(store, file_name, digest)?;
        progress.status("parsing GGUF".into());
        let info = read_model_gguf(&store.blob_path(&digest), file_name)?;
        let layer = Layer::new(
            if info.architecture() == Some("clip") {
                LayerKind::Projector
            } else {
                LayerKind::Model
            },
            digest.clone(),
            store.blob_size(&digest)?,
        );
        let taken = match layer.kind() {
            Some(LayerKind::Projector) => uploaded.projector.replace(layer).is_some(),
            _ => uploaded.weights.replace((layer, info)).is_some(),
        };
        if taken {
            return Err(HerdError::bad_request(
                "'files' takes one model GGUF and at most one projector GGUF",
            ));
        }
        progress.status(format!("using existing layer {digest}"));
    }
    Ok(uploaded)
}

/// The adapter layer from `adapters`: one LoRA GGUF for the model's architecture, uploaded
/// as a blob beforehand (llama.cpp applies one adapter per context).
fn adapter_from_files(
    store: &Store,
    adapters: &Map<String, Value>,
    model: &ModelConfig,
    progress: &mut dyn CreateProgress,
) -> Result<Layer, HerdError> {
    let mut entries = adapters.iter();
    let (Some((file_name, digest)), None) = (entries.next(), entries.next()) else {
        return Err(HerdError::bad_request(
            "exactly one GGUF file is supported in 'adapters'",
        ));
    };
    let digest = uploaded_file(store, file_name, digest)?;
    progress.status("parsing GGUF".into());
    let info = gguf::read_gguf_path(&store.blob_path(&digest), gguf::ReadOptions { keep_arrays_up_to: 0 })
        .map_err(|e| HerdError::InvalidModelFile(format!("{file_name} is not a valid GGUF adapter: {e}")))?;
    let text = |key| info.get(key).and_then(|v| v.as_str());
    if text("general.type") != Some("adapter") || text("adapter.type") != Some("lora") {
        return Err(HerdError::InvalidModelFile(format!(
            "{file_name} is not a LoRA adapter (general.type \"adapter\", adapter.type \"lora\")"
        )));
    }
    let architecture = info.architecture().unwrap_or_default();
    if architecture != model.model_family {
        return Err(HerdError::InvalidModelFile(format!(
            "adapter {file_name} is for {architecture:?}, the model is {:?}",
            model.model_family
        )));
    }
    let size = store.blob_size(&digest)?;
    progress.status(format!("using existing layer {digest}"));
    Ok(Layer::new(LayerKind::Adapter, digest, size))
}

/// The digest of a `name -> digest` entry of `files` or `adapters`, its blob already uploaded.
fn uploaded_file(store: &Store, file_name: &str, digest: &Value) -> Result<Digest, HerdError> {
    if file_name.is_empty() || file_name.starts_with('/') || file_name.split(['/', '\\']).any(|p| p == "..") {
        return Err(HerdError::bad_request("file path must be relative"));
    }
    let digest = digest
        .as_str()
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| HerdError::bad_request(format!("invalid digest for file {file_name:?}")))?;
    if !store.has_blob(&digest) {
        return Err(HerdError::bad_request(format!(
            "blob {digest} for file {file_name:?} not found; upload it first with POST /api/blobs/{digest}"
        )));
    }
    Ok(digest)
}

fn weights_from_path(
    store: &Store,
    path: &Path,
    progress: &mut dyn CreateProgress,
) -> Result<(Layer, GgufInfo), HerdError> {
    progress.status("parsing GGUF".into());
    // A device, FIFO or directory is never opened: /dev/random would be read without end and
    // a FIFO would block until someone writes to it.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Err(HerdError::InvalidModelFile(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    // Parse before copying: a file that is not GGUF never enters the store.
    let info = read_model_gguf(path, &path.display().to_string())?;
    let (digest, size) = store.import_file(path)?;
    progress.status(format!("creating new layer {digest}"));
    Ok((Layer::new(LayerKind::Model, digest, size), info))
}

fn read_model_gguf(path: &Path, label: &str) -> Result<GgufInfo, HerdError> {
    let info = gguf::read_gguf_path(path, gguf::ReadOptions { keep_arrays_up_to: 0 })
        .map_err(|e| HerdError::InvalidModelFile(format!("{label} is not a valid GGUF model: {e}")))?;
    if info.architecture().is_none() {
        return Err(HerdError::InvalidModelFile(format!(
            "{label} has no general.architecture"
        )));
    }
    Ok(info)
}

fn config_from_gguf(info: &GgufInfo) -> ModelConfig {
    let family = info.architecture().unwrap_or_default().to_string();
    ModelConfig {
        model_format: "gguf".into(),
        model_families: Some(vec![family.clone()]),
        model_family: family,
        model_type: gguf::human_number(info.parameter_count()),
        file_type: info.file_type_name().unwrap_or_default(),
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: None,
    }
}

/// Parameters of the base model, overridden key by key by the new ones.
fn merge_parameters(
    store: &Store,
    layers: &[Layer],
    new: &Map<String, Value>,
) -> Result<Map<String, Value>, HerdError> {
    for (key, value) in new {
        if crate::options::option_kind(key).is_none() {
            return Err(HerdError::bad_request(format!("unknown parameter '{key}'")));
        }
        check_option(key, value)?;
    }
    let mut merged: Map<String, Value> = match layers.iter().find(|l| l.kind() == Some(LayerKind::Params)) {
        Some(layer) => serde_json::from_slice(&store.read_blob(&layer.digest)?).unwrap_or_default(),
        None => Map::new(),
    };
    for (key, value) in new {
        merged.insert(key.clone(), value.clone());
    }
    Ok(merged)
}
