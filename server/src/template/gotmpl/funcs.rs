//! Builtin functions, Go `fmt` printing and Go `encoding/json` output.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::exec::{sorted, strip};
use super::Value;

/// Precision cap for printf, against `%.999999999f`-style blowups.
const MAX_WIDTH: usize = 1 << 16;

const FUNCS: &[&str] = &[
    "and",
    "or",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "html",
    "js",
    "urlquery",
    "call",
    "json",
    "currentDate",
    "yesterdayDate",
    "toTypeScriptType",
];

/// Whether `name` is a known function (checked at parse time, like Go).
pub(super) fn exists(name: &str) -> bool {
    FUNCS.contains(&name)
}

type FnResult = Result<Value, String>;

/// Calls a builtin other than the short-circuiting `and`/`or`.
pub(super) fn call(name: &str, args: &[Value]) -> FnResult {
    let s = |s: String| Ok(Value::String(s.into()));
    match name {
        "not" => match args {
            [v] => Ok(Value::Bool(!truth(v))),
            _ => Err(arg_count(1, args.len())),
        },
        "eq" => match args {
            [] | [_] => Err("missing argument for comparison".to_string()),
            [a, rest @ ..] => {
                for b in rest {
                    if equal(a, b)? {
                        return Ok(Value::Bool(true));
                    }
                }
                Ok(Value::Bool(false))
            }
        },
        "ne" | "lt" | "le" | "gt" | "ge" => {
            let [a, b] = args else {
                return Err(arg_count(2, args.len()));
            };
            Ok(Value::Bool(match name {
                "ne" => !equal(a, b)?,
                "lt" => less(a, b)?,
                "le" => less(a, b)? || equal(a, b)?,
                "gt" => !less(a, b)? && !equal(a, b)?,
                _ => !less(a, b)?,
            }))
        }
        "len" => match args {
            [v] => length(v).map(|n| Value::Int(i64::try_from(n).unwrap_or(i64::MAX))),
            _ => Err(arg_count(1, args.len())),
        },
        "index" => index(args),
        "slice" => slice(args),
        "print" => s(sprint(args)),
        "println" => s(sprintln(args)),
        "printf" => match args {
            [Value::String(f), rest @ ..] => s(sprintf(f, rest)),
            [other, ..] => Err(format!(
                "wrong type for value; expected string; got {}",
                type_name(other)
            )),
            [] => Err(arg_count(1, 0)),
        },
        "html" => s(html(&eval_args(args))),
        "js" => s(js(&eval_args(args))),
        "urlquery" => s(urlquery(&eval_args(args))),
        "call" => Err("call of non-function".to_string()),
        "json" => match args {
            [v] => s(to_json(v)),
            _ => Err(arg_count(1, args.len())),
        },
        "currentDate" | "yesterdayDate" => {
            if let Some(v) = args.iter().find(|v| !matches!(v, Value::String(_))) {
                return Err(format!("wrong type for value; expected string; got {}", type_name(v)));
            }
            let days = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() / 86_400);
            let days = i64::try_from(days).unwrap_or(0) - i64::from(name == "yesterdayDate");
            s(civil_date(days))
        }
        "toTypeScriptType" => match args {
            [v] => s(typescript_type(v)),
            _ => Err(arg_count(1, args.len())),
        },
        _ => Err(format!("{name:?} is not a defined function")),
    }
}

fn arg_count(want: usize, got: usize) -> String {
    format!("wrong number of args: want {want} got {got}")
}

/// Go's `isTrue`.
pub(super) fn truth(v: &Value) -> bool {
    match v {
        Value::Missing | Value::Nil => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::List(l) => !l.is_empty(),
        Value::Map(m) => !m.is_empty(),
        Value::Struct(_) => true,
        Value::Typed(t) => truth(&t.value),
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match strip(v) {
        Value::Missing | Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Struct(_) | Value::Typed(_) => "struct",
    }
}

fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    match (strip(a), strip(b)) {
        (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
        (Value::Int(x), Value::Int(y)) => Ok(x == y),
        (Value::Float(x), Value::Float(y)) => Ok(x == y),
        (Value::String(x), Value::String(y)) => Ok(x == y),
        (Value::Missing | Value::Nil, Value::Missing | Value::Nil) => Ok(true),
        (Value::Missing | Value::Nil, _) | (_, Value::Missing | Value::Nil) => Ok(false),
        (x @ (Value::List(_) | Value::Map(_)), _) | (_, x @ (Value::List(_) | Value::Map(_))) => {
            Err(format!("non-comparable type {}", type_name(x)))
        }
        _ => Err("incompatible types for comparison".to_string()),
    }
}

fn less(a: &Value, b: &Value) -> Result<bool, String> {
    let ord = match (strip(a), strip(b)) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (x, y) if type_name(x) == type_name(y) => return Err("invalid type for comparison".to_string()),
        _ => return Err("incompatible types for comparison".to_string()),
    };
    Ok(ord == Ordering::Less)
}

fn length(v: &Value) -> Result<usize, String> {
    match strip(v) {
        Value::String(s) => Ok(s.len()),
        Value::List(l) => Ok(l.len()),
        Value::Map(m) => Ok(m.len()),
        Value::Missing | Value::Nil => Err("len of nil pointer".to_string()),
        other => Err(format!("len of type {}", type_name(other))),
    }
}

fn int_arg(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(format!("cannot index slice/array with type {}", type_name(other))),
    }
}

fn index(args: &[Value]) -> FnResult {
    let Some((first, keys)) = args.split_first() else {
        return Err(arg_count(1, 0));
    };
    let mut v = first.clone();
    for key in keys {
        v = match strip(&v) {
            Value::List(l) => {
                let i = int_arg(key)?;
                let e = usize::try_from(i).ok().and_then(|i| l.get(i));
                e.cloned().ok_or_else(|| format!("index out of range: {i}"))?
            }
            Value::String(s) => {
                let i = int_arg(key)?;
                let b = usize::try_from(i).ok().and_then(|i| s.as_bytes().get(i));
                Value::Int(i64::from(*b.ok_or_else(|| format!("index out of range: {i}"))?))
            }
            Value::Map(m) => match key {
                Value::String(k) => m
                    .iter()
                    .find(|(n, _)| **n == **k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Nil),
                other => return Err(format!("value has type {}; should be string", type_name(other))),
            },
            Value::Missing | Value::Nil => return Err("index of untyped nil".to_string()),
            other => return Err(format!("can't index item of type {}", type_name(other))),
        };
    }
    Ok(v)
}

fn slice(args: &[Value]) -> FnResult {
    let Some((first, idx)) = args.split_first() else {
        return Err(arg_count(1, 0));
    };
    let len = match strip(first) {
        Value::String(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Missing | Value::Nil => return Err("slice of untyped nil".to_string()),
        other => return Err(format!("can't slice item of type {}", type_name(other))),
    };
    if idx.len() > 2 {
        return Err("too many slice indexes".to_string());
    }
    let mut bounds = [0, len];
    for (i, v) in idx.iter().enumerate() {
        let n = int_arg(v)?;
        bounds[i] = usize::try_from(n)
            .ok()
            .filter(|&n| n <= len)
            .ok_or_else(|| format!("index out of range: {n}"))?;
    }
    let [lo, hi] = bounds;
    if lo > hi {
        return Err(format!("invalid slice index: {lo} > {hi}"));
    }
    match strip(first) {
        Value::String(s) => s
            .get(lo..hi)
            .map(|s| Value::String(s.into()))
            .ok_or_else(|| "slice splits a UTF-8 character".to_string()),
        Value::List(l) => Ok(Value::List(l[lo..hi].iter().cloned().collect())),
        _ => Err("can't slice".to_string()),
    }
}

/// What an action prints: Go prints `<no value>` for nil at the top level.
pub(super) fn print_action(v: &Value) -> String {
    match v {
        Value::Missing | Value::Nil => "<no value>".to_string(),
        v => sprint_one(v),
    }
}

/// `fmt.Sprint` of one value (`%v`).
pub(super) fn sprint_one(v: &Value) -> String {
    let mut out = String::new();
    fmt_v(&mut out, v, 'v');
    out
}

/// `fmt.Sprint`: spaces only between operands when neither is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in args.iter().enumerate() {
        let is_str = |v: &Value| matches!(v, Value::String(_));
        if i > 0 && !is_str(v) && !is_str(&args[i - 1]) {
            out.push(' ');
        }
        fmt_v(&mut out, v, 'v');
    }
    out
}

fn sprintln(args: &[Value]) -> String {
    let parts: Vec<String> = args.iter().map(sprint_one).collect();
    parts.join(" ") + "\n"
}

/// Go's `evalArgs` used by html/js/urlquery.
fn eval_args(args: &[Value]) -> String {
    match args {
        [Value::String(s)] => s.to_string(),
        _ => sprint(args),
    }
}

/// Formats `v` under a verb, recursing into containers like Go's `printValue`.
fn fmt_v(out: &mut String, v: &Value, verb: char) {
    match v {
        Value::Missing | Value::Nil => out.push_str("<nil>"),
        Value::Typed(t) if t.text.is_some() && matches!(verb, 'v' | 's') => {
            out.push_str(t.text.as_deref().unwrap_or_default())
        }
        Value::Typed(t) => fmt_v(out, &t.value, verb),
        Value::List(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                fmt_v(out, e, verb);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, e)) in sorted(m).enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                fmt_scalar(out, &Value::String(k.as_str().into()), verb, &Spec::default());
                out.push(':');
                fmt_v(out, e, verb);
            }
            out.push(']');
        }
        Value::Struct(s) => {
            out.push('{');
            for (i, (_, e)) in s.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                fmt_v(out, e, verb);
            }
            out.push('}');
        }
        scalar => fmt_scalar(out, scalar, verb, &Spec::default()),
    }
}

/// Flags, width and precision of one printf directive.
#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    sharp: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

fn bad_verb(out: &mut String, v: &Value, verb: char) {
    match v {
        Value::Missing | Value::Nil => {
            let _ = write!(out, "%!{verb}(<nil>)");
        }
        v => {
            let _ = write!(out, "%!{verb}({}={})", type_name(v), sprint_one(v));
        }
    }
}

fn fmt_scalar(out: &mut String, v: &Value, verb: char, spec: &Spec) {
    let start = out.len();
    match (v, verb) {
        (Value::Missing | Value::Nil, 'v') => out.push_str("<nil>"),
        (Value::Bool(b), 'v' | 't') => out.push_str(if *b { "true" } else { "false" }),
        (Value::Int(i), 'v' | 'd') => {
            let digits = i.unsigned_abs().to_string();
            let digits = match spec.prec {
                Some(p) if p > digits.len() => "0".repeat(p - digits.len()) + &digits,
                _ => digits,
            };
            push_signed(out, *i < 0, &digits, spec);
        }
        (Value::Int(i), 'x' | 'X' | 'o' | 'b') => {
            let u = i.unsigned_abs();
            let digits = match verb {
                'x' => format!("{u:x}"),
                'X' => format!("{u:X}"),
                'o' => format!("{u:o}"),
                _ => format!("{u:b}"),
            };
            push_signed(out, *i < 0, &digits, spec);
        }
        (Value::Int(i), 'c' | 'q' | 'U') => {
            let c = u32::try_from(*i).ok().and_then(char::from_u32).unwrap_or('\u{fffd}');
            match verb {
                'c' => out.push(c),
                'q' => {
                    let _ = write!(out, "'{}'", quote_inner(&c.to_string(), '\''));
                }
                _ => {
                    let _ = write!(out, "U+{:04X}", u32::from(c));
                }
            }
        }
        (Value::Float(f), 'v' | 'g' | 'G' | 'e' | 'E' | 'f' | 'F') => {
            let s = format_float(*f, verb, spec.prec);
            let (neg, digits) = match s.strip_prefix('-') {
                Some(d) => (true, d.to_string()),
                None => (false, s),
            };
            push_signed(out, neg, &digits, spec);
        }
        (Value::String(s), 'v' | 's') => match spec.prec {
            Some(p) => out.extend(s.chars().take(p)),
            None => out.push_str(s),
        },
        (Value::String(s), 'q') => {
            let _ = write!(out, "\"{}\"", quote_inner(s, '"'));
        }
        (Value::String(s), 'x' | 'X') => {
            for b in s.bytes() {
                let _ = if verb == 'x' {
                    write!(out, "{b:02x}")
                } else {
                    write!(out, "{b:02X}")
                };
            }
        }
        (v, verb) => bad_verb(out, v, verb),
    }
    pad(out, start, spec);
}

fn push_signed(out: &mut String, neg: bool, digits: &str, spec: &Spec) {
    let sign = if neg {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    let width = spec.width.unwrap_or(0);
    out.push_str(sign);
    // Zero padding goes between the sign and the digits.
    if spec.zero && !spec.minus && width > sign.len() + digits.len() {
        out.push_str(&"0".repeat(width - sign.len() - digits.len()));
    }
    out.push_str(digits);
}

fn pad(out: &mut String, start: usize, spec: &Spec) {
    let Some(width) = spec.width else { return };
    let len = out[start..].chars().count();
    if len >= width {
        return;
    }
    let fill = " ".repeat(width - len);
    if spec.minus {
        out.push_str(&fill);
    } else {
        out.insert_str(start, &fill);
    }
}

/// Escapes like Go's `strconv.Quote` (without the surrounding quotes).
fn quote_inner(s: &str, quote: char) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Shortest decimal digits and exponent of `f` (which must be finite, non-negative).
fn shortest(f: f64) -> (String, i32) {
    let s = format!("{f:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    (mant.replace('.', ""), exp.parse().unwrap_or(0))
}

/// `d.ddde±XX` with Go's two-digit minimum exponent.
fn sci(digits: &str, exp: i32, upper: bool) -> String {
    let (first, rest) = digits.split_at(1.min(digits.len()));
    let dot = if rest.is_empty() { "" } else { "." };
    let e = if upper { 'E' } else { 'e' };
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{first}{dot}{rest}{e}{sign}{:02}", exp.unsigned_abs())
}

/// Go's float formatting for `%v %g %e %f` and friends.
fn format_float(f: f64, verb: char, prec: Option<usize>) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let a = f.abs();
    let prec = prec.map(|p| p.min(MAX_WIDTH));
    let body = match verb {
        'e' | 'E' => {
            let p = prec.unwrap_or(6);
            let s = format!("{a:.p$e}");
            let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
            let exp: i32 = exp.parse().unwrap_or(0);
            let e = if verb == 'E' { 'E' } else { 'e' };
            format!("{mant}{e}{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs())
        }
        'f' | 'F' => format!("{a:.*}", prec.unwrap_or(6)),
        _ => {
            let upper = verb == 'G';
            let (digits, exp) = match prec {
                None => shortest(a),
                Some(p) => {
                    let s = format!("{a:.*e}", p.max(1) - 1);
                    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
                    let d = mant.replace('.', "");
                    (d.trim_end_matches('0').to_string(), exp.parse().unwrap_or(0))
                }
            };
            let digits = if digits.is_empty() { "0".to_string() } else { digits };
            let eprec = match prec {
                None => 6,
                Some(p) => {
                    let nd = i32::try_from(digits.len()).unwrap_or(i32::MAX);
                    let p = i32::try_from(p.max(1)).unwrap_or(i32::MAX);
                    if p > nd && nd > exp {
                        nd
                    } else {
                        p
                    }
                }
            };
            if a == 0.0 {
                "0".to_string()
            } else if exp < -4 || exp >= eprec {
                sci(&digits, exp, upper)
            } else {
                plain(&digits, exp)
            }
        }
    };
    format!("{sign}{body}")
}

/// Positional notation of `0.digits × 10^(exp+1)`.
fn plain(digits: &str, exp: i32) -> String {
    if exp < 0 {
        let zeros = "0".repeat(usize::try_from(-exp - 1).unwrap_or(0));
        format!("0.{zeros}{digits}")
    } else {
        let int_len = usize::try_from(exp + 1).unwrap_or(0);
        if digits.len() <= int_len {
            format!("{digits}{}", "0".repeat(int_len - digits.len()))
        } else {
            format!("{}.{}", &digits[..int_len], &digits[int_len..])
        }
    }
}

/// `fmt.Sprintf` for the verbs templates use.
fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args_iter = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars>| {
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some((n.unwrap_or(0) * 10 + d as usize).min(MAX_WIDTH));
                chars.next();
            }
            n
        };
        spec.width = number(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.prec = Some(number(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args_iter.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let start = out.len();
        let text = match arg {
            Value::Typed(t) => t.text.as_deref(),
            _ => None,
        };
        match (strip(arg), verb) {
            (_, 'T') => out.push_str(type_name(arg)),
            (_, 'v' | 's') if text.is_some() => out.push_str(text.unwrap_or_default()),
            (_, 'q') if text.is_some() => {
                let _ = write!(out, "\"{}\"", quote_inner(text.unwrap_or_default(), '"'));
            }
            (v @ (Value::List(_) | Value::Map(_) | Value::Struct(_)), verb) => fmt_v(&mut out, v, verb),
            (v, verb) => {
                fmt_scalar(&mut out, v, verb, &spec);
                continue;
            }
        }
        pad(&mut out, start, &spec);
    }
    let extra: Vec<&Value> = args_iter.collect();
    if !extra.is_empty() {
        out.push_str("%!(EXTRA ");
        let parts: Vec<String> = extra
            .iter()
            .map(|v| format!("{}={}", type_name(v), sprint_one(v)))
            .collect();
        out.push_str(&parts.join(", "));
        out.push(')');
    }
    out
}

/// Go's `template.HTMLEscapeString`.
fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 || c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
fn urlquery(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Go's `json.Marshal`: map keys sorted, struct fields in order, `<>&`
/// escaped, no spaces.
pub fn to_json(v: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v);
    out
}

fn write_json(out: &mut String, v: &Value) {
    match v {
        Value::Missing | Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&json_float(*f)),
        Value::String(s) => json_string(out, s),
        Value::List(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, e);
            }
            out.push(']');
        }
        Value::Map(m) => json_object(out, sorted(m)),
        Value::Struct(s) => json_object(out, s.iter()),
        Value::Typed(t) => out.push_str(&t.json),
    }
}

fn json_object<'a>(out: &mut String, entries: impl Iterator<Item = &'a (String, Value)>) {
    out.push('{');
    for (i, (k, e)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(out, k);
        out.push(':');
        write_json(out, e);
    }
    out.push('}');
}

/// Go's float64 JSON encoding ('f' format unless tiny or huge).
fn json_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".to_string();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let (digits, exp) = shortest(a);
        let s = sci(&digits, exp, false);
        // Go trims the exponent's leading zero: 1e-07 becomes 1e-7.
        let s = s.replace("e-0", "e-").replace("e+0", "e+");
        return if f < 0.0 { format!("-{s}") } else { s };
    }
    if a == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let (digits, exp) = shortest(a);
    let s = plain(&digits, exp);
    if f < 0.0 {
        format!("-{s}")
    } else {
        s
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (UTC).
fn civil_date(days: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Ollama's `ToolProperty.ToTypeScriptType`; anything but a tool property is `any`.
fn typescript_type(v: &Value) -> String {
    let Value::Struct(fields) = strip(v) else {
        return "any".to_string();
    };
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| strip(v));
    if let Some(Value::List(any_of)) = get("AnyOf") {
        if !any_of.is_empty() {
            let parts: Vec<String> = any_of.iter().map(typescript_type).collect();
            return parts.join(" | ");
        }
    }
    let types: Vec<&str> = match get("Type") {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|t| match t {
                Value::String(s) => Some(&**s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if types.is_empty() {
        return "any".to_string();
    }
    let parts: Vec<&str> = types
        .iter()
        .map(|t| match *t {
            "string" => "string",
            "number" | "integer" => "number",
            "boolean" => "boolean",
            "array" => "any[]",
            "object" => "Record<string, any>",
            "null" => "null",
            _ => "any",
        })
        .collect();
    parts.join(" | ")
}
