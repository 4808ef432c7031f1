//! Parser producing the node tree, following `text/template/parse/parse.go`.

use std::collections::BTreeMap;

use super::lex::{Item, Tok};
use super::{funcs, TemplateError};

/// Deepest nesting of control structures and parentheses accepted.
const MAX_DEPTH: usize = 100;

#[derive(Clone, Debug)]
pub(super) enum Node {
    Text(String),
    Action(Pipe),
    If(Branch),
    With(Branch),
    Range(Branch),
    Template {
        line: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    Break,
    Continue,
}

#[derive(Clone, Debug)]
pub(super) struct Branch {
    pub line: usize,
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Option<Vec<Node>>,
}

#[derive(Clone, Debug)]
pub(super) struct Pipe {
    pub line: usize,
    pub decl: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Cmd>,
}

#[derive(Clone, Debug)]
pub(super) struct Cmd {
    pub args: Vec<Arg>,
}

#[derive(Clone, Debug)]
pub(super) enum Arg {
    Dot,
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// `.A.B`
    Field(Vec<String>),
    /// `$x.A.B`: the variable name (with `$`) and the field chain.
    Var(String, Vec<String>),
    /// A function name.
    Ident(String),
    /// `(pipeline).A.B`
    Pipe(Box<Pipe>, Vec<String>),
}

/// All named trees of a template; the main one is `""`.
pub(super) type Trees = BTreeMap<String, Vec<Node>>;

/// How a list ended.
enum Stop {
    Eof,
    End,
    Else,
    ElseIf(Node),
}

struct Parser {
    items: Vec<Item>,
    pos: usize,
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
    trees: Trees,
}

pub(super) fn parse(items: Vec<Item>) -> Result<Trees, TemplateError> {
    let mut p = Parser {
        items,
        pos: 0,
        vars: vec!["$".to_string()],
        range_depth: 0,
        depth: 0,
        trees: Trees::new(),
    };
    let (root, end) = p.list(true)?;
    if !matches!(end, Stop::Eof) {
        return Err(p.err("unexpected {{end}} or {{else}}"));
    }
    p.trees.insert(String::new(), root);
    Ok(p.trees)
}

impl Parser {
    fn line(&self) -> usize {
        self.items
            .get(self.pos)
            .or_else(|| self.items.last())
            .map_or(1, |i| i.line)
    }

    fn err(&self, msg: impl Into<String>) -> TemplateError {
        TemplateError::Parse {
            line: self.line(),
            msg: msg.into(),
        }
    }

    fn peek(&self) -> Option<&Item> {
        self.items.get(self.pos)
    }

    fn next(&mut self) -> Result<Item, TemplateError> {
        let item = self
            .items
            .get(self.pos)
            .cloned()
            .ok_or_else(|| self.err("unexpected EOF"))?;
        self.pos += 1;
        Ok(item)
    }

    fn expect(&mut self, tok: Tok, context: &str) -> Result<(), TemplateError> {
        let item = self.next()?;
        if item.tok == tok {
            Ok(())
        } else {
            Err(TemplateError::Parse {
                line: item.line,
                msg: format!("unexpected {:?} in {context}", item.tok),
            })
        }
    }

    fn enter(&mut self) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("template nesting too deep"));
        }
        Ok(())
    }

    /// Parses nodes until `{{end}}`, `{{else}}` or EOF (only allowed at top level).
    fn list(&mut self, top: bool) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            let Some(item) = self.peek().cloned() else {
                return if top {
                    Ok((nodes, Stop::Eof))
                } else {
                    Err(self.err("unexpected EOF"))
                };
            };
            self.pos += 1;
            match item.tok {
                Tok::Text(t) => nodes.push(Node::Text(t)),
                Tok::LeftDelim => match self.action(top)? {
                    Action::Node(n) => nodes.push(n),
                    Action::None => {}
                    Action::End(e) => return Ok((nodes, e)),
                },
                t => return Err(self.err(format!("unexpected {t:?}"))),
            }
        }
    }

    fn action(&mut self, top: bool) -> Result<Action, TemplateError> {
        let item = self.peek().cloned().ok_or_else(|| self.err("unclosed action"))?;
        let line = item.line;
        if let Tok::Ident(word) = &item.tok {
            let word = word.as_str();
            let close = |p: &mut Parser, what: &str| p.expect(Tok::RightDelim, what);
            match word {
                "if" | "with" | "range" => {
                    self.pos += 1;
                    return Ok(Action::Node(self.control(word, line)?));
                }
                "end" => {
                    self.pos += 1;
                    close(self, "end")?;
                    return Ok(Action::End(Stop::End));
                }
                "else" => {
                    self.pos += 1;
                    return match self.peek().map(|i| i.tok.clone()) {
                        Some(Tok::Ident(w)) if w == "if" || w == "with" => {
                            self.pos += 1;
                            // `{{else if}}` is a nested if ending at the same {{end}}.
                            Ok(Action::End(Stop::ElseIf(self.control(&w, line)?)))
                        }
                        _ => {
                            close(self, "else")?;
                            Ok(Action::End(Stop::Else))
                        }
                    };
                }
                "break" | "continue" => {
                    self.pos += 1;
                    if self.range_depth == 0 {
                        return Err(self.err(format!("{{{{{word}}}}} outside {{{{range}}}}")));
                    }
                    close(self, word)?;
                    return Ok(Action::Node(if word == "break" { Node::Break } else { Node::Continue }));
                }
                "template" => {
                    self.pos += 1;
                    let (name, pipe) = self.template_call("template")?;
                    return Ok(Action::Node(Node::Template { line, name, pipe }));
                }
                "define" if top => {
                    self.pos += 1;
                    self.define()?;
                    return Ok(Action::None);
                }
                "block" => {
                    self.pos += 1;
                    let (name, pipe) = self.template_call("block")?;
                    let body = self.define_body()?;
                    self.trees.insert(name.clone(), body);
                    return Ok(Action::Node(Node::Template { line, name, pipe }));
                }
                _ => {}
            }
        }
        let pipe = self.pipeline("command", false)?;
        Ok(Action::Node(Node::Action(pipe)))
    }

    /// Parses `pipeline}} list [{{else}} list] {{end}}` for if/with/range.
    fn control(&mut self, word: &str, line: usize) -> Result<Node, TemplateError> {
        self.enter()?;
        let vars = self.vars.len();
        let pipe = self.pipeline(word, word == "range")?;
        if word == "range" {
            self.range_depth += 1;
        }
        let (list, end) = self.list(false)?;
        if word == "range" {
            self.range_depth -= 1;
        }
        let else_list = match end {
            Stop::End => None,
            Stop::Else => {
                let (list, end) = self.list(false)?;
                if !matches!(end, Stop::End) {
                    return Err(self.err("expected end; found else"));
                }
                Some(list)
            }
            Stop::ElseIf(node) => {
                if word == "range" {
                    return Err(self.err("unexpected else if in range"));
                }
                Some(vec![node])
            }
            Stop::Eof => return Err(self.err("unexpected EOF")),
        };
        self.vars.truncate(vars);
        self.depth -= 1;
        let branch = Branch {
            line,
            pipe,
            list,
            else_list,
        };
        Ok(match word {
            "if" => Node::If(branch),
            "with" => Node::With(branch),
            _ => Node::Range(branch),
        })
    }

    fn template_call(&mut self, context: &str) -> Result<(String, Option<Pipe>), TemplateError> {
        let name = match self.next()?.tok {
            Tok::Str(s) => s,
            t => return Err(self.err(format!("unexpected {t:?} in {context} clause"))),
        };
        if matches!(self.peek().map(|i| &i.tok), Some(Tok::RightDelim)) {
            self.pos += 1;
            return Ok((name, None));
        }
        Ok((name, Some(self.pipeline(context, false)?)))
    }

    fn define(&mut self) -> Result<(), TemplateError> {
        let name = match self.next()?.tok {
            Tok::Str(s) => s,
            t => return Err(self.err(format!("unexpected {t:?} in define clause"))),
        };
        self.expect(Tok::RightDelim, "define clause")?;
        let body = self.define_body()?;
        // Go keeps a non-empty definition over a later empty one.
        let empty = body.iter().all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()));
        if !(empty && self.trees.contains_key(&name)) {
            self.trees.insert(name, body);
        }
        Ok(())
    }

    fn define_body(&mut self) -> Result<Vec<Node>, TemplateError> {
        self.enter()?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let range_depth = std::mem::take(&mut self.range_depth);
        let (body, end) = self.list(false)?;
        if !matches!(end, Stop::End) {
            return Err(self.err("unexpected else in define"));
        }
        self.vars = saved;
        self.range_depth = range_depth;
        self.depth -= 1;
        Ok(body)
    }

    fn pipeline(&mut self, context: &str, is_range: bool) -> Result<Pipe, TemplateError> {
        let line = self.line();
        let mut decl = Vec::new();
        let mut assign = false;
        // Optional `$x :=`, `$x =` or (range only) `$i, $v :=`.
        if let Some(Tok::Variable(_)) = self.peek().map(|i| &i.tok) {
            let start = self.pos;
            let mut names = Vec::new();
            while let Some(Tok::Variable(v)) = self.peek().map(|i| i.tok.clone()) {
                self.pos += 1;
                names.push(v);
                match self.peek().map(|i| &i.tok) {
                    Some(Tok::Comma) if is_range && names.len() < 2 => self.pos += 1,
                    Some(Tok::Declare | Tok::Assign) => break,
                    _ => {
                        names.clear();
                        break;
                    }
                }
            }
            match self.peek().map(|i| i.tok.clone()) {
                Some(Tok::Declare) if !names.is_empty() => {
                    self.pos += 1;
                    decl = names;
                }
                Some(Tok::Assign) if !names.is_empty() => {
                    self.pos += 1;
                    for n in &names {
                        self.use_var(n)?;
                    }
                    decl = names;
                    assign = true;
                }
                _ => self.pos = start,
            }
        }
        let mut cmds = Vec::new();
        loop {
            match self.peek().map(|i| &i.tok) {
                Some(Tok::RightDelim) | Some(Tok::RightParen) => {
                    let closing = self.next()?;
                    let want_paren = context == "parenthesized pipeline";
                    if (closing.tok == Tok::RightParen) != want_paren {
                        return Err(self.err(format!("unexpected {:?} in {context}", closing.tok)));
                    }
                    break;
                }
                None => return Err(self.err(format!("unclosed action in {context}"))),
                _ => {
                    cmds.push(self.command()?);
                    if let Some(Tok::Pipe) = self.peek().map(|i| &i.tok) {
                        self.pos += 1;
                        if matches!(self.peek().map(|i| &i.tok), Some(Tok::RightDelim | Tok::RightParen)) {
                            return Err(self.err("missing command after |"));
                        }
                    }
                }
            }
        }
        if cmds.is_empty() {
            return Err(self.err(format!("missing value for {context}")));
        }
        // Declare after parsing the pipeline: `$x := $x` refers to the outer $x.
        if !assign {
            self.vars.extend(decl.iter().cloned());
        }
        for (i, c) in cmds.iter().enumerate().skip(1) {
            if !matches!(
                c.args.first(),
                Some(Arg::Field(_) | Arg::Var(..) | Arg::Ident(_) | Arg::Pipe(..) | Arg::Dot)
            ) {
                return Err(self.err(format!("non executable command in pipeline stage {}", i + 1)));
            }
        }
        Ok(Pipe {
            line,
            decl,
            assign,
            cmds,
        })
    }

    fn command(&mut self) -> Result<Cmd, TemplateError> {
        let mut args = Vec::new();
        loop {
            match self.peek().map(|i| &i.tok) {
                Some(Tok::RightDelim | Tok::RightParen | Tok::Pipe) | None => break,
                _ => {}
            }
            if !args.is_empty() && !self.peek().is_some_and(|i| i.spaced) {
                return Err(self.err("missing space between arguments"));
            }
            args.push(self.operand()?);
        }
        if args.is_empty() {
            return Err(self.err("empty command"));
        }
        Ok(Cmd { args })
    }

    /// A term plus any directly attached `.Field` chain.
    fn operand(&mut self) -> Result<Arg, TemplateError> {
        let item = self.next()?;
        let arg = match item.tok {
            Tok::Dot => Arg::Dot,
            Tok::Nil => Arg::Nil,
            Tok::Bool(b) => Arg::Bool(b),
            Tok::Str(s) => Arg::Str(s),
            Tok::Char(c) => Arg::Int(c),
            Tok::Number(n) => number(&n).ok_or_else(|| self.err(format!("bad number syntax: {n:?}")))?,
            Tok::Field(f) => Arg::Field(vec![f]),
            Tok::Variable(v) => {
                self.use_var(&v)?;
                Arg::Var(v, Vec::new())
            }
            Tok::Ident(name) => {
                if !funcs::exists(&name) {
                    return Err(self.err(format!("function {name:?} not defined")));
                }
                Arg::Ident(name)
            }
            Tok::LeftParen => {
                self.enter()?;
                let pipe = self.pipeline("parenthesized pipeline", false)?;
                self.depth -= 1;
                Arg::Pipe(Box::new(pipe), Vec::new())
            }
            t => return Err(self.err(format!("unexpected {t:?} in operand"))),
        };
        let mut chain = Vec::new();
        while let Some(Item {
            tok: Tok::Field(f),
            spaced: false,
            ..
        }) = self.peek()
        {
            chain.push(f.clone());
            self.pos += 1;
        }
        if chain.is_empty() {
            return Ok(arg);
        }
        match arg {
            Arg::Field(mut f) => {
                f.extend(chain);
                Ok(Arg::Field(f))
            }
            Arg::Var(v, _) => Ok(Arg::Var(v, chain)),
            Arg::Pipe(p, _) => Ok(Arg::Pipe(p, chain)),
            Arg::Dot => Err(self.err("unexpected . after term \".\"")),
            _ => Err(self.err("unexpected . after term")),
        }
    }

    fn use_var(&self, name: &str) -> Result<(), TemplateError> {
        if self.vars.iter().any(|v| v == name) {
            Ok(())
        } else {
            Err(self.err(format!("undefined variable {name:?}")))
        }
    }
}

enum Action {
    Node(Node),
    None,
    End(Stop),
}

/// Parses a Go number literal; floats only when written with `.`/exponent,
/// as Go's `idealConstant` does.
fn number(text: &str) -> Option<Arg> {
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let (neg, digits) = match clean.as_bytes().first()? {
        b'-' => (true, &clean[1..]),
        b'+' => (false, &clean[1..]),
        _ => (false, clean.as_str()),
    };
    let lower = digits.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit()) {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else if lower.bytes().all(|b| b.is_ascii_digit()) {
        lower.parse().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Some(Arg::Int(if neg { i.checked_neg()? } else { i }));
    }
    if lower.starts_with("0x") || !lower.contains(['.', 'e']) {
        return None;
    }
    let f: f64 = digits.parse().ok()?;
    f.is_finite().then_some(Arg::Float(if neg { -f } else { f }))
}
