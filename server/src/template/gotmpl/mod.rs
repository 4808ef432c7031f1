//! A renderer for the subset of Go's `text/template` language used by Ollama
//! model templates, evaluated over JSON-like data.
//!
//! Printing, truthiness, comparison and `range` order follow Go's semantics
//! (maps print as `map[k:v]` and iterate in sorted key order, missing keys
//! print `<no value>`, JSON numbers are `float64`).

mod exec;
mod funcs;
mod lex;
mod parse;

use std::collections::BTreeSet;
use std::rc::Rc;

pub use funcs::to_json;
use parse::{Arg, Node, Pipe, Trees};

/// A template parse or execution error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// The template text is not valid.
    #[error("template: line {line}: {msg}")]
    Parse {
        /// 1-based line of the offending item.
        line: usize,
        /// What went wrong.
        msg: String,
    },
    /// Evaluating the template failed.
    #[error("template: line {line}: executing: {msg}")]
    Exec {
        /// 1-based line of the action being executed.
        line: usize,
        /// What went wrong.
        msg: String,
    },
}

/// Data a template is evaluated over: the Go values Ollama hands to templates.
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// An absent value (missing map key): prints `<no value>`.
    #[default]
    Missing,
    /// Go `nil` (JSON `null`).
    Nil,
    /// Go `bool`.
    Bool(bool),
    /// Go `int` (template integer literals, `len`, range indices).
    Int(i64),
    /// Go `float64` (every JSON number).
    Float(f64),
    /// Go `string`.
    String(Rc<str>),
    /// Go slice.
    List(Rc<[Value]>),
    /// Go `map[string]any`: ranged and printed in sorted key order.
    Map(Rc<[(String, Value)]>),
    /// Go struct: fields in declaration order; unknown fields are errors.
    Struct(Rc<[(String, Value)]>),
    /// A Go value of a named type with its own JSON encoding.
    Typed(Rc<Typed>),
}

/// A value of a named Go type whose JSON encoding (and printed form, for
/// `fmt.Stringer` types) is precomputed.
#[derive(Clone, Debug)]
pub struct Typed {
    /// The underlying value, used for field access, `range` and truthiness.
    pub value: Value,
    /// What `json.Marshal` produces for it.
    pub json: String,
    /// What its `String()` method returns, if it has one.
    pub text: Option<String>,
}

impl From<&serde_json::Value> for Value {
    /// Converts JSON the way Go's `json.Unmarshal` into `any` does.
    fn from(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Value::String(s.as_str().into()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => Value::Map(o.iter().map(|(k, v)| (k.clone(), Value::from(v))).collect()),
        }
    }
}

/// A parsed Go template.
#[derive(Clone, Debug)]
pub struct Template {
    trees: Trees,
}

impl Template {
    /// Parses template text.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let items = lex::lex(text)?;
        Ok(Template {
            trees: parse::parse(items)?,
        })
    }

    /// Renders the template over JSON data (numbers become Go `float64`).
    #[cfg(test)]
    pub fn render(&self, data: &serde_json::Value) -> Result<String, TemplateError> {
        self.render_value(&Value::from(data))
    }

    /// Renders the template over Go-typed data.
    pub fn render_value(&self, data: &Value) -> Result<String, TemplateError> {
        exec::execute(&self.trees, "", data)
    }

    /// Every field and variable identifier used anywhere, lowercased, sorted and
    /// deduplicated, like Ollama's `Template.Vars()`.
    pub fn field_names(&self) -> Vec<String> {
        let mut names = BTreeSet::new();
        for tree in self.trees.values() {
            idents_list(tree, &mut names);
        }
        names.into_iter().collect()
    }

    /// The text a model writes before a tool call, as Ollama's `parseTag` finds it: the first
    /// text inside the first `{{ if .ToolCalls }}`, trimmed and cut before any `{`. Empty when
    /// calls are bare JSON (or the template shows none).
    pub fn tool_call_tag(&self) -> String {
        let Some(branch) = self.trees.get("").and_then(|root| find_tool_calls_if(root)) else {
            return String::new();
        };
        let Some(text) = first_text(&branch.list) else {
            return String::new();
        };
        let text = text.trim().replace("\r\n", "\n");
        text.split('{').next().unwrap_or_default().to_string()
    }

    /// The tags around reasoning, as Ollama's `thinking.InferTags` finds them: for each
    /// `.Thinking` inside the range over `.Messages`, the first and last texts of the list
    /// holding it (trimmed; the last match wins). `None` unless both are found.
    pub fn thinking_tags(&self) -> Option<(String, String)> {
        let mut tags = (String::new(), String::new());
        infer_thinking_tags(self.trees.get("")?, false, &mut tags);
        (!tags.0.is_empty() && !tags.1.is_empty()).then_some(tags)
    }

    /// Appends a `{{ .Response }}` action to the main tree.
    pub fn append_response(&mut self) {
        if let Some(root) = self.trees.get_mut("") {
            root.push(Node::Action(Pipe {
                line: 0,
                decl: Vec::new(),
                assign: false,
                cmds: vec![parse::Cmd {
                    args: vec![Arg::Field(vec!["Response".to_string()])],
                }],
            }));
        }
    }

    /// Returns a copy whose main tree stops right after the first `.Response`
    /// field in an action, as Ollama's `deleteNode` does for the last turn.
    pub fn cut_after_response(&self) -> Template {
        let mut trees = self.trees.clone();
        if let Some(root) = trees.get_mut("") {
            let mut cut = false;
            cut_list(root, &mut cut);
        }
        Template { trees }
    }
}

/// The first `if` whose condition names `.ToolCalls`, searched depth first.
fn find_tool_calls_if(nodes: &[Node]) -> Option<&parse::Branch> {
    let names_tool_calls = |branch: &parse::Branch| {
        branch.pipe.cmds.iter().flat_map(|c| &c.args).any(|arg| match arg {
            Arg::Field(fields) | Arg::Var(_, fields) => fields.iter().any(|f| f == "ToolCalls"),
            _ => false,
        })
    };
    nodes.iter().find_map(|node| match node {
        Node::If(branch) if names_tool_calls(branch) => Some(branch),
        Node::If(branch) | Node::With(branch) | Node::Range(branch) => {
            find_tool_calls_if(&branch.list).or_else(|| branch.else_list.as_deref().and_then(find_tool_calls_if))
        }
        _ => None,
    })
}

/// [`Template::thinking_tags`] over one list; `in_messages` when the nearest enclosing range
/// ranges over `.Messages`.
fn infer_thinking_tags(list: &[Node], in_messages: bool, tags: &mut (String, String)) {
    let take = |tags: &mut (String, String)| {
        if let Some(Node::Text(text)) = list.first() {
            tags.0 = text.trim().to_string();
        }
        if let Some(Node::Text(text)) = list.last() {
            tags.1 = text.trim().to_string();
        }
    };
    for node in list {
        match node {
            Node::Action(pipe) | Node::Template { pipe: Some(pipe), .. }
                if in_messages && pipe_has_field(pipe, "Thinking") =>
            {
                take(tags);
            }
            Node::If(branch) | Node::With(branch) | Node::Range(branch) => {
                let inner = match node {
                    Node::Range(_) => pipe_has_field(&branch.pipe, "Messages"),
                    _ => in_messages,
                };
                if inner && pipe_has_field(&branch.pipe, "Thinking") {
                    take(tags);
                }
                infer_thinking_tags(&branch.list, inner, tags);
                if let Some(else_list) = &branch.else_list {
                    infer_thinking_tags(else_list, inner, tags);
                }
            }
            _ => {}
        }
    }
}

/// Whether a pipeline names the field `.<name>` (not `$.<name>`), nested pipelines included.
fn pipe_has_field(pipe: &Pipe, name: &str) -> bool {
    pipe.cmds.iter().flat_map(|c| &c.args).any(|arg| match arg {
        Arg::Field(fields) => fields.first().is_some_and(|f| f == name),
        Arg::Pipe(inner, _) => pipe_has_field(inner, name),
        _ => false,
    })
}

/// The first text of a list, not looking past an action or a nested block without text.
fn first_text(nodes: &[Node]) -> Option<&str> {
    for node in nodes {
        match node {
            Node::Text(text) => return Some(text),
            Node::If(branch) | Node::With(branch) | Node::Range(branch) => {
                return first_text(&branch.list).or_else(|| branch.else_list.as_deref().and_then(first_text));
            }
            Node::Action(_) => return None,
            _ => {}
        }
    }
    None
}

fn idents_list(nodes: &[Node], names: &mut BTreeSet<String>) {
    for node in nodes {
        match node {
            Node::Action(p) => idents_pipe(p, names),
            Node::If(b) | Node::With(b) | Node::Range(b) => {
                idents_pipe(&b.pipe, names);
                idents_list(&b.list, names);
                if let Some(e) = &b.else_list {
                    idents_list(e, names);
                }
            }
            Node::Template { pipe: Some(p), .. } => idents_pipe(p, names),
            _ => {}
        }
    }
}

fn idents_pipe(pipe: &Pipe, names: &mut BTreeSet<String>) {
    for arg in pipe.cmds.iter().flat_map(|c| &c.args) {
        match arg {
            Arg::Field(f) => names.extend(f.iter().map(|s| s.to_lowercase())),
            Arg::Var(v, f) => {
                names.insert(v.to_lowercase());
                names.extend(f.iter().map(|s| s.to_lowercase()));
            }
            // Like Ollama, chained fields after a parenthesized pipeline are not counted.
            Arg::Pipe(p, _) => idents_pipe(p, names),
            _ => {}
        }
    }
}

/// Ollama's `deleteNode` walk: everything after the first `.Response` field
/// node is removed; `if`/`range`/`with` pipelines are not inspected.
fn cut_list(nodes: &mut Vec<Node>, cut: &mut bool) {
    let mut kept = Vec::with_capacity(nodes.len());
    for mut node in std::mem::take(nodes) {
        if *cut {
            continue;
        }
        let keep = match &mut node {
            Node::Action(p) => cut_pipe(p, cut),
            Node::If(b) | Node::With(b) | Node::Range(b) => {
                cut_list(&mut b.list, cut);
                if let Some(e) = &mut b.else_list {
                    // Ollama panics here when the cut already happened; drop the branch instead.
                    if *cut {
                        e.clear();
                    } else {
                        cut_list(e, cut);
                    }
                }
                true
            }
            _ => true,
        };
        if keep {
            kept.push(node);
        }
    }
    *nodes = kept;
}

/// Returns whether the pipeline survives.
fn cut_pipe(pipe: &mut Pipe, cut: &mut bool) -> bool {
    for cmd in &mut pipe.cmds {
        let mut args = Vec::with_capacity(cmd.args.len());
        for mut arg in std::mem::take(&mut cmd.args) {
            if *cut {
                continue;
            }
            let keep = match &mut arg {
                Arg::Field(f) => {
                    *cut = f.iter().any(|s| s == "Response");
                    true
                }
                Arg::Pipe(p, _) => cut_pipe(p, cut),
                _ => true,
            };
            if keep {
                args.push(arg);
            }
        }
        if args.is_empty() {
            return false;
        }
        cmd.args = args;
    }
    true
}

#[cfg(test)]
mod tests;
