//! Lexer for Go `text/template` source, following `text/template/parse/lex.go`.

use super::TemplateError;

/// One lexical item with the line it starts on.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Item {
    pub tok: Tok,
    pub line: usize,
    /// Whether whitespace preceded this item inside an action (Go uses it to
    /// tell `$x.F` and `(p).F` chains from separate arguments).
    pub spaced: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Text(String),
    LeftDelim,
    RightDelim,
    /// `.Name`
    Field(String),
    /// A lone `.`
    Dot,
    /// `$` or `$name` (stored with the `$`).
    Variable(String),
    Ident(String),
    Str(String),
    Char(i64),
    Number(String),
    Bool(bool),
    Nil,
    LeftParen,
    RightParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

const LEFT: &str = "{{";
const RIGHT: &str = "}}";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits `src` into items; trim markers are applied to the text items here.
pub(super) fn lex(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut line = 1;
    let mut rest = src;
    // Whether the previous action ended with ` -}}`.
    let mut trim_next = false;
    while !rest.is_empty() {
        let (text, after) = match rest.find(LEFT) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let mut text = text;
        if trim_next {
            text = text.trim_start_matches(is_space);
        }
        let trim_left = after.starts_with("{{- ")
            || after.starts_with("{{-\t")
            || after.starts_with("{{-\r")
            || after.starts_with("{{-\n");
        if trim_left {
            text = text.trim_end_matches(is_space);
        }
        if !text.is_empty() {
            items.push(Item {
                tok: Tok::Text(text.to_string()),
                line,
                spaced: false,
            });
        }
        // Line numbers count the untrimmed text.
        line += rest[..rest.len() - after.len()].matches('\n').count();
        if after.is_empty() {
            break;
        }
        let body_start = if trim_left { 4 } else { 2 };
        let (consumed, trim) = lex_action(&after[body_start..], &mut line, &mut items)?;
        trim_next = trim;
        rest = &after[body_start + consumed..];
    }
    Ok(items)
}

/// Lexes one action body (after `{{` and any trim marker). Returns the bytes
/// consumed including the closing delimiter and whether it had a trim marker.
fn lex_action(src: &str, line: &mut usize, items: &mut Vec<Item>) -> Result<(usize, bool), TemplateError> {
    let start_line = *line;
    let err = |line: usize, msg: &str| TemplateError::Parse {
        line,
        msg: msg.to_string(),
    };
    if let Some(comment) = src.strip_prefix("/*") {
        let end = comment
            .find("*/")
            .map(|i| i + 2)
            .ok_or_else(|| err(start_line, "unclosed comment"))?;
        *line += src[..end].matches('\n').count();
        let after = &src[end + 2..];
        return if after.starts_with(RIGHT) {
            Ok((end + 4, false))
        } else if after.starts_with(" -}}") {
            Ok((end + 6, true))
        } else {
            Err(err(*line, "comment ends before closing delimiter"))
        };
    }
    items.push(Item {
        tok: Tok::LeftDelim,
        line: start_line,
        spaced: false,
    });
    let mut i = 0;
    let mut parens = 0usize;
    let mut spaced = false;
    loop {
        let rest = &src[i..];
        if rest.starts_with(RIGHT) && parens == 0 {
            items.push(Item {
                tok: Tok::RightDelim,
                line: *line,
                spaced,
            });
            return Ok((i + 2, false));
        }
        let Some(c) = rest.chars().next() else {
            return Err(err(*line, "unclosed action"));
        };
        if is_space(c) {
            // ` -}}` closes with a right trim marker.
            if rest[1..].starts_with("-}}") && parens == 0 {
                *line += usize::from(c == '\n');
                items.push(Item {
                    tok: Tok::RightDelim,
                    line: *line,
                    spaced: true,
                });
                return Ok((i + 4, true));
            }
            if c == '\n' {
                *line += 1;
            }
            i += 1;
            spaced = true;
            continue;
        }
        let tok_line = *line;
        let (tok, len) = match c {
            '|' => (Tok::Pipe, 1),
            ',' => (Tok::Comma, 1),
            '(' => {
                parens += 1;
                (Tok::LeftParen, 1)
            }
            ')' => {
                parens = parens
                    .checked_sub(1)
                    .ok_or_else(|| err(*line, "unexpected right paren"))?;
                (Tok::RightParen, 1)
            }
            ':' => {
                if !rest.starts_with(":=") {
                    return Err(err(*line, "expected :="));
                }
                (Tok::Declare, 2)
            }
            '=' => (Tok::Assign, 1),
            '"' => lex_quote(rest, line)?,
            '`' => {
                let end = rest[1..]
                    .find('`')
                    .ok_or_else(|| err(*line, "unterminated raw quoted string"))?;
                let s = &rest[1..1 + end];
                *line += s.matches('\n').count();
                (Tok::Str(s.to_string()), end + 2)
            }
            '\'' => lex_char(rest, *line)?,
            '$' => {
                let n = 1 + rest[1..].find(|c| !is_alnum(c)).unwrap_or(rest.len() - 1);
                (Tok::Variable(rest[..n].to_string()), n)
            }
            '.' if rest[1..].starts_with(|c: char| c.is_ascii_digit()) => lex_number(rest, *line)?,
            '.' => {
                let n = 1 + rest[1..].find(|c| !is_alnum(c)).unwrap_or(rest.len() - 1);
                if n == 1 {
                    (Tok::Dot, 1)
                } else {
                    (Tok::Field(rest[1..n].to_string()), n)
                }
            }
            '+' | '-' | '0'..='9' => lex_number(rest, *line)?,
            c if is_alnum(c) => {
                let n = rest.find(|c| !is_alnum(c)).unwrap_or(rest.len());
                let word = &rest[..n];
                let tok = match word {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    _ => Tok::Ident(word.to_string()),
                };
                (tok, n)
            }
            c => return Err(err(*line, &format!("unrecognized character in action: {c:?}"))),
        };
        items.push(Item {
            tok,
            line: tok_line,
            spaced,
        });
        spaced = false;
        i += len;
    }
}

fn lex_quote(rest: &str, line: &usize) -> Result<(Tok, usize), TemplateError> {
    let err = |msg: &str| TemplateError::Parse {
        line: *line,
        msg: msg.to_string(),
    };
    let mut out = String::new();
    let mut chars = rest.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((Tok::Str(out), i + 1)),
            '\n' => return Err(err("unterminated quoted string")),
            '\\' => {
                let (_, e) = chars.next().ok_or_else(|| err("unterminated quoted string"))?;
                let mut hex = |n: usize| -> Result<u32, TemplateError> {
                    let mut v = 0u32;
                    for _ in 0..n {
                        let (_, h) = chars.next().ok_or_else(|| err("invalid escape"))?;
                        v = v * 16 + h.to_digit(16).ok_or_else(|| err("invalid escape"))?;
                    }
                    Ok(v)
                };
                let ch = match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'a' => '\x07',
                    'b' => '\x08',
                    'f' => '\x0c',
                    'v' => '\x0b',
                    '\\' => '\\',
                    '"' => '"',
                    'x' => {
                        // Go's \x is a raw byte; only ASCII keeps the string valid UTF-8.
                        let v = hex(2)?;
                        char::from_u32(v).filter(char::is_ascii).unwrap_or('\u{fffd}')
                    }
                    'u' => char::from_u32(hex(4)?).ok_or_else(|| err("invalid escape"))?,
                    'U' => char::from_u32(hex(8)?).ok_or_else(|| err("invalid escape"))?,
                    _ => return Err(err("invalid syntax in quoted string")),
                };
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    Err(err("unterminated quoted string"))
}

fn lex_char(rest: &str, line: usize) -> Result<(Tok, usize), TemplateError> {
    let err = || TemplateError::Parse {
        line,
        msg: "invalid character constant".to_string(),
    };
    let mut chars = rest.char_indices().skip(1);
    let (_, c) = chars.next().ok_or_else(err)?;
    let value = match c {
        '\\' => match chars.next().ok_or_else(err)?.1 {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '\\' => '\\',
            '\'' => '\'',
            '0' => '\0',
            _ => return Err(err()),
        },
        '\'' | '\n' => return Err(err()),
        c => c,
    };
    match chars.next() {
        Some((i, '\'')) => Ok((Tok::Char(i64::from(u32::from(value))), i + 1)),
        _ => Err(err()),
    }
}

fn lex_number(rest: &str, line: usize) -> Result<(Tok, usize), TemplateError> {
    let n = rest
        .char_indices()
        .skip(1)
        .find(|&(i, c)| {
            let prev = rest.as_bytes()[i - 1];
            let exp_sign = (c == '+' || c == '-') && matches!(prev, b'e' | b'E' | b'p' | b'P');
            !(is_alnum(c) || c == '.' || exp_sign)
        })
        .map_or(rest.len(), |(i, _)| i);
    let text = &rest[..n];
    if text == "+" || text == "-" {
        return Err(TemplateError::Parse {
            line,
            msg: format!("bad number syntax: {text:?}"),
        });
    }
    Ok((Tok::Number(text.to_string()), n))
}
