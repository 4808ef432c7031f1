//! Tools: definitions checked before they reach a template, `tool_choice` (honoured, not
//! ignored), the JSON Schema a forced call is sampled under, and the parser that turns the
//! model's output into whole tool calls.

use serde_json::{json, Map, Value};

use crate::error::HerdError;
use crate::format;

/// A tool definition that passed the checks: its name and the schema of its arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    /// `function.name`.
    pub name: String,
    /// `function.parameters` (an object schema; `{}` when absent).
    pub parameters: Value,
}

/// Checks `tools` (`[{"type": "function", "function": {"name", "description", "parameters"}}]`).
pub fn parse_tools(tools: &[Value]) -> Result<Vec<ToolSpec>, HerdError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let bad = |why: &str| HerdError::bad_request(format!("invalid tool definition at tools[{i}]: {why}"));
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or("function");
            if kind != "function" {
                return Err(bad(&format!("type must be \"function\", got {kind:?}")));
            }
            let function = tool
                .get("function")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("\"function\" must be an object"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| bad("function.name must be a non-empty string"))?;
            let parameters = match function.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(Value::Object(schema)) => {
                    format::parse_format(Some(&Value::Object(schema.clone())))
                        .map_err(|e| bad(&format!("function.parameters: {e}")))?;
                    Value::Object(schema.clone())
                }
                Some(other) => {
                    return Err(bad(&format!(
                        "function.parameters must be a JSON Schema object, got {other}"
                    )))
                }
            };
            Ok(ToolSpec {
                name: name.to_string(),
                parameters,
            })
        })
        .collect()
}

/// `tool_choice`, as OpenAI defines it (herd's native API takes the same values).
#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    /// The model decides (the default).
    Auto,
    /// No tools: they are not rendered and no call is parsed.
    None,
    /// The answer is a call to one of the tools.
    Required,
    /// The answer is a call to this tool.
    Named(String),
}

impl ToolChoice {
    /// Parses `"auto" | "none" | "required" | {"type": "function", "function": {"name"}}`
    /// (Anthropic's `{"type": "auto" | "any" | "none" | "tool", "name"}` too).
    pub fn parse(value: Option<&Value>, tools: &[ToolSpec]) -> Result<Self, HerdError> {
        let choice = match value {
            None | Some(Value::Null) => Self::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Self::Auto,
                "none" => Self::None,
                "required" | "any" => Self::Required,
                other => {
                    return Err(HerdError::bad_request(format!(
                        "invalid tool_choice {other:?}: expected auto, none, required or a function"
                    )))
                }
            },
            Some(Value::Object(object)) => {
                let name = object
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .or_else(|| object.get("name"))
                    .and_then(Value::as_str);
                match (object.get("type").and_then(Value::as_str), name) {
                    (Some("function" | "tool"), Some(name)) => Self::Named(name.to_string()),
                    (Some(kind), None) => return Self::parse(Some(&Value::String(kind.to_string())), tools),
                    _ => return Err(HerdError::bad_request(format!("invalid tool_choice {value:?}"))),
                }
            }
            Some(other) => return Err(HerdError::bad_request(format!("invalid tool_choice {other}"))),
        };
        match &choice {
            Self::Named(name) if !tools.iter().any(|t| &t.name == name) => Err(HerdError::bad_request(format!(
                "tool_choice names {name:?}, which is not among the tools"
            ))),
            Self::Required | Self::Named(_) if tools.is_empty() => Err(HerdError::bad_request(
                "tool_choice requires a call, but no tools were given",
            )),
            _ => Ok(choice),
        }
    }

    /// The JSON Schema of a call this choice forces, `None` when it forces none: an object
    /// with the tool's `name` and `arguments` valid for its parameters.
    pub fn forced_call_schema(&self, tools: &[ToolSpec]) -> Option<Value> {
        let call = |tool: &ToolSpec| {
            json!({
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false
            })
        };
        match self {
            Self::Auto | Self::None => None,
            Self::Named(name) => tools.iter().find(|t| &t.name == name).map(call),
            Self::Required if tools.len() == 1 => Some(call(&tools[0])),
            Self::Required => Some(json!({ "anyOf": tools.iter().map(call).collect::<Vec<_>>() })),
        }
    }
}

/// The closing tag of an opening tag like `<tool_call>`; none for other shapes.
pub fn closing_tag(tag: &str) -> String {
    match tag.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
        Some(name) if !name.is_empty() && !name.contains(['<', '>', '/']) => format!("</{name}>"),
        _ => String::new(),
    }
}

/// A tool call the model made, in Ollama's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// `call_<random>`.
    pub id: String,
    /// Position among this answer's calls.
    pub index: usize,
    /// The tool's name.
    pub name: String,
    /// Its arguments (an object).
    pub arguments: Map<String, Value>,
}

impl ToolCall {
    /// `{"id", "function": {"index", "name", "arguments"}}`.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "function": { "index": self.index, "name": self.name, "arguments": self.arguments }
        })
    }
}

/// Splits streamed output into text and whole tool calls. Text that could start a call (the
/// template's tag, or `{`/`[` when calls are bare JSON) is held back until it either completes
/// a call or turns out to be prose.
pub struct ToolCallParser {
    tag: String,
    closing: String,
    names: Vec<String>,
    buffer: String,
    /// Inside a call (the tag was seen).
    parsing: bool,
    /// Output turned out to be prose: stop looking.
    done: bool,
    /// A call just ended: its closing tag may still be coming.
    after_call: bool,
    calls: usize,
}

/// What one piece of output held.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Text for the user.
    pub content: String,
    /// Calls completed by this piece.
    pub calls: Vec<ToolCall>,
}

impl ToolCallParser {
    /// A parser for calls to `tools`, introduced by `tag` (empty: bare JSON objects or lists).
    pub fn new(tag: &str, tools: &[ToolSpec]) -> Self {
        Self {
            tag: tag.to_string(),
            closing: closing_tag(tag),
            names: tools.iter().map(|t| t.name.clone()).collect(),
            buffer: String::new(),
            parsing: false,
            done: false,
            after_call: false,
            calls: 0,
        }
    }

    /// Takes the next piece of output.
    pub fn push(&mut self, piece: &str) -> Parsed {
        if self.done {
            return Parsed {
                content: piece.to_string(),
                calls: Vec::new(),
            };
        }
        self.buffer.push_str(piece);
        let mut parsed = Parsed::default();
        loop {
            if self.after_call {
                let rest = self.buffer.trim_start();
                if rest.is_empty() || (rest.len() < self.closing.len() && self.closing.starts_with(rest)) {
                    return parsed;
                }
                let rest = rest.strip_prefix(self.closing.as_str()).unwrap_or(rest);
                self.buffer = rest.trim_start().to_string();
                self.after_call = false;
                if self.buffer.is_empty() {
                    return parsed;
                }
            }
            if !self.parsing {
                match self.find_start() {
                    Start::At(i) => {
                        // Whitespace before a call is not worth a text chunk.
                        if !self.buffer[..i].trim().is_empty() {
                            parsed.content.push_str(&self.buffer[..i]);
                        }
                        self.buffer.drain(..i + self.tag.len());
                        self.parsing = true;
                    }
                    Start::Maybe(i) => {
                        parsed.content.push_str(&self.buffer[..i]);
                        self.buffer.drain(..i);
                        return parsed;
                    }
                    Start::None => {
                        // Bare JSON calls come first or not at all.
                        self.done = self.tag.is_empty();
                        parsed.content.push_str(&std::mem::take(&mut self.buffer));
                        return parsed;
                    }
                }
            }
            match self.take_call() {
                Taken::Calls(calls) => {
                    parsed.calls.extend(calls);
                    self.parsing = false;
                    self.after_call = true;
                }
                Taken::Incomplete => return parsed,
                Taken::Prose => {
                    // Not a call after all: give back what was held, tag included.
                    self.done = true;
                    self.parsing = false;
                    let held = std::mem::take(&mut self.buffer);
                    parsed.content.push_str(&self.tag);
                    parsed.content.push_str(&held);
                    return parsed;
                }
            }
        }
    }

    /// What is still held at the end of the output, as text.
    pub fn finish(&mut self) -> String {
        if self.after_call {
            // Whitespace or a partial closing tag after the last call is not text.
            let rest = self.buffer.trim();
            if rest.is_empty() || self.closing.starts_with(rest) {
                self.buffer.clear();
            }
        }
        let mut rest = String::new();
        if self.parsing {
            rest.push_str(&self.tag);
        }
        rest.push_str(&std::mem::take(&mut self.buffer));
        rest
    }

    fn find_start(&self) -> Start {
        if self.tag.is_empty() {
            // Bare JSON: a call can only be the first thing said.
            let start = self.buffer.len() - self.buffer.trim_start().len();
            return match self.buffer[start..].chars().next() {
                None if self.calls == 0 => Start::Maybe(start),
                Some('{' | '[') => Start::At(start),
                _ => Start::None,
            };
        }
        if let Some(i) = self.buffer.find(&self.tag) {
            return Start::At(i);
        }
        // The end of the buffer may be the start of the tag.
        for len in (1..self.tag.len().min(self.buffer.len() + 1)).rev() {
            if self.tag.is_char_boundary(len) && self.buffer.ends_with(&self.tag[..len]) {
                return Start::Maybe(self.buffer.len() - len);
            }
        }
        Start::None
    }

    /// Parses the first JSON value at the start of the buffer into calls.
    fn take_call(&mut self) -> Taken {
        let text = self.buffer.trim_start();
        let skipped = self.buffer.len() - text.len();
        let Some(end) = json_value_end(text) else {
            return if text.is_empty() || text.starts_with(['{', '[']) {
                Taken::Incomplete
            } else {
                Taken::Prose
            };
        };
        let Ok(value) = serde_json::from_str::<Value>(&text[..end]) else {
            return Taken::Prose;
        };
        let items = match value {
            Value::Array(items) => items,
            single => vec![single],
        };
        let mut calls = Vec::new();
        for item in &items {
            match self.call_from(item) {
                Some(call) => calls.push(call),
                None => return Taken::Prose,
            }
        }
        if calls.is_empty() {
            return Taken::Prose;
        }
        self.buffer.drain(..skipped + end);
        Taken::Calls(calls)
    }

    fn call_from(&mut self, item: &Value) -> Option<ToolCall> {
        let name = item.get("name")?.as_str()?;
        if !self.names.iter().any(|n| n == name) {
            return None;
        }
        let arguments = match item.get("arguments").or_else(|| item.get("parameters")) {
            None => Map::new(),
            Some(Value::Object(arguments)) => arguments.clone(),
            // Some models write the arguments as a JSON string.
            Some(Value::String(text)) => serde_json::from_str::<Map<String, Value>>(text).ok()?,
            Some(_) => return None,
        };
        let call = ToolCall {
            id: format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            index: self.calls,
            name: name.to_string(),
            arguments,
        };
        self.calls += 1;
        Some(call)
    }
}

enum Start {
    /// A call starts here.
    At(usize),
    /// What follows here may start a call; wait for more.
    Maybe(usize),
    /// Nothing here starts a call.
    None,
}

enum Taken {
    Calls(Vec<ToolCall>),
    Incomplete,
    Prose,
}

/// Where the JSON object or list at the start of `text` ends (strings and escapes respected);
/// `None` when it is not complete yet or does not start with one.
fn json_value_end(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if i == 0 && !matches!(c, '{' | '[') {
            return None;
        }
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Vec<ToolSpec> {
        parse_tools(&[
            json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
        ])
        .unwrap()
    }

    fn run(parser: &mut ToolCallParser, pieces: &[&str]) -> (String, Vec<ToolCall>) {
        let mut content = String::new();
        let mut calls = Vec::new();
        for piece in pieces {
            let parsed = parser.push(piece);
            content.push_str(&parsed.content);
            calls.extend(parsed.calls);
        }
        content.push_str(&parser.finish());
        (content, calls)
    }

    #[test]
    fn tagged_calls_split_across_pieces_become_whole_calls() {
        let mut parser = ToolCallParser::new("<tool_call>", &weather());
        let (content, calls) = run(
            &mut parser,
            &[
                "Let me check. <tool",
                "_call>\n{\"name\": \"get_weather\", ",
                "\"arguments\": {\"city\": \"Pa",
                "ris\"}}\n</tool_call>",
            ],
        );
        assert_eq!(content, "Let me check. ");
        assert_eq!(calls.len(), 1);
        let mut parser = ToolCallParser::new("<tool_call>", &weather());
        let (content, later) = run(
            &mut parser,
            &[
                "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}",
                "\n</tool",
                "_call>",
                " Done.",
            ],
        );
        assert_eq!((content.as_str(), later.len()), (" Done.", 1));
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments["city"], "Paris");
        assert!(calls[0].id.starts_with("call_"));
    }

    #[test]
    fn bare_json_calls_lists_and_parameters_are_understood() {
        let mut parser = ToolCallParser::new("", &weather());
        let (content, calls) = run(
            &mut parser,
            &[
                "  [{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}, ",
                "{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Rome\\\"}\"}]",
            ],
        );
        assert_eq!(content, "");
        assert_eq!(calls.iter().map(|c| c.index).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(calls[1].arguments["city"], "Rome");
    }

    #[test]
    fn prose_and_json_that_is_not_a_call_stay_text() {
        let mut parser = ToolCallParser::new("", &weather());
        assert_eq!(
            run(&mut parser, &["The weather ", "is {fine}."]).0,
            "The weather is {fine}."
        );
        let mut parser = ToolCallParser::new("", &weather());
        let (content, calls) = run(&mut parser, &["{\"city\": ", "\"Paris\"} is nice"]);
        assert_eq!(content, "{\"city\": \"Paris\"} is nice");
        assert!(calls.is_empty());
        let mut parser = ToolCallParser::new("<tool_call>", &weather());
        let (content, calls) = run(&mut parser, &["<tool_call>{\"name\": \"launch_missiles\"}</tool_call>"]);
        assert!(calls.is_empty());
        assert_eq!(content, "<tool_call>{\"name\": \"launch_missiles\"}</tool_call>");
        let mut parser = ToolCallParser::new("<tool_call>", &weather());
        assert_eq!(run(&mut parser, &["a <tool", " b"]).0, "a <tool b");
        let mut parser = ToolCallParser::new("<tool_call>", &weather());
        assert_eq!(
            run(&mut parser, &["<tool_call>{\"name\": \"get_"]).0,
            "<tool_call>{\"name\": \"get_"
        );
    }

    #[test]
    fn malformed_tool_definitions_are_refused() {
        let cases = [
            json!({"type": "function"}),
            json!({"type": "retrieval", "function": {"name": "f"}}),
            json!({"function": {"name": ""}}),
            json!({"function": {"name": "f", "parameters": "object"}}),
            json!({"function": {"name": "f", "parameters": {"type": "thing"}}}),
        ];
        for tool in cases {
            let error = parse_tools(std::slice::from_ref(&tool)).unwrap_err();
            assert_eq!(error.status(), 400, "{tool}");
            assert!(
                error.to_string().starts_with("invalid tool definition at tools[0]: "),
                "{error}"
            );
        }
    }

    #[test]
    fn tool_choice_forms_and_forced_schemas() {
        let tools = weather();
        assert_eq!(ToolChoice::parse(None, &tools).unwrap(), ToolChoice::Auto);
        assert_eq!(
            ToolChoice::parse(Some(&json!("none")), &tools).unwrap(),
            ToolChoice::None
        );
        assert_eq!(
            ToolChoice::parse(Some(&json!({"type": "any"})), &tools).unwrap(),
            ToolChoice::Required
        );
        let named = ToolChoice::parse(
            Some(&json!({"type": "function", "function": {"name": "get_weather"}})),
            &tools,
        )
        .unwrap();
        assert_eq!(named, ToolChoice::Named("get_weather".into()));
        let schema = named.forced_call_schema(&tools).unwrap();
        assert_eq!(schema["properties"]["name"]["const"], "get_weather");
        assert_eq!(schema["properties"]["arguments"]["required"], json!(["city"]));
        assert!(ToolChoice::parse(
            Some(&json!({"type": "function", "function": {"name": "other"}})),
            &tools
        )
        .is_err());
        assert!(ToolChoice::parse(Some(&json!("sometimes")), &tools).is_err());
        assert!(ToolChoice::parse(Some(&json!("required")), &[]).is_err());
        assert_eq!(closing_tag("<tool_call>"), "</tool_call>");
        assert_eq!(closing_tag("[TOOL_CALLS]"), "");
    }
}
