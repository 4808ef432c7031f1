//! What `/api/show`, `/api/tags` and `/api/ps` report about models.

use serde_json::{json, Map, Value};

use crate::api::types::ModelDetails;
use crate::error::HerdError;
use crate::gguf;
use crate::model::{parse_name, Model};
use crate::modelfile::{Command, Modelfile};
use crate::prompt::ChatTemplate;
use crate::scheduler::Scheduler;
use crate::store::{ModelConfig, Store, StoredManifest};

fn rfc3339(time: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn details(config: &ModelConfig, parent: Option<&str>) -> ModelDetails {
    ModelDetails {
        parent_model: parent.unwrap_or_default().to_string(),
        format: if config.model_format.is_empty() {
            "gguf".into()
        } else {
            config.model_format.clone()
        },
        family: config.model_family.clone(),
        families: config.model_families.clone(),
        parameter_size: config.model_type.clone(),
        quantization_level: config.file_type.clone(),
    }
}

fn read_config(store: &Store, stored: &StoredManifest) -> ModelConfig {
    store
        .read_blob(&stored.manifest.config.digest)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// `/api/tags`: every model in the store.
pub fn list_models(store: &Store) -> Result<Vec<Value>, HerdError> {
    let mut models = store.list()?;
    models.sort_by_key(|m| std::cmp::Reverse(m.modified_at));
    Ok(models
        .iter()
        .map(|stored| {
            let name = stored.name.to_string();
            json!({
                "name": name,
                "model": name,
                "modified_at": rfc3339(stored.modified_at),
                "size": stored.manifest.total_size(),
                "digest": stored.digest.hex(),
                "details": details(&read_config(store, stored), None),
            })
        })
        .collect())
}

/// `GET /v1/models`: every model as an OpenAI model object, newest first.
pub fn openai_models(store: &Store) -> Result<Vec<Value>, HerdError> {
    let mut models = store.list()?;
    models.sort_by_key(|m| std::cmp::Reverse(m.modified_at));
    Ok(models.iter().map(openai_model_object).collect())
}

/// `GET /v1/models/{model}`: one model as an OpenAI model object.
pub fn openai_model(store: &Store, name: &str) -> Result<Value, HerdError> {
    let name = parse_name(name)?;
    Ok(openai_model_object(&store.read_manifest(&name)?))
}

fn openai_model_object(stored: &StoredManifest) -> Value {
    let created = stored
        .modified_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "id": stored.name.to_string(),
        "object": "model",
        "created": created,
        "owned_by": stored.name.namespace,
    })
}

/// `/api/ps`: the loaded models.
pub fn running_models(store: &Store, scheduler: &Scheduler) -> Vec<Value> {
    scheduler
        .loaded()
        .into_iter()
        .map(|loaded| {
            let config = parse_name(&loaded.name)
                .ok()
                .and_then(|name| store.read_manifest(&name).ok())
                .map(|stored| read_config(store, &stored))
                .unwrap_or_default();
            let expires_at = loaded
                .expires_at
                .map(rfc3339)
                .unwrap_or_else(|| "2318-01-01T00:00:00Z".into());
            json!({
                "name": loaded.name,
                "model": loaded.name,
                "size": loaded.size,
                "digest": loaded.digest,
                "details": details(&config, None),
                "expires_at": expires_at,
                "size_vram": loaded.size_vram,
                "context_length": loaded.context_length,
            })
        })
        .collect()
}

/// `/api/show`.
pub fn show_model(store: &Store, name: &str, verbose: bool) -> Result<Value, HerdError> {
    let model = Model::open(store, name)?;
    let info = gguf::read_gguf_path(
        &model.model_path,
        gguf::ReadOptions {
            keep_arrays_up_to: if verbose { usize::MAX } else { 5 },
        },
    )
    .map_err(|e| HerdError::Internal(format!("cannot read the weights of '{name}': {e}")))?;
    let template = match &model.template {
        Some(text) => Some(ChatTemplate::go(text)?),
        None => info.chat_template().map(|t| ChatTemplate::Jinja(t.to_string())),
    };
    // As Ollama: an embedding model (pooling in its GGUF) is not a completion model.
    let mut capabilities = vec![if info.is_embedding_model() {
        "embedding"
    } else {
        "completion"
    }];
    if let Some(template) = &template {
        if template.supports_tools() {
            capabilities.push("tools");
        }
        if template.supports_insert() {
            capabilities.push("insert");
        }
        if template.thinking_tags().is_some() {
            capabilities.push("thinking");
        }
    }
    if model.projector_path.is_some() {
        capabilities.push("vision");
    }
    let template_text = model
        .template
        .clone()
        .or_else(|| info.chat_template().map(String::from))
        .unwrap_or_default();
    let mut out = Map::new();
    out.insert(
        "modelfile".into(),
        Value::String(modelfile_text(&model, &template_text)),
    );
    out.insert("parameters".into(), Value::String(parameters_text(&model.params)));
    out.insert("template".into(), Value::String(template_text));
    if let Some(system) = &model.system {
        out.insert("system".into(), Value::String(system.clone()));
    }
    if !model.licenses.is_empty() {
        out.insert("license".into(), Value::String(model.licenses.join("\n")));
    }
    let mut details = serde_json::to_value(details(&model.config, model.parent_model.as_deref())).unwrap_or_default();
    if let Some(obj) = details.as_object_mut() {
        if let Some(n) = info.context_length() {
            obj.insert("context_length".into(), json!(n));
        }
        if let Some(n) = info.embedding_length() {
            obj.insert("embedding_length".into(), json!(n));
        }
    }
    out.insert("details".into(), details);
    if !model.messages.is_empty() {
        out.insert(
            "messages".into(),
            serde_json::to_value(&model.messages).unwrap_or_default(),
        );
    }
    out.insert("model_info".into(), Value::Object(info.model_info(verbose)));
    if let Some(path) = &model.projector_path {
        let projector = gguf::read_gguf_path(path, gguf::ReadOptions { keep_arrays_up_to: 5 })
            .map_err(|e| HerdError::Internal(format!("cannot read the projector of '{name}': {e}")))?;
        out.insert("projector_info".into(), Value::Object(projector.model_info(verbose)));
    }
    out.insert("capabilities".into(), json!(capabilities));
    out.insert("modified_at".into(), Value::String(rfc3339(model.stored.modified_at)));
    Ok(Value::Object(out))
}

/// Options as Ollama's `parameters` text: the key padded to 30 columns, then the value.
fn parameters_text(params: &Map<String, Value>) -> String {
    let mut lines = Vec::new();
    for (key, value) in params {
        let values = match value {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for value in values {
            let text = match value {
                Value::String(s) => format!("{s:?}"),
                other => go_value_text(&other),
            };
            lines.push(format!("{key:<30} {text}"));
        }
    }
    lines.join("\n")
}

/// A non-string option value as Go prints it: a whole float has no `.0` (`1`, not `1.0`).
fn go_value_text(value: &Value) -> String {
    match value.as_f64() {
        Some(f) if value.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
        _ => value.to_string(),
    }
}

/// A Modelfile that recreates the model.
fn modelfile_text(model: &Model, template: &str) -> String {
    let mut commands = vec![Command::From(model.model_path.display().to_string())];
    // Ollama writes a projector as a second FROM.
    if let Some(projector) = &model.projector_path {
        commands.push(Command::From(projector.display().to_string()));
    }
    if let Some(adapter) = &model.adapter_path {
        commands.push(Command::Adapter(adapter.display().to_string()));
    }
    if !template.is_empty() {
        commands.push(Command::Template(template.to_string()));
    }
    if let Some(system) = &model.system {
        commands.push(Command::System(system.clone()));
    }
    for (key, value) in &model.params {
        let values = match value {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for value in values {
            let text = match value {
                Value::String(s) => s,
                other => go_value_text(&other),
            };
            commands.push(Command::Parameter {
                name: key.clone(),
                value: text,
            });
        }
    }
    for message in &model.messages {
        commands.push(Command::Message {
            role: message.role.clone(),
            content: message.content.clone(),
        });
    }
    for license in &model.licenses {
        commands.push(Command::License(license.clone()));
    }
    let name = model.stored.name.to_string();
    format!(
        "# Modelfile generated by \"herd show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {name}\n\n{}",
        Modelfile { commands }
    )
}
