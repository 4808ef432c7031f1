//! The OpenAI-compatible layer (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/models`): OpenAI's request shapes translated into herd's own requests, and herd's
//! answers into OpenAI's objects, server-sent events and errors. No domain logic lives here.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::types::{ChatRequest, GenerateRequest};
use crate::error::HerdError;
use crate::inference::FinalMetrics;
use crate::template::Message;
use crate::tools::ToolCall;

/// Shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    /// Most tokens to generate (`max_tokens`, or the newer `max_completion_tokens`).
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// Newer name of `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    /// Sampling temperature; OpenAI's default is 1.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling; OpenAI's default is 1.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Seed for reproducible sampling.
    #[serde(default)]
    pub seed: Option<i64>,
    /// A stop string or a list of them.
    #[serde(default)]
    pub stop: Option<Value>,
    /// Penalty on tokens by how often they appeared.
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    /// Penalty on tokens that appeared at all.
    #[serde(default)]
    pub presence_penalty: Option<f64>,
}

impl SamplingFields {
    /// herd's `options` for these fields.
    fn options(&self) -> Result<Map<String, Value>, HerdError> {
        let mut options = Map::new();
        if let Some(n) = self.max_completion_tokens.or(self.max_tokens) {
            options.insert("num_predict".into(), json!(n));
        }
        options.insert("temperature".into(), json!(self.temperature.unwrap_or(1.0)));
        options.insert("top_p".into(), json!(self.top_p.unwrap_or(1.0)));
        if let Some(seed) = self.seed {
            options.insert("seed".into(), json!(seed));
        }
        match &self.stop {
            None | Some(Value::Null) => {}
            Some(Value::String(stop)) => {
                options.insert("stop".into(), json!([stop]));
            }
            Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
                options.insert("stop".into(), Value::Array(stops.clone()));
            }
            Some(other) => {
                return Err(HerdError::bad_request(format!(
                    "invalid stop: expected a string or a list of strings, got {other}"
                )))
            }
        }
        if let Some(penalty) = self.frequency_penalty {
            options.insert("frequency_penalty".into(), json!(penalty));
        }
        if let Some(penalty) = self.presence_penalty {
            options.insert("presence_penalty".into(), json!(penalty));
        }
        Ok(options)
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the token counts.
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Default, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    #[serde(default)]
    pub messages: Vec<ChatCompletionMessage>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming extras.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Sampling and length.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {"schema"}}`.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Tool definitions.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// `auto`, `none`, `required` or `{"type": "function", "function": {"name"}}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// How hard to reason: `none`, `minimal`, `low`, `medium`, `high`, ...
    #[serde(default)]
    pub reasoning_effort: Option<Value>,
    /// `{"effort"}`, the other spelling of `reasoning_effort`.
    #[serde(default)]
    pub reasoning: Option<Value>,
}

/// One message of a chat completion request.
#[derive(Debug, Default, Deserialize)]
pub struct ChatCompletionMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, a list of content parts, or null (an assistant's tool-call turn).
    #[serde(default)]
    pub content: Value,
    /// The reasoning of an earlier assistant turn.
    #[serde(default)]
    pub reasoning: Option<String>,
    /// The tool a `tool` message answers for.
    #[serde(default)]
    pub name: Option<String>,
    /// The calls of an assistant turn: `[{"id", "type", "function": {"name", "arguments"}}]`.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// `POST /v1/completions`.
#[derive(Debug, Default, Deserialize)]
pub struct CompletionRequest {
    /// Model name.
    pub model: String,
    /// The prompt (a string; token arrays are not supported).
    #[serde(default)]
    pub prompt: Value,
    /// Text after the insertion point.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming extras.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Sampling and length.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Default, Deserialize)]
pub struct EmbeddingRequest {
    /// Model name.
    pub model: String,
    /// A string or a list of strings.
    #[serde(default)]
    pub input: Value,
    /// `float` (default) or `base64` (little-endian f32).
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Keep only the first this many dimensions.
    #[serde(default)]
    pub dimensions: Option<i64>,
}

impl ChatCompletionRequest {
    /// The native chat request it means.
    pub fn to_native(&self) -> Result<ChatRequest, HerdError> {
        if self.messages.is_empty() {
            return Err(HerdError::bad_request("[] is too short - 'messages'"));
        }
        // Tool results name their call by id; the template wants the tool's name.
        let mut names_by_call_id = std::collections::HashMap::new();
        let mut messages = Vec::with_capacity(self.messages.len());
        for message in &self.messages {
            let mut native = native_message(message)?;
            if let Some(calls) = &message.tool_calls {
                let mut native_calls = Vec::with_capacity(calls.len());
                for call in calls {
                    let (id, name, arguments) = openai_call(call)?;
                    names_by_call_id.insert(id, name.clone());
                    native_calls.push(json!({"function": {"name": name, "arguments": arguments}}));
                }
                native.tool_calls = Some(Value::Array(native_calls));
            }
            if native.tool_name.is_none() {
                native.tool_name = message
                    .tool_call_id
                    .as_ref()
                    .and_then(|id| names_by_call_id.get(id))
                    .cloned();
            }
            messages.push(native);
        }
        Ok(ChatRequest {
            model: self.model.clone(),
            messages,
            stream: Some(self.stream),
            tools: self.tools.clone(),
            tool_choice: self.tool_choice.clone(),
            think: reasoning_effort(
                self.reasoning_effort
                    .as_ref()
                    .or_else(|| self.reasoning.as_ref().and_then(|r| r.get("effort"))),
            )?,
            format: response_format(self.response_format.as_ref())?,
            options: Some(self.sampling.options()?),
            ..Default::default()
        })
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}

impl CompletionRequest {
    /// The native generate request it means.
    pub fn to_native(&self) -> Result<GenerateRequest, HerdError> {
        let prompt = match &self.prompt {
            Value::String(prompt) => prompt.clone(),
            _ => return Err(HerdError::bad_request("invalid prompt: expected a string")),
        };
        Ok(GenerateRequest {
            model: self.model.clone(),
            prompt,
            suffix: self.suffix.clone().unwrap_or_default(),
            stream: Some(self.stream),
            options: Some(self.sampling.options()?),
            ..Default::default()
        })
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}

/// An OpenAI message as herd's: text parts joined, data-URI images as base64.
fn native_message(message: &ChatCompletionMessage) -> Result<Message, HerdError> {
    let mut content = String::new();
    let mut images = Vec::new();
    match &message.content {
        Value::Null => {}
        Value::String(text) => content.push_str(text),
        Value::Array(parts) => {
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => content.push_str(part.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some("image_url") => {
                        let url = part
                            .pointer("/image_url/url")
                            .or_else(|| part.get("image_url"))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        images.push(data_uri_image(url)?);
                    }
                    other => {
                        return Err(HerdError::bad_request(format!(
                            "invalid message content part type: {}",
                            other.unwrap_or("none")
                        )))
                    }
                }
            }
        }
        other => {
            return Err(HerdError::bad_request(format!(
                "invalid message content: expected a string or a list of parts, got {other}"
            )))
        }
    }
    let role = match message.role.as_str() {
        // OpenAI's newer name for the system role.
        "developer" => "system".to_string(),
        role => role.to_string(),
    };
    Ok(Message {
        role,
        content,
        thinking: message.reasoning.clone(),
        tool_name: message.name.clone(),
        images: (!images.is_empty()).then_some(images),
        ..Default::default()
    })
}

/// The id, name and arguments (an object) of an OpenAI tool call in a request.
fn openai_call(call: &Value) -> Result<(String, String, Value), HerdError> {
    let bad = || HerdError::bad_request(format!("invalid tool call in messages: {call}"));
    let name = call.pointer("/function/name").and_then(Value::as_str).ok_or_else(bad)?;
    let arguments = match call.pointer("/function/arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(text)) if text.trim().is_empty() => json!({}),
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|_| bad())?,
        Some(Value::Object(object)) => Value::Object(object.clone()),
        Some(_) => return Err(bad()),
    };
    let id = call.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    Ok((id, name.to_string(), arguments))
}

/// A tool call as OpenAI answers it: arguments as a JSON string.
pub fn tool_call(call: &ToolCall) -> Value {
    json!({
        "id": call.id,
        "index": call.index,
        "type": "function",
        "function": { "name": call.name, "arguments": Value::Object(call.arguments.clone()).to_string() }
    })
}

/// One piece of a foreign message's content.
pub(super) enum ContentPiece<'a> {
    /// Text, joined with the rest.
    Text(&'a str),
    /// A base64 image.
    Image(String),
}

/// A content that is a string or a list of parts (OpenAI's Responses input, Anthropic's
/// tool results) as its joined text and its images; `piece` reads one part, `what` names the
/// content in errors.
pub(super) fn text_and_images<'a>(
    content: Option<&'a Value>,
    what: &str,
    piece: impl Fn(&'a Value) -> Result<ContentPiece<'a>, String>,
) -> Result<(String, Vec<String>), String> {
    match content {
        None | Some(Value::Null) => Ok((String::new(), Vec::new())),
        Some(Value::String(text)) => Ok((text.clone(), Vec::new())),
        Some(Value::Array(parts)) => {
            let (mut text, mut images) = (String::new(), Vec::new());
            for part in parts {
                match piece(part)? {
                    ContentPiece::Text(piece) => text.push_str(piece),
                    ContentPiece::Image(image) => images.push(image),
                }
            }
            Ok((text, images))
        }
        Some(other) => Err(format!("{what} must be a string or a list of parts, got {other}")),
    }
}

/// The base64 payload of an image given as a data URI (the only kind Ollama accepts).
pub(super) fn data_uri_image(url: &str) -> Result<String, HerdError> {
    let payload = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .filter(|(media, _)| media.is_empty() || media.starts_with("image/"))
        .map(|(_, payload)| payload);
    match payload {
        Some(payload) if base64::engine::general_purpose::STANDARD.decode(payload).is_ok() => Ok(payload.to_string()),
        Some(_) => Err(HerdError::bad_request(
            "invalid image input: the data URI is not valid base64",
        )),
        None => Err(HerdError::bad_request(
            "invalid image input: only base64 data URIs (data:image/png;base64,...) are supported",
        )),
    }
}

/// A reasoning effort (`reasoning_effort`, `reasoning.effort`) as herd's `think`, mapped as
/// Ollama maps it.
pub(super) fn reasoning_effort(effort: Option<&Value>) -> Result<Option<Value>, HerdError> {
    let Some(effort) = effort.filter(|e| !e.is_null()) else {
        return Ok(None);
    };
    match effort.as_str() {
        Some("none") => Ok(Some(json!(false))),
        Some("minimal") => Ok(Some(json!("low"))),
        Some(level @ ("low" | "medium" | "high")) => Ok(Some(json!(level))),
        Some("max" | "xhigh" | "ultra") => Ok(Some(json!("high"))),
        _ => Err(HerdError::bad_request(format!(
            "invalid reasoning effort {effort}: expected none, minimal, low, medium, high, xhigh or max"
        ))),
    }
}

/// `response_format` as herd's `format`.
fn response_format(format: Option<&Value>) -> Result<Option<Value>, HerdError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!("json"))),
        Some("json_schema") => match format.pointer("/json_schema/schema") {
            Some(schema) => Ok(Some(schema.clone())),
            None => Err(HerdError::bad_request(
                "invalid response_format: json_schema needs json_schema.schema",
            )),
        },
        _ => Err(HerdError::bad_request(format!(
            "invalid response_format type: expected text, json_object or json_schema, got {format}"
        ))),
    }
}

/// Seconds since the epoch, OpenAI's `created`.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A fresh completion id with OpenAI's prefix (`chatcmpl`, `cmpl`).
pub fn completion_id(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// `usage` from the final metrics.
pub fn usage(done: &FinalMetrics) -> Value {
    let prompt = u64::from(done.runner.prompt_eval_count);
    let completion = u64::from(done.runner.eval_count);
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

/// The fixed fields of every object of one answer.
pub struct Envelope {
    /// `chatcmpl-...` or `cmpl-...`.
    pub id: String,
    /// Model name as requested.
    pub model: String,
    /// Creation time, seconds.
    pub created: u64,
}

impl Envelope {
    /// An envelope for a new answer.
    pub fn new(prefix: &str, model: &str) -> Self {
        Self {
            id: completion_id(prefix),
            model: model.to_string(),
            created: unix_now(),
        }
    }

    /// `{"id", "object", "created", "model", "system_fingerprint", "choices"}`, and `usage` when given.
    pub fn object(&self, object: &str, choices: Value, usage: Option<Value>) -> Value {
        let mut value = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_herd",
            "choices": choices,
        });
        if let Some(usage) = usage {
            value["usage"] = usage;
        }
        value
    }
}

/// `encoding_format`: whether vectors go out as base64.
pub fn wants_base64(encoding_format: Option<&str>) -> Result<bool, HerdError> {
    match encoding_format {
        None | Some("float") => Ok(false),
        Some("base64") => Ok(true),
        Some(other) => Err(HerdError::bad_request(format!(
            "invalid encoding_format: expected float or base64, got {other:?}"
        ))),
    }
}

/// One vector as OpenAI sends it: floats, or base64 of little-endian f32s.
pub fn encode_vector(vector: Vec<f32>, base64: bool) -> Value {
    if !base64 {
        return json!(vector);
    }
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// OpenAI's error type for a status code.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 | 503 => "rate_limit_error",
        _ => "api_error",
    }
}

/// `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({ "error": { "message": message, "type": error_type(status), "param": null, "code": null } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_fields_take_openai_defaults_and_names() {
        let fields: SamplingFields =
            serde_json::from_value(json!({"max_completion_tokens": 7, "max_tokens": 9, "stop": "x", "seed": 3}))
                .unwrap();
        let options = fields.options().unwrap();
        assert_eq!(options["num_predict"], 7);
        assert_eq!(options["temperature"], 1.0);
        assert_eq!(options["top_p"], 1.0);
        assert_eq!(options["stop"], json!(["x"]));
        assert_eq!(options["seed"], 3);
        let bad: SamplingFields = serde_json::from_value(json!({"stop": 5})).unwrap();
        assert!(bad.options().is_err());
    }

    #[test]
    fn messages_take_parts_and_data_uri_images() {
        let message: ChatCompletionMessage = serde_json::from_value(json!({
            "role": "developer",
            "content": [
                {"type": "text", "text": "look: "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]
        }))
        .unwrap();
        let native = native_message(&message).unwrap();
        assert_eq!(native.role, "system");
        assert_eq!(native.content, "look: ");
        assert_eq!(native.images, Some(vec!["iVBORw0KGgo=".to_string()]));
        for url in [
            "https://example.com/cat.png",
            "data:image/png;base64,@@@",
            "data:text/plain;base64,aGk=",
        ] {
            let message = ChatCompletionMessage {
                role: "user".into(),
                content: json!([{"type": "image_url", "image_url": {"url": url}}]),
                ..Default::default()
            };
            assert_eq!(native_message(&message).unwrap_err().status(), 400, "{url}");
        }
    }

    #[test]
    fn response_formats_map_to_herd_formats() {
        assert_eq!(response_format(None).unwrap(), None);
        assert_eq!(response_format(Some(&json!({"type": "text"}))).unwrap(), None);
        assert_eq!(
            response_format(Some(&json!({"type": "json_object"}))).unwrap(),
            Some(json!("json"))
        );
        let schema = json!({"type": "object"});
        assert_eq!(
            response_format(Some(
                &json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
            ))
            .unwrap(),
            Some(schema)
        );
        assert!(response_format(Some(&json!({"type": "yaml"}))).is_err());
    }

    #[test]
    fn vectors_encode_as_little_endian_base64() {
        assert_eq!(encode_vector(vec![1.0], true), json!("AACAPw=="));
        assert_eq!(encode_vector(vec![1.0], false), json!([1.0]));
        assert!(wants_base64(Some("int8")).is_err());
    }

    #[test]
    fn errors_have_openai_types() {
        assert_eq!(error_body(404, "nope")["error"]["type"], "not_found_error");
        assert_eq!(error_body(400, "bad")["error"]["message"], "bad");
        assert_eq!(error_body(500, "x")["error"]["type"], "api_error");
    }
}
