//! The Anthropic-compatible layer (`POST /v1/messages`): the Messages API's request shape
//! translated into herd's chat request, and herd's answer into a message, its streamed
//! events and Anthropic's errors. No domain logic lives here.

use std::collections::HashMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::handlers::Part;
use super::openai::{text_and_images, ContentPiece};
use super::reply::{EventEncoder, NamedEvent};
use super::types::ChatRequest;
use crate::error::HerdError;
use crate::inference::FinalMetrics;
use crate::template::Message;
use crate::tools::ToolCall;

/// `POST /v1/messages`.
#[derive(Debug, Default, Deserialize)]
pub struct MessagesRequest {
    /// Model name.
    #[serde(default)]
    pub model: String,
    /// Most tokens to generate (required, positive).
    #[serde(default)]
    pub max_tokens: i64,
    /// The conversation: user and assistant turns.
    #[serde(default)]
    pub messages: Vec<MessageParam>,
    /// A string or a list of text blocks.
    #[serde(default)]
    pub system: Option<Value>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Strings that end the answer.
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    /// `[{"name", "description", "input_schema"}]`.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// `{"type": "auto" | "any" | "tool" | "none", "name"}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// `{"type": "enabled" | "disabled", "budget_tokens"}`: whether to reason first.
    #[serde(default)]
    pub thinking: Option<Value>,
}

/// One turn of the conversation.
#[derive(Debug, Default, Deserialize)]
pub struct MessageParam {
    /// `user` or `assistant`.
    pub role: String,
    /// A string or a list of content blocks.
    #[serde(default)]
    pub content: Value,
}

impl MessagesRequest {
    /// The native chat request it means; a malformed request is a 400 naming the problem.
    pub fn to_native(&self) -> Result<ChatRequest, HerdError> {
        if self.model.is_empty() {
            return Err(HerdError::bad_request("model is required"));
        }
        if self.max_tokens <= 0 {
            return Err(HerdError::bad_request("max_tokens is required and must be positive"));
        }
        if self.messages.is_empty() {
            return Err(HerdError::bad_request("messages is required"));
        }
        let mut messages = Vec::new();
        if let Some(system) = system_text(self.system.as_ref())? {
            messages.push(Message {
                role: "system".into(),
                content: system,
                ..Default::default()
            });
        }
        // tool_result blocks name their call by id; the template wants the tool's name.
        let mut names_by_id = HashMap::new();
        for (i, message) in self.messages.iter().enumerate() {
            convert_message(message, &mut names_by_id, &mut messages)
                .map_err(|why| HerdError::bad_request(format!("invalid messages[{i}]: {why}")))?;
        }
        let tools = self
            .tools
            .as_ref()
            .map(|tools| tools.iter().enumerate().map(|(i, t)| convert_tool(i, t)).collect())
            .transpose()?;
        let mut options = Map::new();
        options.insert("num_predict".into(), json!(self.max_tokens));
        if let Some(t) = self.temperature {
            options.insert("temperature".into(), json!(t));
        }
        if let Some(p) = self.top_p {
            options.insert("top_p".into(), json!(p));
        }
        if let Some(k) = self.top_k {
            options.insert("top_k".into(), json!(k));
        }
        if let Some(stops) = self.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
            options.insert("stop".into(), json!(stops));
        }
        let think = match self
            .thinking
            .as_ref()
            .and_then(|t| t.get("type"))
            .and_then(Value::as_str)
        {
            Some("enabled") => Some(json!(true)),
            Some("disabled") => Some(json!(false)),
            _ => None,
        };
        Ok(ChatRequest {
            model: self.model.clone(),
            messages,
            stream: Some(self.stream),
            tools,
            tool_choice: self.tool_choice.clone(),
            think,
            // Agents ask every model to think; one that cannot answers without, as in Ollama.
            relax_thinking: true,
            options: Some(options),
            ..Default::default()
        })
    }
}

/// `system` as one text: a string, or the text blocks of a list joined.
fn system_text(system: Option<&Value>) -> Result<Option<String>, HerdError> {
    match system {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok((!text.is_empty()).then(|| text.clone())),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for block in blocks {
                match (
                    block.get("type").and_then(Value::as_str),
                    block.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(part)) => text.push_str(part),
                    _ => {
                        return Err(HerdError::bad_request(format!(
                            "invalid system: expected text blocks, got {block}"
                        )))
                    }
                }
            }
            Ok((!text.is_empty()).then_some(text))
        }
        Some(other) => Err(HerdError::bad_request(format!(
            "invalid system: expected a string or a list of text blocks, got {other}"
        ))),
    }
}

/// One Anthropic turn as herd messages: tool results become `tool` messages (before the
/// user's own text, where Anthropic puts them), tool_use blocks the assistant's calls.
fn convert_message(
    message: &MessageParam,
    names_by_id: &mut HashMap<String, String>,
    out: &mut Vec<Message>,
) -> Result<(), String> {
    let role = match message.role.as_str() {
        "user" | "assistant" => message.role.clone(),
        other => return Err(format!("role must be \"user\" or \"assistant\", got {other:?}")),
    };
    let blocks = match &message.content {
        Value::String(text) => vec![json!({"type": "text", "text": text})],
        Value::Array(blocks) => blocks.clone(),
        other => return Err(format!("content must be a string or a list of blocks, got {other}")),
    };
    let mut text = String::new();
    let mut thinking = None;
    let mut images = Vec::new();
    let mut calls = Vec::new();
    for block in &blocks {
        let field = |name: &str| block.get(name).and_then(Value::as_str);
        match field("type") {
            Some("text") => text.push_str(field("text").ok_or("a text block needs \"text\"")?),
            Some("thinking") => thinking = field("thinking").map(str::to_string),
            Some("image") => images.push(image_data(block.get("source"))?),
            Some("tool_use") => {
                let id = field("id")
                    .filter(|id| !id.is_empty())
                    .ok_or("a tool_use block needs \"id\"")?;
                let name = field("name")
                    .filter(|name| !name.is_empty())
                    .ok_or("a tool_use block needs \"name\"")?;
                let input = match block.get("input") {
                    None | Some(Value::Null) => json!({}),
                    Some(Value::Object(input)) => Value::Object(input.clone()),
                    Some(other) => return Err(format!("a tool_use input must be an object, got {other}")),
                };
                names_by_id.insert(id.to_string(), name.to_string());
                calls.push(json!({"function": {"name": name, "arguments": input}}));
            }
            Some("tool_result") => {
                let id = field("tool_use_id").unwrap_or_default();
                let (content, result_images) = tool_result_content(block.get("content"))?;
                out.push(Message {
                    role: "tool".into(),
                    content,
                    tool_name: names_by_id.get(id).cloned(),
                    images: (!result_images.is_empty()).then_some(result_images),
                    ..Default::default()
                });
            }
            // Redacted reasoning cannot be rendered; it is dropped as Ollama drops it.
            Some("redacted_thinking") => {}
            Some(other) => return Err(format!("unsupported content block type {other:?}")),
            None => return Err(format!("a content block needs \"type\": {block}")),
        }
    }
    if !text.is_empty() || thinking.is_some() || !images.is_empty() || !calls.is_empty() {
        out.push(Message {
            role,
            content: text,
            thinking,
            tool_calls: (!calls.is_empty()).then_some(Value::Array(calls)),
            images: (!images.is_empty()).then_some(images),
            ..Default::default()
        });
    }
    Ok(())
}

/// The text and images of a tool_result's `content` (a string or blocks).
fn tool_result_content(content: Option<&Value>) -> Result<(String, Vec<String>), String> {
    text_and_images(content, "tool_result content", |block| {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => Ok(ContentPiece::Text(
                block.get("text").and_then(Value::as_str).unwrap_or_default(),
            )),
            Some("image") => image_data(block.get("source")).map(ContentPiece::Image),
            _ => Err(format!("unsupported tool_result block {block}")),
        }
    })
}

/// The base64 data of an image block's `source` (only base64 sources are supported).
fn image_data(source: Option<&Value>) -> Result<String, String> {
    let source = source.ok_or("an image block needs \"source\"")?;
    if source.get("type").and_then(Value::as_str) != Some("base64") {
        return Err("only base64 image sources are supported".into());
    }
    let data = source.get("data").and_then(Value::as_str).unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("invalid base64 image data: {e}"))?;
    Ok(data.to_string())
}

/// An Anthropic tool as herd's `{"type": "function", "function": {...}}`.
fn convert_tool(i: usize, tool: &Value) -> Result<Value, HerdError> {
    let bad = |why: &str| HerdError::bad_request(format!("invalid tool definition at tools[{i}]: {why}"));
    if let Some(kind) = tool.get("type").and_then(Value::as_str) {
        if kind != "custom" {
            return Err(bad(&format!("only custom tools are supported, got type {kind:?}")));
        }
    }
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("a tool needs a name"))?;
    let mut function = json!({ "name": name });
    if let Some(description) = tool.get("description") {
        function["description"] = description.clone();
    }
    function["parameters"] = tool
        .get("input_schema")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    Ok(json!({ "type": "function", "function": function }))
}

/// Anthropic's `stop_reason` for herd's done reason.
pub fn stop_reason(done: &FinalMetrics, called: bool) -> &'static str {
    if called {
        "tool_use"
    } else if done.done_reason == "length" {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// `usage` from the final metrics.
pub fn usage(done: &FinalMetrics) -> Value {
    json!({ "input_tokens": done.runner.prompt_eval_count, "output_tokens": done.runner.eval_count })
}

/// A tool_use content block.
pub fn tool_use(call: &ToolCall) -> Value {
    json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments })
}

/// A whole message: `{"id", "type": "message", "role", "model", "content", "stop_reason", "usage"}`.
pub fn message(id: &str, model: &str, part: Part, done: &FinalMetrics) -> Value {
    let mut content = Vec::new();
    if !part.thinking.is_empty() {
        content.push(json!({ "type": "thinking", "thinking": part.thinking, "signature": "" }));
    }
    if !part.text.is_empty() {
        content.push(json!({ "type": "text", "text": part.text }));
    }
    content.extend(part.tool_calls.iter().map(tool_use));
    let calls = &part.tool_calls;
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(done, !calls.is_empty()),
        "stop_sequence": null,
        "usage": usage(done),
    })
}

/// A fresh message id.
pub fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// Anthropic's error type for a status code.
fn error_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type": "error", "error": {"type", "message"}, "request_id"}`.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({
        "type": "error",
        "error": { "type": error_type(status), "message": message },
        "request_id": format!("req_{}", uuid::Uuid::new_v4().simple()),
    })
}

/// Turns the events of one generation into the Messages API's stream: `message_start`,
/// one content block per run of text and per tool call (`content_block_start`, deltas,
/// `content_block_stop`), then `message_delta` with the stop reason and `message_stop`.
pub struct StreamEncoder {
    id: String,
    model: String,
    started: bool,
    /// Index of the next block.
    next_index: usize,
    /// The open text or thinking block: `"text"` or `"thinking"`.
    open: Option<&'static str>,
    called: bool,
}

impl StreamEncoder {
    /// An encoder for the message `id` of `model`.
    pub fn new(id: String, model: String) -> Self {
        Self {
            id,
            model,
            started: false,
            next_index: 0,
            open: None,
            called: false,
        }
    }

    fn start(&mut self, events: &mut Vec<NamedEvent>) {
        if !self.started {
            self.started = true;
            let message = json!({
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": 0, "output_tokens": 0 },
            });
            events.push(("message_start", json!({ "type": "message_start", "message": message })));
        }
    }

    fn close_block(&mut self, events: &mut Vec<NamedEvent>) {
        if self.open.take().is_some() {
            events.push(block_stop(self.next_index));
            self.next_index += 1;
        }
    }

    /// Events for a piece of a text (`kind` "text") or thinking block.
    fn block_delta(&mut self, kind: &'static str, piece: String) -> Vec<NamedEvent> {
        let mut events = Vec::new();
        self.start(&mut events);
        if piece.is_empty() {
            return events;
        }
        if self.open != Some(kind) {
            self.close_block(&mut events);
            self.open = Some(kind);
            let block = match kind {
                "thinking" => json!({ "type": "thinking", "thinking": "", "signature": "" }),
                _ => json!({ "type": "text", "text": "" }),
            };
            events.push((
                "content_block_start",
                json!({ "type": "content_block_start", "index": self.next_index, "content_block": block }),
            ));
        }
        let delta = match kind {
            "thinking" => json!({ "type": "thinking_delta", "thinking": piece }),
            _ => json!({ "type": "text_delta", "text": piece }),
        };
        events.push((
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": self.next_index, "delta": delta }),
        ));
        events
    }
}

impl EventEncoder for StreamEncoder {
    /// Events for a piece of text.
    fn text(&mut self, text: String) -> Vec<NamedEvent> {
        self.block_delta("text", text)
    }

    /// Events for a piece of reasoning.
    fn thinking(&mut self, text: String) -> Vec<NamedEvent> {
        self.block_delta("thinking", text)
    }

    /// Events for whole tool calls: one tool_use block each, its input in one delta.
    fn tool_calls(&mut self, calls: &[ToolCall]) -> Vec<NamedEvent> {
        let mut events = Vec::new();
        self.start(&mut events);
        self.close_block(&mut events);
        for call in calls {
            self.called = true;
            let index = self.next_index;
            let mut block = tool_use(call);
            block["input"] = json!({});
            events.push((
                "content_block_start",
                json!({ "type": "content_block_start", "index": index, "content_block": block }),
            ));
            events.push((
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": index, "delta": {
                    "type": "input_json_delta",
                    "partial_json": Value::Object(call.arguments.clone()).to_string(),
                } }),
            ));
            events.push(block_stop(index));
            self.next_index += 1;
        }
        events
    }

    /// The closing events.
    fn done(&mut self, done: &FinalMetrics) -> Vec<NamedEvent> {
        let mut events = Vec::new();
        self.start(&mut events);
        self.close_block(&mut events);
        events.push((
            "message_delta",
            json!({ "type": "message_delta",
                    "delta": { "stop_reason": stop_reason(done, self.called), "stop_sequence": null },
                    "usage": usage(done) }),
        ));
        events.push(("message_stop", json!({ "type": "message_stop" })));
        events
    }

    /// An error after the stream began.
    fn error(&mut self, message: &str) -> Vec<NamedEvent> {
        let mut events = Vec::new();
        self.start(&mut events);
        let mut body = error_body(500, message);
        if let Some(object) = body.as_object_mut() {
            object.remove("request_id");
        }
        events.push(("error", body));
        events
    }
}

fn block_stop(index: usize) -> NamedEvent {
    (
        "content_block_stop",
        json!({ "type": "content_block_stop", "index": index }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: Value) -> MessagesRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn requests_map_to_native_chat() {
        let native = request(json!({
            "model": "m", "max_tokens": 16, "system": [{"type": "text", "text": "be brief"}],
            "stop_sequences": ["END"], "top_k": 5,
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "checking"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "thanks"}
                ]}
            ],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any"}
        }))
        .to_native()
        .unwrap();
        let roles: Vec<&str> = native.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(native.messages[0].content, "be brief");
        assert_eq!(
            native.messages[2].tool_calls,
            Some(json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]))
        );
        assert_eq!(native.messages[3].content, "sunny");
        assert_eq!(native.messages[3].tool_name.as_deref(), Some("get_weather"));
        let options = native.options.unwrap();
        assert_eq!(options["num_predict"], 16);
        assert_eq!(options["stop"], json!(["END"]));
        assert_eq!(options["top_k"], 5);
        assert_eq!(native.tools.unwrap()[0]["function"]["name"], "get_weather");
        assert_eq!(native.tool_choice, Some(json!({"type": "any"})));
    }

    #[test]
    fn malformed_requests_are_400s_naming_the_problem() {
        let base = |extra: Value| {
            let mut r = json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
            r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            request(r).to_native()
        };
        let message = |extra: Value| base(extra).unwrap_err().to_string();
        assert!(message(json!({"max_tokens": 0})).contains("max_tokens"));
        assert!(message(json!({"model": ""})).contains("model is required"));
        assert!(message(json!({"messages": []})).contains("messages is required"));
        assert!(message(json!({"messages": [{"role": "bot", "content": "x"}]})).contains("messages[0]"));
        assert!(message(json!({"messages": [{"role": "user", "content": [{"type": "video"}]}]})).contains("video"));
        assert!(message(json!({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "@@"}}]}]}))
        .contains("base64"));
        assert!(message(json!({"tools": [{"description": "no name"}]})).contains("tools[0]"));
        assert!(message(json!({"system": 5})).contains("system"));
        assert!(base(json!({})).is_ok());
    }

    #[test]
    fn errors_have_anthropic_types() {
        let body = error_body(404, "model not found");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "not_found_error");
        assert!(body["request_id"].as_str().unwrap().starts_with("req_"));
        assert_eq!(error_body(503, "busy")["error"]["type"], "overloaded_error");
    }
}
