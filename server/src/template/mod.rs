//! Ollama prompt templates: a port of Ollama's `template/template.go` on top
//! of our own Go `text/template` renderer.

pub mod gotmpl;

use std::rc::Rc;

use serde_json::Value as Json;

pub use gotmpl::TemplateError;
use gotmpl::{to_json, Template, Typed, Value};

/// Ollama's built-in Gemma 3 template (`template/gemma3-instruct.gotmpl`).
#[cfg(test)]
pub const GEMMA3_TEMPLATE: &str = include_str!("gemma3-instruct.gotmpl");

/// Ollama's `DefaultTemplate`, used when a model has no template.
#[cfg(test)]
pub fn default_template() -> &'static str {
    "{{ .Prompt }}"
}

/// One chat message as templates see it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Message text; clients leave it out of assistant tool-call turns.
    #[serde(default)]
    pub content: String,
    /// Reasoning text of an assistant turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Tool calls in Ollama's API shape: `[{"function": {"name", "arguments"}}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Json>,
    /// Name of the tool whose result a `tool` message carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// Base64 images attached to the message; refused until vision support lands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
}

/// What a template renders: Ollama's `template.Values`.
#[derive(Clone, Debug, Default)]
pub struct Values {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools in Ollama's API shape: `[{"type", "function": {"name", ...}}]`.
    pub tools: Option<Json>,
    /// Raw prompt (generate endpoint with a suffix).
    pub prompt: String,
    /// Fill-in-the-middle suffix.
    pub suffix: String,
    /// The request's `think` flag; `None` when not set.
    pub think: Option<bool>,
    /// Thinking level (`high`, `medium`, `low`) when one was requested.
    pub think_level: Option<String>,
    /// Render a `.Messages` template through the legacy Prompt/Response path.
    pub force_legacy: bool,
}

/// A parsed Ollama prompt template.
#[derive(Clone, Debug)]
pub struct PromptTemplate {
    template: Template,
    vars: Vec<String>,
}

impl PromptTemplate {
    /// Parses a template; like Ollama, appends `{{ .Response }}` when the
    /// template uses neither `.Messages` nor `.Response`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut template = Template::parse(text)?;
        let vars = template.field_names();
        if !vars.iter().any(|v| v == "messages" || v == "response") {
            template.append_response();
        }
        Ok(PromptTemplate { template, vars })
    }

    /// Whether the template references a field or variable (case-insensitive),
    /// e.g. `tools`, `messages`, `suffix`.
    pub fn uses(&self, field: &str) -> bool {
        let field = field.to_lowercase();
        self.vars.contains(&field)
    }

    /// What the model writes before a tool call (`<tool_call>`), empty for bare JSON calls.
    pub fn tool_call_tag(&self) -> String {
        self.template.tool_call_tag()
    }

    /// The tags around reasoning (`<think>`, `</think>`), inferred as Ollama infers them.
    pub fn thinking_tags(&self) -> Option<(String, String)> {
        self.template.thinking_tags()
    }

    /// Renders a prompt the way Ollama's `Template.Execute` does.
    pub fn render(&self, values: &Values) -> Result<String, TemplateError> {
        let (system, messages) = collate(&values.messages);
        let think = [
            ("Think", Value::Bool(values.think == Some(true))),
            ("ThinkLevel", string(values.think_level.as_deref().unwrap_or(""))),
            ("IsThinkSet", Value::Bool(values.think.is_some())),
        ];
        if !values.prompt.is_empty() && !values.suffix.is_empty() {
            let mut data = vec![
                ("Prompt", string(&values.prompt)),
                ("Suffix", string(&values.suffix)),
                ("Response", string("")),
            ];
            data.extend(think);
            return self.template.render_value(&map(data));
        }
        if !values.force_legacy && self.uses("messages") {
            let mut data = vec![
                ("System", string(&system)),
                ("Messages", Value::List(messages.iter().map(message_value).collect())),
                ("Tools", tools_value(values.tools.as_ref())),
                ("Response", string("")),
            ];
            data.extend(think);
            return self.template.render_value(&map(data));
        }

        // Legacy templates render one Prompt/Response pair per turn.
        let turn = |system: &str, prompt: &str, response: &str| {
            let mut data = vec![
                ("System", string(system)),
                ("Prompt", string(prompt)),
                ("Response", string(response)),
            ];
            data.extend(think.iter().cloned());
            map(data)
        };
        let mut out = String::new();
        let (mut system, mut prompt, mut response) = (String::new(), String::new(), String::new());
        for m in &messages {
            let flush = match m.role.as_str() {
                "system" => !prompt.is_empty() || !response.is_empty(),
                "user" => !response.is_empty(),
                _ => false,
            };
            if flush {
                out += &self.template.render_value(&turn(&system, &prompt, &response))?;
                system.clear();
                prompt.clear();
                response.clear();
            }
            match m.role.as_str() {
                "system" => system.clone_from(&m.content),
                "user" => prompt.clone_from(&m.content),
                "assistant" => response.clone_from(&m.content),
                _ => {}
            }
        }
        // The last turn stops after `.Response` so the model continues from there.
        let last = self.template.cut_after_response();
        out += &last.render_value(&turn(&system, &prompt, &response))?;
        Ok(out)
    }
}

/// Ollama's `collate`: merges consecutive same-role messages (except tool
/// results) and joins all system messages.
fn collate(msgs: &[Message]) -> (String, Vec<Message>) {
    let mut system = Vec::new();
    let mut collated: Vec<Message> = Vec::new();
    for m in msgs {
        if m.role == "system" {
            system.push(m.content.as_str());
        }
        match collated.last_mut() {
            Some(last) if last.role == m.role && m.role != "tool" => {
                last.content.push_str("\n\n");
                last.content.push_str(&m.content);
            }
            _ => collated.push(m.clone()),
        }
    }
    (system.join("\n\n"), collated)
}

fn string(s: &str) -> Value {
    Value::String(s.into())
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn fields(entries: Vec<(&str, Value)>) -> Value {
    Value::Struct(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn typed(value: Value, json: String, text: Option<String>) -> Value {
    Value::Typed(Rc::new(Typed { value, json, text }))
}

fn get<'a>(v: Option<&'a Json>, key: &str) -> Option<&'a Json> {
    v.and_then(|v| v.get(key))
}

fn json_str(v: Option<&Json>) -> Value {
    string(v.and_then(Json::as_str).unwrap_or(""))
}

/// A Go `any` field: absent is `nil`.
fn any(v: Option<&Json>) -> Value {
    v.map_or(Value::Nil, Value::from)
}

/// A Go `[]string` field: absent is an empty (nil) slice.
fn strings(v: Option<&Json>) -> Value {
    let items = v
        .and_then(Json::as_array)
        .map(|a| a.iter().map(Value::from).collect::<Rc<[Value]>>());
    Value::List(items.unwrap_or_else(|| Rc::new([])))
}

/// Ollama's `templateMessage`.
fn message_value(m: &Message) -> Value {
    let calls = m.tool_calls.as_ref().and_then(Json::as_array);
    let calls = calls.map(|calls| calls.iter().map(tool_call_value).collect::<Rc<[Value]>>());
    fields(vec![
        ("Role", string(&m.role)),
        ("Content", string(&m.content)),
        ("Thinking", string(m.thinking.as_deref().unwrap_or(""))),
        ("Images", Value::List(Rc::new([]))),
        ("ToolCalls", Value::List(calls.unwrap_or_else(|| Rc::new([])))),
        ("ToolName", string(m.tool_name.as_deref().unwrap_or(""))),
        ("ToolCallID", string("")),
    ])
}

/// Ollama's `templateToolCall`; `Arguments` prints as JSON.
fn tool_call_value(call: &Json) -> Value {
    let function = call.get("function");
    let index = get(function, "index").and_then(Json::as_i64).unwrap_or(0);
    let args = match get(function, "arguments") {
        Some(a @ Json::Object(_)) => {
            let v = Value::from(a);
            let json = to_json(&v);
            typed(v, json.clone(), Some(json))
        }
        _ => typed(Value::Map(Rc::new([])), "null".to_string(), Some("{}".to_string())),
    };
    fields(vec![
        ("ID", json_str(call.get("id"))),
        (
            "Function",
            fields(vec![
                ("Index", Value::Int(index)),
                ("Name", json_str(get(function, "name"))),
                ("Arguments", args),
            ]),
        ),
    ])
}

/// Ollama's `templateTools`; the list and each tool print as JSON.
fn tools_value(tools: Option<&Json>) -> Value {
    let Some(list) = tools.and_then(Json::as_array) else {
        return typed(Value::List(Rc::new([])), "null".to_string(), Some("null".to_string()));
    };
    let (values, shapes): (Vec<Value>, Vec<Value>) = list.iter().map(tool_value).unzip();
    let json = to_json(&Value::List(shapes.into()));
    typed(Value::List(values.into()), json.clone(), Some(json))
}

/// One `templateTool` and its JSON shape (json tags, `omitempty` applied).
fn tool_value(tool: &Json) -> (Value, Value) {
    let function = tool.get("function");
    let params = get(function, "parameters");
    let (props, props_shape) = match get(params, "properties").and_then(Json::as_object) {
        Some(p) => {
            let (values, shapes): (Vec<_>, Vec<_>) = p
                .iter()
                .map(|(k, v)| {
                    let (value, shape) = property_value(v);
                    ((k.clone(), value), (k.clone(), shape))
                })
                .unzip();
            // A Go map: marshalled with sorted keys.
            let shape = Value::Map(shapes.into());
            let json = to_json(&shape);
            (typed(Value::Map(values.into()), json.clone(), Some(json)), shape)
        }
        None => (
            typed(Value::Map(Rc::new([])), "null".to_string(), Some("{}".to_string())),
            Value::Nil,
        ),
    };
    let mut params_shape = vec![("type", json_str(get(params, "type")))];
    params_shape.extend(omit_empty("$defs", get(params, "$defs")));
    params_shape.extend(omit_empty("items", get(params, "items")));
    params_shape.extend(omit_empty("required", get(params, "required")));
    params_shape.push(("properties", props_shape));
    let mut shape = vec![("type", json_str(tool.get("type")))];
    shape.extend(omit_empty("items", tool.get("items")));
    shape.push((
        "function",
        fields(vec![
            ("name", json_str(get(function, "name"))),
            ("description", json_str(get(function, "description"))),
            ("parameters", fields(params_shape)),
        ]),
    ));
    let shape = fields(shape);
    let value = fields(vec![
        ("Type", json_str(tool.get("type"))),
        ("Items", any(tool.get("items"))),
        (
            "Function",
            fields(vec![
                ("Name", json_str(get(function, "name"))),
                ("Description", json_str(get(function, "description"))),
                (
                    "Parameters",
                    fields(vec![
                        ("Type", json_str(get(params, "type"))),
                        ("Defs", any(get(params, "$defs"))),
                        ("Items", any(get(params, "items"))),
                        ("Required", strings(get(params, "required"))),
                        ("Properties", props),
                    ]),
                ),
            ]),
        ),
    ]);
    let json = to_json(&shape);
    (typed(value, json.clone(), Some(json)), shape)
}

/// An `api.ToolProperty` and its JSON shape.
fn property_value(p: &Json) -> (Value, Value) {
    let types: Vec<Value> = match p.get("type") {
        Some(Json::String(s)) => vec![string(s)],
        Some(Json::Array(a)) => a.iter().map(Value::from).collect(),
        _ => Vec::new(),
    };
    // PropertyType prints a single type bare and several as `[a b]`.
    let type_text = match types.as_slice() {
        [Value::String(s)] => s.to_string(),
        [] => String::new(),
        _ => format!(
            "[{}]",
            types
                .iter()
                .map(|t| if let Value::String(s) = t {
                    s.to_string()
                } else {
                    String::new()
                })
                .collect::<Vec<_>>()
                .join(" ")
        ),
    };
    let type_shape = match types.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        _ => Some(Value::List(types.clone().into())),
    };
    let type_json = type_shape.as_ref().map_or_else(|| "null".to_string(), to_json);
    let (any_of, any_of_shapes): (Vec<Value>, Vec<Value>) = p
        .get("anyOf")
        .and_then(Json::as_array)
        .map(|a| a.iter().map(property_value).unzip())
        .unwrap_or_default();
    // Nested properties keep their order (Ollama stores them in an ordered map).
    let nested = p.get("properties").and_then(Json::as_object).map(|o| {
        let (values, shapes): (Vec<_>, Vec<_>) = o
            .iter()
            .map(|(k, v)| {
                let (value, shape) = property_value(v);
                ((k.clone(), value), (k.clone(), shape))
            })
            .unzip();
        (Value::Map(values.into()), Value::Struct(shapes.into()))
    });
    let mut shape = Vec::new();
    if !any_of_shapes.is_empty() {
        shape.push(("anyOf", Value::List(any_of_shapes.into())));
    }
    if let Some(t) = type_shape {
        shape.push(("type", t));
    }
    shape.extend(omit_empty("items", p.get("items")));
    shape.extend(omit_empty("description", p.get("description")));
    shape.extend(omit_empty("enum", p.get("enum")));
    if let Some((_, s)) = &nested {
        shape.push(("properties", s.clone()));
    }
    shape.extend(omit_empty("required", p.get("required")));
    let value = fields(vec![
        ("AnyOf", Value::List(any_of.into())),
        ("Type", typed(Value::List(types.into()), type_json, Some(type_text))),
        ("Items", any(p.get("items"))),
        ("Description", json_str(p.get("description"))),
        ("Enum", strings(p.get("enum"))),
        ("Properties", nested.map_or(Value::Nil, |(v, _)| v)),
        ("Required", strings(p.get("required"))),
    ]);
    (value, fields(shape))
}

/// A JSON field tagged `omitempty`: `any` fields are dropped only when nil,
/// typed ones also when empty.
fn omit_empty<'a>(key: &'a str, v: Option<&Json>) -> Option<(&'a str, Value)> {
    let v = v?;
    let is_any = key == "items" || key == "$defs";
    let empty = match v {
        Json::Null => true,
        _ if is_any => false,
        Json::String(s) => s.is_empty(),
        Json::Array(a) => a.is_empty(),
        _ => false,
    };
    (!empty).then(|| (key, Value::from(v)))
}

#[cfg(test)]
mod tests;
