//! OpenAI's Responses API (`POST /v1/responses`), stateless: `input` (text or items) and
//! `instructions` translated into herd's chat request, and herd's answer into a response
//! object or its event stream. No domain logic lives here.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::handlers::Part;
use super::openai::{data_uri_image, reasoning_effort, text_and_images, unix_now, ContentPiece};
use super::reply::{EventEncoder, NamedEvent};
use super::types::ChatRequest;
use crate::error::HerdError;
use crate::inference::FinalMetrics;
use crate::template::Message;
use crate::tools::ToolCall;

/// `POST /v1/responses`.
#[derive(Debug, Default, Deserialize)]
pub struct ResponsesRequest {
    /// Model name.
    #[serde(default)]
    pub model: String,
    /// A string (one user message) or a list of input items.
    #[serde(default)]
    pub input: Value,
    /// A system message put first.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Sampling temperature; OpenAI's default is 1.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling; OpenAI's default is 1.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_output_tokens: Option<i64>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", "schema"}}`.
    #[serde(default)]
    pub text: Option<Value>,
    /// Function tools, flat: `{"type": "function", "name", "description", "parameters"}`.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// `auto`, `none`, `required` or `{"type": "function", "name"}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// `{"effort": "none" | "minimal" | "low" | "medium" | "high" | ...}`: whether and how hard to reason.
    #[serde(default)]
    pub reasoning: Option<Value>,
    /// A `previous_response_id`: refused, herd keeps no responses.
    #[serde(default)]
    pub previous_response_id: Option<String>,
}

impl ResponsesRequest {
    /// The native chat request it means; a malformed request is a 400 naming the problem.
    pub fn to_native(&self) -> Result<ChatRequest, HerdError> {
        if self.previous_response_id.is_some() {
            return Err(HerdError::bad_request(
                "previous_response_id is not supported: herd keeps no responses; send the whole input",
            ));
        }
        let mut messages = Vec::new();
        if let Some(instructions) = self.instructions.as_ref().filter(|i| !i.is_empty()) {
            messages.push(Message {
                role: "system".into(),
                content: instructions.clone(),
                ..Default::default()
            });
        }
        match &self.input {
            Value::String(text) if text.is_empty() => {}
            Value::String(text) => messages.push(Message {
                role: "user".into(),
                content: text.clone(),
                ..Default::default()
            }),
            Value::Array(items) => {
                let mut names_by_call_id = HashMap::new();
                for (i, item) in items.iter().enumerate() {
                    convert_item(item, &mut names_by_call_id, &mut messages)
                        .map_err(|why| HerdError::bad_request(format!("invalid input[{i}]: {why}")))?;
                }
            }
            other => {
                return Err(HerdError::bad_request(format!(
                    "invalid input: expected a string or a list of items, got {other}"
                )))
            }
        }
        if messages.is_empty() {
            return Err(HerdError::bad_request("input is required"));
        }
        let mut options = Map::new();
        options.insert("temperature".into(), json!(self.temperature.unwrap_or(1.0)));
        options.insert("top_p".into(), json!(self.top_p.unwrap_or(1.0)));
        if let Some(n) = self.max_output_tokens {
            options.insert("num_predict".into(), json!(n));
        }
        let tools = self.tools.as_ref().map(|tools| tools.iter().map(nest_tool).collect());
        Ok(ChatRequest {
            model: self.model.clone(),
            messages,
            stream: Some(self.stream),
            tools,
            tool_choice: self.tool_choice.clone(),
            think: reasoning_effort(self.reasoning.as_ref().and_then(|r| r.get("effort")))?,
            format: text_format(self.text.as_ref())?,
            options: Some(options),
            ..Default::default()
        })
    }

    /// The echoed `text` setting: what was asked, or plain text.
    fn text_setting(&self) -> Value {
        self.text
            .clone()
            .filter(|t| t.get("format").is_some())
            .unwrap_or_else(|| json!({ "format": { "type": "text" } }))
    }
}

/// A flat Responses tool as herd's nested `{"type": "function", "function": {...}}`; other
/// shapes pass through for the tool checks to name.
fn nest_tool(tool: &Value) -> Value {
    match tool.get("name") {
        Some(name) if tool.get("function").is_none() => {
            let mut function = json!({ "name": name });
            for key in ["description", "parameters"] {
                if let Some(value) = tool.get(key).filter(|v| !v.is_null()) {
                    function[key] = value.clone();
                }
            }
            json!({ "type": tool.get("type").cloned().unwrap_or(json!("function")), "function": function })
        }
        _ => tool.clone(),
    }
}

/// `text.format` as herd's `format`.
fn text_format(text: Option<&Value>) -> Result<Option<Value>, HerdError> {
    let Some(format) = text.and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!("json"))),
        Some("json_schema") => match format.get("schema") {
            Some(schema) => Ok(Some(schema.clone())),
            None => Err(HerdError::bad_request(
                "invalid text.format: json_schema needs a schema",
            )),
        },
        _ => Err(HerdError::bad_request(format!(
            "invalid text.format: expected text, json_object or json_schema, got {format}"
        ))),
    }
}

/// One input item as herd messages.
fn convert_item(
    item: &Value,
    names_by_call_id: &mut HashMap<String, String>,
    out: &mut Vec<Message>,
) -> Result<(), String> {
    let field = |name: &str| item.get(name).and_then(Value::as_str);
    let kind = match field("type") {
        Some(kind) => kind,
        None if item.get("role").is_some() => "message",
        None => return Err("an item needs \"type\"".into()),
    };
    match kind {
        "message" => {
            let role = match field("role") {
                Some("developer" | "system") => "system",
                Some(role @ ("user" | "assistant")) => role,
                other => {
                    return Err(format!(
                        "role must be user, assistant, system or developer, got {other:?}"
                    ))
                }
            };
            let (content, images) = message_content(item.get("content"))?;
            // An assistant message right after its reasoning item completes that turn.
            if let Some(last) = out.last_mut().filter(|m| {
                role == "assistant" && m.role == "assistant" && m.content.is_empty() && m.tool_calls.is_none()
            }) {
                last.content = content;
                last.images = (!images.is_empty()).then_some(images);
                return Ok(());
            }
            out.push(Message {
                role: role.into(),
                content,
                images: (!images.is_empty()).then_some(images),
                ..Default::default()
            });
        }
        "function_call" => {
            let name = field("name")
                .filter(|n| !n.is_empty())
                .ok_or("a function_call needs \"name\"")?;
            let arguments = match item.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(text)) if text.trim().is_empty() => json!({}),
                Some(Value::String(text)) => serde_json::from_str::<Value>(text)
                    .ok()
                    .filter(Value::is_object)
                    .ok_or_else(|| format!("function_call arguments are not a JSON object: {text}"))?,
                Some(other) => return Err(format!("function_call arguments must be a JSON string, got {other}")),
            };
            if let Some(call_id) = field("call_id") {
                names_by_call_id.insert(call_id.to_string(), name.to_string());
            }
            let call = json!({ "function": { "name": name, "arguments": arguments } });
            // Calls of one turn belong to one assistant message.
            match out.last_mut() {
                Some(last) if last.role == "assistant" => match &mut last.tool_calls {
                    Some(Value::Array(calls)) => calls.push(call),
                    calls => *calls = Some(json!([call])),
                },
                _ => out.push(Message {
                    role: "assistant".into(),
                    tool_calls: Some(json!([call])),
                    ..Default::default()
                }),
            }
        }
        "function_call_output" => {
            let (content, images) = match item.get("output") {
                Some(Value::String(text)) => (text.clone(), Vec::new()),
                Some(parts @ Value::Array(_)) => message_content(Some(parts))?,
                other => return Err(format!("function_call_output needs \"output\", got {other:?}")),
            };
            out.push(Message {
                role: "tool".into(),
                content,
                tool_name: field("call_id").and_then(|id| names_by_call_id.get(id)).cloned(),
                images: (!images.is_empty()).then_some(images),
                ..Default::default()
            });
        }
        // Earlier reasoning: its text, when the client kept it, goes back as the thinking of
        // the assistant turn that follows.
        "reasoning" => {
            if let Some(text) = field("encrypted_content") {
                out.push(Message {
                    role: "assistant".into(),
                    thinking: Some(text.to_string()),
                    ..Default::default()
                });
            }
        }
        other => return Err(format!("unsupported item type {other:?}")),
    }
    Ok(())
}

/// A message's `content`: a string or parts (`input_text`, `output_text`, `input_image`).
fn message_content(content: Option<&Value>) -> Result<(String, Vec<String>), String> {
    text_and_images(content, "content", |part| {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text") => Ok(ContentPiece::Text(
                part.get("text").and_then(Value::as_str).unwrap_or_default(),
            )),
            Some("input_image") => {
                let url = part.get("image_url").and_then(Value::as_str).unwrap_or_default();
                data_uri_image(url).map(ContentPiece::Image).map_err(|e| e.to_string())
            }
            other => Err(format!("unsupported content part type {other:?}")),
        }
    })
}

/// `usage` from the final metrics.
fn usage(done: &FinalMetrics) -> Value {
    let input = u64::from(done.runner.prompt_eval_count);
    let output = u64::from(done.runner.eval_count);
    json!({
        "input_tokens": input,
        "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": output,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": input + output,
    })
}

fn fresh_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn text_part(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })
}

fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({ "id": id, "type": "message", "status": status, "role": "assistant", "content": content })
}

/// A reasoning item; the text goes in `encrypted_content` too, so a client that sends the
/// item back gives the model its reasoning again.
fn reasoning_item(id: &str, text: &str) -> Value {
    json!({ "id": id, "type": "reasoning", "summary": [{ "type": "summary_text", "text": text }],
            "encrypted_content": text })
}

fn call_item(id: &str, status: &str, call: &ToolCall, arguments: &str) -> Value {
    json!({ "id": id, "type": "function_call", "status": status, "call_id": call.id,
            "name": call.name, "arguments": arguments })
}

/// The parts of one response that stay fixed while it is produced.
pub struct ResponseFrame {
    id: String,
    model: String,
    created_at: u64,
    instructions: Option<String>,
    tools: Value,
    tool_choice: Value,
    text: Value,
    temperature: f64,
    top_p: f64,
    max_output_tokens: Option<i64>,
}

impl ResponseFrame {
    /// The frame of a new response to `request`.
    pub fn new(request: &ResponsesRequest) -> Self {
        Self {
            id: fresh_id("resp"),
            model: request.model.clone(),
            created_at: unix_now(),
            instructions: request.instructions.clone(),
            tools: json!(request.tools.clone().unwrap_or_default()),
            tool_choice: request.tool_choice.clone().unwrap_or(json!("auto")),
            text: request.text_setting(),
            temperature: request.temperature.unwrap_or(1.0),
            top_p: request.top_p.unwrap_or(1.0),
            max_output_tokens: request.max_output_tokens,
        }
    }

    /// The response object: `in_progress` while streaming, then `completed`, or `incomplete`
    /// when `max_output_tokens` cut it.
    fn object(&self, output: Vec<Value>, done: Option<&FinalMetrics>) -> Value {
        let cut = done.is_some_and(|d| d.done_reason == "length");
        let status = match done {
            None => "in_progress",
            Some(_) if cut => "incomplete",
            Some(_) => "completed",
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": if cut { json!({ "reason": "max_output_tokens" }) } else { Value::Null },
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": null,
            "store": false,
            "temperature": self.temperature,
            "text": self.text,
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "top_p": self.top_p,
            "truncation": "disabled",
            "usage": done.map(usage),
            "metadata": {},
        })
    }

    /// The whole response to a finished generation.
    pub fn finished(&self, part: &Part, done: &FinalMetrics) -> Value {
        let (text, calls) = (part.text.as_str(), part.tool_calls.as_slice());
        let status = item_status(done);
        let mut output = Vec::new();
        if !part.thinking.is_empty() {
            output.push(reasoning_item(&fresh_id("rs"), &part.thinking));
        }
        if !text.is_empty() || calls.is_empty() {
            output.push(message_item(&fresh_id("msg"), status, vec![text_part(text)]));
        }
        for call in calls {
            let arguments = Value::Object(call.arguments.clone()).to_string();
            output.push(call_item(&fresh_id("fc"), "completed", call, &arguments));
        }
        self.object(output, Some(done))
    }
}

fn item_status(done: &FinalMetrics) -> &'static str {
    if done.done_reason == "length" {
        "incomplete"
    } else {
        "completed"
    }
}

/// Turns the events of one generation into the Responses stream: `response.created`,
/// `response.in_progress`, an output item per run of text (with its content part and
/// `output_text` deltas) and per tool call (with its arguments), then `response.completed`
/// (or `response.incomplete`).
pub struct ResponseStream {
    frame: ResponseFrame,
    sequence: u64,
    started: bool,
    /// Items already closed, in order.
    output: Vec<Value>,
    /// The open message item: its id and text so far.
    open_text: Option<(String, String)>,
    /// The open reasoning item: its id and text so far.
    open_reasoning: Option<(String, String)>,
}

impl ResponseStream {
    /// A stream for the response `frame` describes.
    pub fn new(frame: ResponseFrame) -> Self {
        Self {
            frame,
            sequence: 0,
            started: false,
            output: Vec::new(),
            open_text: None,
            open_reasoning: None,
        }
    }

    fn push(&mut self, events: &mut Vec<NamedEvent>, name: &'static str, mut data: Value) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        events.push((name, data));
    }

    fn start(&mut self, events: &mut Vec<NamedEvent>) {
        if !self.started {
            self.started = true;
            for name in ["response.created", "response.in_progress"] {
                let response = self.frame.object(Vec::new(), None);
                self.push(events, name, json!({ "response": response }));
            }
        }
    }

    fn close_reasoning(&mut self, events: &mut Vec<NamedEvent>) {
        let Some((id, text)) = self.open_reasoning.take() else {
            return;
        };
        let index = self.output.len();
        let done = json!({ "item_id": id, "output_index": index, "summary_index": 0, "text": text });
        self.push(events, "response.reasoning_summary_text.done", done);
        let item = reasoning_item(&id, &text);
        self.push(
            events,
            "response.output_item.done",
            json!({ "output_index": index, "item": item }),
        );
        self.output.push(item);
    }

    fn close_text(&mut self, events: &mut Vec<NamedEvent>, status: &str) {
        let Some((id, text)) = self.open_text.take() else {
            return;
        };
        let index = self.output.len();
        let at = |extra: Value| {
            let mut data = json!({ "item_id": id, "output_index": index, "content_index": 0 });
            data.as_object_mut()
                .expect("an object")
                .extend(extra.as_object().cloned().unwrap_or_default());
            data
        };
        self.push(
            events,
            "response.output_text.done",
            at(json!({ "text": text, "logprobs": [] })),
        );
        self.push(
            events,
            "response.content_part.done",
            at(json!({ "part": text_part(&text) })),
        );
        let item = message_item(&id, status, vec![text_part(&text)]);
        self.push(
            events,
            "response.output_item.done",
            json!({ "output_index": index, "item": item }),
        );
        self.output.push(item);
    }
}

impl EventEncoder for ResponseStream {
    /// Events for a piece of text.
    fn text(&mut self, text: String) -> Vec<NamedEvent> {
        let mut events = Vec::new();
        self.start(&mut events);
        if text.is_empty() {
            return events;
        }
        self.close_reasoning(&mut events);
        let index = self.output.len();
        if self.open_text.is_none() {
            let id = fresh_id("msg");
            let item = message_item(&id, "in_progress", Vec::new());
            self.push(
                &mut events,
                "response.output_item.added",
                json!({ "output_index": index, "item": item }),
            );
            self.push(
                &mut events,
                "response.content_part.added",
                json!({ "item_id": id, "output_index": index, "content_index": 0, "part": text_part("") }),
            );
            self.open_text = Some((id, String::new()));
        }
        let (id, so_far) = self.open_text.as_mut().expect("opened above");
        so_far.push_str(&text);
        let data = json!({ "item_id": id.clone(), "output_index": index, "content_index": 0,
                           "delta": text, "logprobs": [] });
        self.push(&mut events, "response.output_text.delta", data);
        events
    }

    /// Events for a piece of reasoning.
    fn thinking(&mut self, text: String) -> Vec<NamedEvent> {
        let mut events = Vec::new();
        self.start(&mut events);
        if text.is_empty() {
            return events;
        }
        self.close_text(&mut events, "completed");
        let index = self.output.len();
        if self.open_reasoning.is_none() {
            let id = fresh_id("rs");
            let item = json!({ "id": id, "type": "reasoning", "summary": [] });
            self.push(
                &mut events,
                "response.output_item.added",
                json!({ "output_index": index, "item": item }),
            );
            self.open_reasoning = Some((id, String::new()));
        }
        let (id, so_far) = self.open_reasoning.as_mut().expect("opened above");
        so_far.push_str(&text);
        let data = json!({ "item_id": id.clone(), "output_index": index, "summary_index": 0, "delta": text });
        self.push(&mut events, "response.reasoning_summary_text.delta", data);
        events
    }

    /// Events for whole tool calls: one function_call item each, its arguments in one delta.
    fn tool_calls(&mut self, calls: &[ToolCall]) -> Vec<NamedEvent> {
        let mut events = Vec::new();
        self.start(&mut events);
        self.close_reasoning(&mut events);
        self.close_text(&mut events, "completed");
        for call in calls {
            let index = self.output.len();
            let id = fresh_id("fc");
            let arguments = Value::Object(call.arguments.clone()).to_string();
            let added = call_item(&id, "in_progress", call, "");
            self.push(
                &mut events,
                "response.output_item.added",
                json!({ "output_index": index, "item": added }),
            );
            self.push(
                &mut events,
                "response.function_call_arguments.delta",
                json!({ "item_id": id, "output_index": index, "delta": arguments }),
            );
            self.push(
                &mut events,
                "response.function_call_arguments.done",
                json!({ "item_id": id, "output_index": index, "arguments": arguments }),
            );
            let item = call_item(&id, "completed", call, &arguments);
            self.push(
                &mut events,
                "response.output_item.done",
                json!({ "output_index": index, "item": item }),
            );
            self.output.push(item);
        }
        events
    }

    /// The closing events.
    fn done(&mut self, done: &FinalMetrics) -> Vec<NamedEvent> {
        let mut events = Vec::new();
        self.start(&mut events);
        self.close_reasoning(&mut events);
        self.close_text(&mut events, item_status(done));
        let response = self.frame.object(std::mem::take(&mut self.output), Some(done));
        let name = if done.done_reason == "length" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.push(&mut events, name, json!({ "response": response }));
        events
    }

    /// A failure after the stream began: `response.failed`.
    fn error(&mut self, message: &str) -> Vec<NamedEvent> {
        let mut events = Vec::new();
        self.start(&mut events);
        let mut response = self.frame.object(std::mem::take(&mut self.output), None);
        response["status"] = json!("failed");
        response["error"] = json!({ "code": "server_error", "message": message });
        self.push(&mut events, "response.failed", json!({ "response": response }));
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: Value) -> ResponsesRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn input_items_map_to_native_chat() {
        let native = request(json!({
            "model": "m", "instructions": "be brief", "max_output_tokens": 9,
            "input": [
                {"role": "user", "content": "weather?"},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
                {"type": "function_call_output", "call_id": "c2", "output": "sunny"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "and "}, {"type": "input_text", "text": "now?"}]}
            ],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "text": {"format": {"type": "json_object"}}
        }))
        .to_native()
        .unwrap();
        let roles: Vec<&str> = native.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(
            native.messages[2]
                .tool_calls
                .as_ref()
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(native.messages[3].tool_name.as_deref(), Some("get_weather"));
        assert_eq!(native.messages[4].content, "and now?");
        assert_eq!(native.tools.unwrap()[0]["function"]["name"], "get_weather");
        assert_eq!(native.format, Some(json!("json")));
        let options = native.options.unwrap();
        assert_eq!(
            (options["num_predict"].clone(), options["temperature"].clone()),
            (json!(9), json!(1.0))
        );
        let kept = request(json!({"model": "m", "input": [
            {"role": "user", "content": "hi"},
            {"type": "reasoning", "summary": [], "encrypted_content": "greet back"},
            {"role": "assistant", "content": "hello"}
        ]}))
        .to_native()
        .unwrap();
        assert_eq!(kept.messages.len(), 2);
        assert_eq!(kept.messages[1].thinking.as_deref(), Some("greet back"));
        assert_eq!(kept.messages[1].content, "hello");
        let text = request(json!({"model": "m", "input": "hi"})).to_native().unwrap();
        assert_eq!(text.messages[0].role, "user");
    }

    #[test]
    fn malformed_requests_are_400s_naming_the_problem() {
        let message = |value: Value| request(value).to_native().unwrap_err().to_string();
        assert!(message(json!({"model": "m", "input": 5})).contains("invalid input"));
        assert!(message(json!({"model": "m", "input": ""})).contains("input is required"));
        assert!(message(json!({"model": "m", "input": [{"type": "computer_call"}]})).contains("input[0]"));
        assert!(
            message(json!({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "[1]"}]}))
                .contains("JSON object")
        );
        assert!(
            message(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}))
                .contains("previous_response_id")
        );
        assert!(
            message(json!({"model": "m", "input": "hi", "text": {"format": {"type": "yaml"}}})).contains("text.format")
        );
        assert!(message(json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]}))
        .contains("data URI"));
    }
}
