//! Tree walker, following `text/template/exec.go`.

use std::rc::Rc;

use super::funcs::{self, truth};
use super::parse::{Arg, Branch, Cmd, Node, Pipe, Trees};
use super::{TemplateError, Value};

/// Output cap; templates render prompts, not bulk data.
pub(super) const MAX_OUTPUT: usize = 64 << 20;
/// Cap on nested lists including `{{template}}` calls (Go allows 100000 calls,
/// but native recursion must stay well inside a 2 MiB thread stack).
const MAX_DEPTH: usize = 100;
/// Cap on evaluation steps, against nested ranges that print nothing.
const MAX_STEPS: u64 = 50_000_000;

/// Control flow out of a list.
#[derive(PartialEq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

struct State<'t> {
    trees: &'t Trees,
    vars: Vec<(String, Value)>,
    out: String,
    line: usize,
    depth: usize,
    steps: u64,
}

type Result<T> = std::result::Result<T, TemplateError>;

pub(super) fn execute(trees: &Trees, name: &str, data: &Value) -> Result<String> {
    let root = trees.get(name).ok_or_else(|| TemplateError::Exec {
        line: 0,
        msg: format!("no template {name:?}"),
    })?;
    let mut s = State {
        trees,
        vars: vec![("$".to_string(), data.clone())],
        out: String::new(),
        line: 1,
        depth: 0,
        steps: 0,
    };
    s.walk(data, root)?;
    Ok(s.out)
}

impl State<'_> {
    fn err(&self, msg: impl Into<String>) -> TemplateError {
        TemplateError::Exec {
            line: self.line,
            msg: msg.into(),
        }
    }

    fn write(&mut self, text: &str) -> Result<()> {
        if self.out.len() + text.len() > MAX_OUTPUT {
            return Err(self.err("output exceeds 64 MiB"));
        }
        self.out.push_str(text);
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(self.err("template evaluation too long"));
        }
        Ok(())
    }

    fn walk(&mut self, dot: &Value, nodes: &[Node]) -> Result<Flow> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err("exceeded maximum template depth"));
        }
        self.depth += 1;
        let flow = self.walk_nodes(dot, nodes);
        self.depth -= 1;
        flow
    }

    fn walk_nodes(&mut self, dot: &Value, nodes: &[Node]) -> Result<Flow> {
        for node in nodes {
            self.step()?;
            match node {
                Node::Text(t) => self.write(t)?,
                Node::Action(pipe) => {
                    let v = self.eval_pipe(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        let text = funcs::print_action(&v);
                        self.write(&text)?;
                    }
                }
                Node::If(b) | Node::With(b) => {
                    let with = matches!(node, Node::With(_));
                    self.line = b.line;
                    let mark = self.vars.len();
                    let v = self.eval_pipe(dot, &b.pipe)?;
                    let flow = if truth(&v) {
                        self.walk(if with { &v } else { dot }, &b.list)?
                    } else if let Some(e) = &b.else_list {
                        self.walk(dot, e)?
                    } else {
                        Flow::Normal
                    };
                    self.vars.truncate(mark);
                    if flow != Flow::Normal {
                        return Ok(flow);
                    }
                }
                Node::Range(b) => self.range(dot, b)?,
                Node::Template { line, name, pipe } => {
                    self.line = *line;
                    let tree = self
                        .trees
                        .get(name)
                        .ok_or_else(|| self.err(format!("no such template {name:?}")))?;
                    let v = match pipe {
                        Some(p) => self.eval_pipe(dot, p)?,
                        None => Value::Missing,
                    };
                    let saved = std::mem::replace(&mut self.vars, vec![("$".to_string(), v.clone())]);
                    let result = self.walk(&v, tree);
                    self.vars = saved;
                    result?;
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn range(&mut self, dot: &Value, b: &Branch) -> Result<()> {
        self.line = b.line;
        let mark = self.vars.len();
        let v = self.eval_pipe(dot, &b.pipe)?;
        let items: Vec<(Value, Value)> = match strip(&v) {
            Value::List(l) => l.iter().enumerate().map(|(i, e)| (int(i), e.clone())).collect(),
            Value::Map(m) => sorted(m)
                .map(|(k, v)| (Value::String(k.as_str().into()), v.clone()))
                .collect(),
            Value::Missing | Value::Nil => Vec::new(),
            other => return Err(self.err(format!("range can't iterate over {}", funcs::sprint_one(other)))),
        };
        if items.is_empty() {
            if let Some(e) = &b.else_list {
                self.walk(dot, e)?;
            }
        }
        for (index, elem) in items {
            let decl = &b.pipe.decl;
            let bindings = match decl.len() {
                0 => vec![],
                1 => vec![elem.clone()],
                _ => vec![index, elem.clone()],
            };
            for (i, v) in bindings.into_iter().enumerate() {
                if b.pipe.assign {
                    self.assign(&decl[i], v);
                } else if let Some(var) = self.vars.get_mut(mark + i) {
                    var.1 = v;
                }
            }
            let inner = self.vars.len();
            let flow = self.walk(&elem, &b.list)?;
            self.vars.truncate(inner);
            if flow == Flow::Break {
                break;
            }
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn assign(&mut self, name: &str, v: Value) {
        if let Some(var) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            var.1 = v;
        }
    }

    fn lookup(&self, name: &str) -> Result<Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.err(format!("undefined variable: {name}")))
    }

    fn eval_pipe(&mut self, dot: &Value, pipe: &Pipe) -> Result<Value> {
        if pipe.line > 0 {
            self.line = pipe.line;
        }
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_cmd(dot, cmd, value)?);
        }
        let value = value.unwrap_or_default();
        if pipe.assign {
            for name in &pipe.decl {
                self.assign(name, value.clone());
            }
        } else {
            for name in &pipe.decl {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn eval_cmd(&mut self, dot: &Value, cmd: &Cmd, last: Option<Value>) -> Result<Value> {
        self.step()?;
        let Some(first) = cmd.args.first() else {
            return Err(self.err("empty command"));
        };
        if let Arg::Ident(name) = first {
            return self.call(dot, name, &cmd.args[1..], last);
        }
        if cmd.args.len() > 1 || last.is_some() {
            return Err(self.err(format!("can't give argument to non-function {}", describe(first))));
        }
        if let Arg::Nil = first {
            return Err(self.err("nil is not a command"));
        }
        self.eval_arg(dot, first)
    }

    fn eval_arg(&mut self, dot: &Value, arg: &Arg) -> Result<Value> {
        Ok(match arg {
            Arg::Dot => dot.clone(),
            Arg::Nil => Value::Nil,
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Int(i) => Value::Int(*i),
            Arg::Float(f) => Value::Float(*f),
            Arg::Str(s) => Value::String(s.as_str().into()),
            Arg::Field(chain) => self.fields(dot.clone(), chain)?,
            Arg::Var(name, chain) => {
                let v = self.lookup(name)?;
                self.fields(v, chain)?
            }
            Arg::Ident(name) => self.call(dot, name, &[], None)?,
            Arg::Pipe(p, chain) => {
                let mark = self.vars.len();
                let v = self.eval_pipe(dot, p)?;
                self.vars.truncate(mark);
                self.fields(v, chain)?
            }
        })
    }

    fn fields(&self, mut v: Value, chain: &[String]) -> Result<Value> {
        for name in chain {
            v = self.field(&v, name)?;
        }
        Ok(v)
    }

    fn field(&self, v: &Value, name: &str) -> Result<Value> {
        match v {
            Value::Missing => Ok(Value::Missing),
            Value::Nil => Err(self.err(format!("nil pointer evaluating interface {{}}.{name}"))),
            Value::Map(m) => Ok(m
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()),
            Value::Struct(s) => s
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| self.err(format!("can't evaluate field {name} in type struct"))),
            Value::Typed(t) => self.field(&t.value, name),
            other => Err(self.err(format!(
                "can't evaluate field {name} in type {}",
                funcs::type_name(other)
            ))),
        }
    }

    fn call(&mut self, dot: &Value, name: &str, args: &[Arg], last: Option<Value>) -> Result<Value> {
        // `and`/`or` evaluate lazily and return the deciding operand.
        if name == "and" || name == "or" {
            if args.is_empty() && last.is_none() {
                return Err(self.err(format!("wrong number of args for {name}: want at least 1 got 0")));
            }
            let mut v = Value::Missing;
            for arg in args {
                v = self.eval_arg(dot, arg)?;
                if truth(&v) == (name == "or") {
                    return Ok(v);
                }
            }
            return Ok(last.unwrap_or(v));
        }
        let mut vals = Vec::with_capacity(args.len() + 1);
        for arg in args {
            vals.push(self.eval_arg(dot, arg)?);
        }
        vals.extend(last);
        funcs::call(name, &vals).map_err(|msg| self.err(format!("error calling {name}: {msg}")))
    }
}

/// Looks through Go types with custom JSON to the underlying value.
pub(super) fn strip(v: &Value) -> &Value {
    match v {
        Value::Typed(t) => strip(&t.value),
        v => v,
    }
}

/// Map entries in Go's sorted key order.
pub(super) fn sorted(m: &Rc<[(String, Value)]>) -> impl Iterator<Item = &(String, Value)> {
    let mut entries: Vec<&(String, Value)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter()
}

fn int(i: usize) -> Value {
    Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
}

fn describe(arg: &Arg) -> String {
    match arg {
        Arg::Dot => ".".to_string(),
        Arg::Field(f) => format!(".{}", f.join(".")),
        Arg::Var(v, f) if f.is_empty() => v.clone(),
        Arg::Var(v, f) => format!("{v}.{}", f.join(".")),
        Arg::Str(s) => format!("{s:?}"),
        Arg::Int(i) => i.to_string(),
        Arg::Float(f) => f.to_string(),
        Arg::Bool(b) => b.to_string(),
        Arg::Nil => "nil".to_string(),
        Arg::Ident(i) => i.clone(),
        Arg::Pipe(..) => "(pipeline)".to_string(),
    }
}
