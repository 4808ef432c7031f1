//! Ollama's Modelfile format (`parser/parser.go`): parsing and rendering back.
//!
//! One instruction per line (case-insensitive), `#` comments, values bare (rest of the line,
//! trimmed), `"quoted"` or `"""triple-quoted"""` (both may span lines; the content between the
//! quotes is kept verbatim). The parser follows Ollama's state machine, including its quirks (a
//! value ends at the first line break where it is not inside an open quote), with clearer
//! errors. Rendering picks, for each value, a form that parses back to the same text.

use std::fmt;

/// One Modelfile instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `FROM <model name or path>`.
    From(String),
    /// `PARAMETER <name> <value>` (the value is kept as text; see `options::parse_parameter`).
    Parameter {
        /// Option name.
        name: String,
        /// Raw value.
        value: String,
    },
    /// `TEMPLATE <text>`.
    Template(String),
    /// `SYSTEM <text>`.
    System(String),
    /// `ADAPTER <path>`.
    Adapter(String),
    /// `LICENSE <text>` (repeatable).
    License(String),
    /// `MESSAGE <role> <content>`.
    Message {
        /// `system`, `user` or `assistant`.
        role: String,
        /// Message text.
        content: String,
    },
}

/// A parsed Modelfile: its instructions in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modelfile {
    /// The instructions, in order.
    pub commands: Vec<Command>,
}

/// Why a Modelfile could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelfileError {
    /// An instruction herd does not know.
    #[error(
        "(line {line}): unknown command {command:?}: command must be one of \"from\", \"license\", \"template\", \"system\", \"adapter\", \"parameter\", or \"message\""
    )]
    UnknownCommand {
        /// 1-based line.
        line: usize,
        /// The instruction as written.
        command: String,
    },
    /// An Ollama instruction herd does not implement (`DRAFT`, `RENDERER`, `PARSER`, `REQUIRES`).
    #[error("(line {line}): the {command} command is not supported by herd")]
    UnsupportedCommand {
        /// 1-based line.
        line: usize,
        /// The instruction, upper-cased.
        command: String,
    },
    /// A `MESSAGE` role other than system, user or assistant.
    #[error("(line {line}): message role must be one of \"system\", \"user\", or \"assistant\" (found {role:?})")]
    InvalidRole {
        /// 1-based line.
        line: usize,
        /// The role as written.
        role: String,
    },
    /// An instruction without its value.
    #[error("(line {line}): {command} needs a value")]
    MissingValue {
        /// 1-based line.
        line: usize,
        /// What is missing (`FROM`, `PARAMETER num_ctx`, `MESSAGE`...).
        command: String,
    },
    /// A character that cannot appear where it was found.
    #[error("(line {line}): unexpected {found:?} in {place}")]
    UnexpectedCharacter {
        /// 1-based line.
        line: usize,
        /// The character.
        found: char,
        /// Where: `a command name`, `a parameter name`, `a message role`.
        place: &'static str,
    },
    /// A `"` or `"""` that is never closed (Ollama: `unexpected EOF`).
    #[error("unexpected EOF: the quoted value of {command} starting on line {line} is never closed")]
    UnterminatedQuote {
        /// Line where the value starts.
        line: usize,
        /// The instruction.
        command: String,
    },
    /// No `FROM` instruction.
    #[error("no FROM line")]
    MissingFrom,
    /// The bytes are neither UTF-8 nor UTF-16 with a byte-order mark.
    #[error("the Modelfile is not valid UTF-8 (or UTF-16 with a byte-order mark)")]
    InvalidEncoding,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Nil,
    Name,
    Value,
    Parameter,
    Message,
    Comment,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    From,
    Parameter,
    Template,
    System,
    Adapter,
    License,
    Message,
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_newline(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// Characters the parser keeps in a value: Ollama drops unprintable ones; herd drops only
/// control characters (tabs and line breaks inside values are handled separately).
fn kept(c: char) -> bool {
    !c.is_control()
}

/// Ollama's `unquote`: strips `"""…"""` or `"…"`; `None` while a quote is still open.
fn unquote(s: &str) -> Option<&str> {
    if let Some(rest) = s.strip_prefix("\"\"\"") {
        return (s.len() >= 6 && s.ends_with("\"\"\"")).then(|| &rest[..rest.len() - 3]);
    }
    if let Some(rest) = s.strip_prefix('"') {
        return (s.len() >= 2 && s.ends_with('"')).then(|| &rest[..rest.len() - 1]);
    }
    Some(s)
}

/// Parses a Modelfile given as text (a leading byte-order mark is ignored).
pub fn parse_modelfile(text: &str) -> Result<Modelfile, ModelfileError> {
    Parser::default().run(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Parses a Modelfile given as bytes: UTF-8, or UTF-16 (LE or BE) with a byte-order mark, as
/// Ollama accepts.
pub fn parse_modelfile_bytes(bytes: &[u8]) -> Result<Modelfile, ModelfileError> {
    let utf16 = |rest: &[u8], be: bool| {
        if !rest.len().is_multiple_of(2) {
            return Err(ModelfileError::InvalidEncoding);
        }
        let units = rest.chunks_exact(2).map(|p| {
            let pair = [p[0], p[1]];
            if be {
                u16::from_be_bytes(pair)
            } else {
                u16::from_le_bytes(pair)
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|_| ModelfileError::InvalidEncoding)
    };
    let text = match bytes {
        [0xff, 0xfe, rest @ ..] => utf16(rest, false)?,
        [0xfe, 0xff, rest @ ..] => utf16(rest, true)?,
        _ => String::from_utf8(bytes.to_vec()).map_err(|_| ModelfileError::InvalidEncoding)?,
    };
    parse_modelfile(&text)
}

#[derive(Default)]
struct Parser {
    commands: Vec<Command>,
    buf: String,
    kind: Option<Kind>,
    label: String,
    param: String,
    role: String,
    line: usize,
    value_line: usize,
}

impl Parser {
    fn run(mut self, text: &str) -> Result<Modelfile, ModelfileError> {
        self.line = 1;
        let mut state = State::Nil;
        for c in text.chars() {
            let (mut next, keep) = self.transition(c, state)?;
            if next != state {
                match state {
                    State::Name => {
                        next = self.command(next)?;
                        if next == State::Value {
                            self.value_line = self.line;
                        }
                    }
                    State::Parameter => {
                        self.param = self.buf.clone();
                        self.label = format!("PARAMETER {}", self.param);
                        self.value_line = self.line;
                    }
                    State::Message => {
                        if !matches!(self.buf.as_str(), "system" | "user" | "assistant") {
                            return Err(ModelfileError::InvalidRole {
                                line: self.line,
                                role: self.buf.clone(),
                            });
                        }
                        self.role = self.buf.clone();
                        self.value_line = self.line;
                    }
                    State::Comment | State::Nil => {}
                    State::Value => {
                        if is_space(c) || unquote(self.buf.trim()).is_none() {
                            self.buf.push(c);
                            if c == '\n' {
                                self.line += 1;
                            }
                            continue;
                        }
                        self.finish()?;
                    }
                }
                self.buf.clear();
                state = next;
            }
            if c == '\n' {
                self.line += 1;
            }
            if let Some(k) = keep.filter(|&k| kept(k)) {
                self.buf.push(k);
            }
        }
        match state {
            State::Nil | State::Comment => {}
            State::Value => {
                if unquote(self.buf.trim()).is_none() {
                    return Err(ModelfileError::UnterminatedQuote {
                        line: self.value_line,
                        command: self.label.clone(),
                    });
                }
                self.finish()?;
            }
            State::Name => {
                self.command(State::Value)?;
                return Err(self.missing_value());
            }
            State::Parameter | State::Message => return Err(self.missing_value()),
        }
        if !self.commands.iter().any(|c| matches!(c, Command::From(_))) {
            return Err(ModelfileError::MissingFrom);
        }
        Ok(Modelfile {
            commands: self.commands,
        })
    }

    fn missing_value(&self) -> ModelfileError {
        ModelfileError::MissingValue {
            line: self.line,
            command: self.label.clone(),
        }
    }

    /// The next state for `c` in `state`, and the character to keep (Ollama's
    /// `parseRuneForState`, plus tolerance for extra blanks before a parameter name or role).
    fn transition(&self, c: char, state: State) -> Result<(State, Option<char>), ModelfileError> {
        Ok(match state {
            State::Nil => match c {
                '#' => (State::Comment, None),
                c if is_space(c) || is_newline(c) => (State::Nil, None),
                c => (State::Name, Some(c)),
            },
            State::Name => match c {
                c if c.is_ascii_alphabetic() => (State::Name, Some(c)),
                c if is_space(c) => (State::Value, None),
                c if is_newline(c) => {
                    self.command_kind()?;
                    return Err(ModelfileError::MissingValue {
                        line: self.line,
                        command: self.buf.to_ascii_uppercase(),
                    });
                }
                c => {
                    return Err(ModelfileError::UnknownCommand {
                        line: self.line,
                        command: format!("{}{c}", self.buf),
                    })
                }
            },
            State::Value => match c {
                c if is_newline(c) || is_space(c) => (State::Nil, Some(c)),
                c => (State::Value, Some(c)),
            },
            State::Parameter | State::Message => {
                let (place, label) = if state == State::Parameter {
                    ("a parameter name", "PARAMETER")
                } else {
                    ("a message role", "MESSAGE")
                };
                let name_char = if state == State::Parameter {
                    c.is_ascii_alphanumeric() || c == '_'
                } else {
                    c.is_ascii_alphabetic()
                };
                match c {
                    c if name_char => (state, Some(c)),
                    c if is_space(c) && self.buf.is_empty() => (state, None),
                    c if is_space(c) => (State::Value, None),
                    c if is_newline(c) => {
                        let command = if self.buf.is_empty() {
                            label.to_string()
                        } else {
                            format!("{label} {}", self.buf)
                        };
                        return Err(ModelfileError::MissingValue {
                            line: self.line,
                            command,
                        });
                    }
                    found => {
                        return Err(ModelfileError::UnexpectedCharacter {
                            line: self.line,
                            found,
                            place,
                        })
                    }
                }
            }
            State::Comment => match c {
                c if is_newline(c) => (State::Nil, None),
                _ => (State::Comment, None),
            },
        })
    }

    fn command_kind(&self) -> Result<Kind, ModelfileError> {
        let name = self.buf.to_ascii_lowercase();
        Ok(match name.as_str() {
            "from" => Kind::From,
            "parameter" => Kind::Parameter,
            "template" => Kind::Template,
            "system" => Kind::System,
            "adapter" => Kind::Adapter,
            "license" => Kind::License,
            "message" => Kind::Message,
            "draft" | "renderer" | "parser" | "requires" => {
                return Err(ModelfileError::UnsupportedCommand {
                    line: self.line,
                    command: name.to_ascii_uppercase(),
                })
            }
            _ => {
                return Err(ModelfileError::UnknownCommand {
                    line: self.line,
                    command: self.buf.clone(),
                })
            }
        })
    }

    /// Leaves the command-name state: records the command and picks the next state.
    fn command(&mut self, next: State) -> Result<State, ModelfileError> {
        let kind = self.command_kind()?;
        self.kind = Some(kind);
        self.label = self.buf.to_ascii_uppercase();
        Ok(match kind {
            Kind::Parameter => State::Parameter,
            Kind::Message => State::Message,
            _ => next,
        })
    }

    fn finish(&mut self) -> Result<(), ModelfileError> {
        let value = unquote(self.buf.trim()).unwrap_or_default().to_string();
        let command = match self.kind {
            Some(Kind::From) => Command::From(value),
            Some(Kind::Parameter) => Command::Parameter {
                name: std::mem::take(&mut self.param),
                value,
            },
            Some(Kind::Template) => Command::Template(value),
            Some(Kind::System) => Command::System(value),
            Some(Kind::Adapter) => Command::Adapter(value),
            Some(Kind::License) => Command::License(value),
            Some(Kind::Message) => Command::Message {
                role: std::mem::take(&mut self.role),
                content: value,
            },
            None => return Err(self.missing_value()),
        };
        self.commands.push(command);
        self.kind = None;
        Ok(())
    }
}

/// What the parser reads back from `text` written as a value: `None` when the value would end
/// early (at a line break where no quote is open) or never end.
fn read_back(text: &str) -> Option<String> {
    let mut buf = String::new();
    for c in text.chars() {
        if is_newline(c) && unquote(buf.trim()).is_some() {
            return None;
        }
        if is_newline(c) || is_space(c) || kept(c) {
            buf.push(c);
        }
    }
    unquote(buf.trim()).map(str::to_string)
}

/// Writes `value` in a form that parses back to it: triple quotes first when `prefer_quotes`
/// (multi-line text), otherwise bare when possible, as Ollama does for short values.
fn quote(value: &str, prefer_quotes: bool) -> String {
    let bare = value.to_string();
    let single = format!("\"{value}\"");
    let triple = format!("\"\"\"{value}\"\"\"");
    let candidates = if prefer_quotes {
        [triple.clone(), single, bare]
    } else if value.contains('"') {
        [bare, triple.clone(), single]
    } else {
        [bare, single, triple.clone()]
    };
    candidates
        .into_iter()
        .find(|c| !c.is_empty() && read_back(c).as_deref() == Some(value))
        .unwrap_or(triple)
}

impl fmt::Display for Command {
    /// One instruction, as it would appear in a Modelfile (multi-line values span lines).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::From(v) => write!(f, "FROM {}", quote(v, false)),
            Command::Parameter { name, value } => {
                write!(f, "PARAMETER {name} {}", quote(value, false))
            }
            Command::Template(v) => write!(f, "TEMPLATE {}", quote(v, true)),
            Command::System(v) => write!(f, "SYSTEM {}", quote(v, true)),
            Command::Adapter(v) => write!(f, "ADAPTER {}", quote(v, false)),
            Command::License(v) => write!(f, "LICENSE {}", quote(v, true)),
            Command::Message { role, content } => {
                write!(f, "MESSAGE {role} {}", quote(content, true))
            }
        }
    }
}

impl fmt::Display for Modelfile {
    /// Every instruction on its own line(s), each followed by a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for command in &self.commands {
            writeln!(f, "{command}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(v: &str) -> Command {
        Command::From(v.into())
    }

    fn param(n: &str, v: &str) -> Command {
        Command::Parameter {
            name: n.into(),
            value: v.into(),
        }
    }

    fn message(r: &str, c: &str) -> Command {
        Command::Message {
            role: r.into(),
            content: c.into(),
        }
    }

    fn commands(text: &str) -> Vec<Command> {
        parse_modelfile(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .commands
    }

    const LLAMA_TEMPLATE: &str = "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>";

    #[test]
    fn ollama_parse_file() {
        let input = format!(
            "\nFROM model1\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\nTEMPLATE \"\"\"{LLAMA_TEMPLATE}\"\"\"    \n"
        );
        assert_eq!(
            commands(&input),
            vec![
                from("model1"),
                Command::Adapter("adapter1".into()),
                Command::License("MIT".into()),
                param("param1", "value1"),
                param("param2", "value2"),
                Command::Template(LLAMA_TEMPLATE.into()),
            ]
        );
    }

    #[test]
    fn ollama_trim_space() {
        let input = format!(
            "\nFROM \"     model 1\"\nADAPTER      adapter3\nLICENSE \"MIT       \"\nPARAMETER param1        value1\nPARAMETER param2    value2\nTEMPLATE \"\"\"   {LLAMA_TEMPLATE}   \"\"\"    \n"
        );
        assert_eq!(
            commands(&input),
            vec![
                from("     model 1"),
                Command::Adapter("adapter3".into()),
                Command::License("MIT       ".into()),
                param("param1", "value1"),
                param("param2", "value2"),
                Command::Template(format!("   {LLAMA_TEMPLATE}   ")),
            ]
        );
    }

    #[test]
    fn ollama_from_cases() {
        let cases: &[(&str, Vec<Command>)] = &[
            ("FROM \"FOO  BAR  \"", vec![from("FOO  BAR  ")]),
            (
                "FROM \"FOO BAR\"\nPARAMETER param1 value1",
                vec![from("FOO BAR"), param("param1", "value1")],
            ),
            ("FROM     FOOO BAR    ", vec![from("FOOO BAR")]),
            ("FROM /what/is/the path ", vec![from("/what/is/the path")]),
            ("FROM foo", vec![from("foo")]),
            ("FROM /path/to/model/fp16.bin", vec![from("/path/to/model/fp16.bin")]),
            (
                "FROM llama3:7b-instruct-q4_K_M",
                vec![from("llama3:7b-instruct-q4_K_M")],
            ),
            (
                "PARAMETER param1 value1\nFROM foo",
                vec![param("param1", "value1"), from("foo")],
            ),
            (
                "PARAMETER what the \nFROM lemons make lemonade ",
                vec![param("what", "the"), from("lemons make lemonade")],
            ),
            ("from foo\nFrOm bar", vec![from("foo"), from("bar")]),
        ];
        for (input, want) in cases {
            assert_eq!(&commands(input), want, "{input:?}");
        }
        assert_eq!(parse_modelfile(""), Err(ModelfileError::MissingFrom));
        assert_eq!(
            parse_modelfile("PARAMETER param1 value1"),
            Err(ModelfileError::MissingFrom)
        );
        assert_eq!(parse_modelfile("# FROM x\n"), Err(ModelfileError::MissingFrom));
        assert_eq!(ModelfileError::MissingFrom.to_string(), "no FROM line");
    }

    #[test]
    fn missing_values() {
        for input in [
            "FROM foo\nPARAMETER param1\n",
            "FROM foo\nPARAMETER param1",
            "FROM foo\nMESSAGE system\n",
            "FROM foo\nMESSAGE system",
            "FROM",
            "FROM\nx",
            "FROM foo\nPARAMETER\n",
        ] {
            let err = parse_modelfile(input).unwrap_err();
            assert!(matches!(err, ModelfileError::MissingValue { .. }), "{input:?}: {err}");
        }
        let err = parse_modelfile("FROM foo\nPARAMETER num_ctx\n").unwrap_err();
        assert_eq!(err.to_string(), "(line 2): PARAMETER num_ctx needs a value");
    }

    #[test]
    fn bad_commands_name_the_command_and_line() {
        let err = parse_modelfile("\nFROM foo\nBADCOMMAND param1 value1\n").unwrap_err();
        assert_eq!(
            err,
            ModelfileError::UnknownCommand {
                line: 3,
                command: "BADCOMMAND".into()
            }
        );
        assert!(
            err.to_string().starts_with("(line 3): unknown command \"BADCOMMAND\""),
            "{err}"
        );
        let err = parse_modelfile("FROM foo\nFROM: bar\n").unwrap_err();
        assert!(matches!(err, ModelfileError::UnknownCommand { line: 2, .. }), "{err}");
        let err = parse_modelfile("FROM foo\nREQUIRES 0.14.0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "(line 2): the REQUIRES command is not supported by herd"
        );
        let err = parse_modelfile("FROM foo\nPARAMETER num-ctx 4\n").unwrap_err();
        assert!(
            matches!(err, ModelfileError::UnexpectedCharacter { found: '-', .. }),
            "{err}"
        );
    }

    #[test]
    fn ollama_messages() {
        assert_eq!(
            commands("\nFROM foo\nMESSAGE system You are a file parser. Always parse things.\n"),
            vec![
                from("foo"),
                message("system", "You are a file parser. Always parse things.")
            ]
        );
        assert_eq!(
            commands("\nFROM foo\nMESSAGE system You are a file parser. Always parse things."),
            vec![
                from("foo"),
                message("system", "You are a file parser. Always parse things.")
            ]
        );
        assert_eq!(
            commands("FROM foo\nMESSAGE system A.\nMESSAGE user Hey there!\nMESSAGE assistant Hello!\n"),
            vec![
                from("foo"),
                message("system", "A."),
                message("user", "Hey there!"),
                message("assistant", "Hello!")
            ]
        );
        assert_eq!(
            commands("\nFROM foo\nMESSAGE system \"\"\"\nYou are a multiline file parser. Always parse things.\n\"\"\"\n\t\t\t"),
            vec![from("foo"), message("system", "\nYou are a multiline file parser. Always parse things.\n")]
        );
        let err = parse_modelfile("\nFROM foo\nMESSAGE badguy I'm a bad guy!\n").unwrap_err();
        assert!(matches!(err, ModelfileError::InvalidRole { line: 3, .. }), "{err}");
        assert!(err
            .to_string()
            .contains("message role must be one of \"system\", \"user\", or \"assistant\""));
        assert!(parse_modelfile("FROM foo\nMESSAGE User hi\n").is_err());
        // Extra blanks before a role or parameter name are tolerated.
        assert_eq!(
            commands("FROM foo\nMESSAGE  user  hi\nPARAMETER \t top_k 4"),
            vec![from("foo"), message("user", "hi"), param("top_k", "4")]
        );
    }

    #[test]
    fn ollama_quoted() {
        let ok: &[(&str, Command)] = &[
            (
                "\nFROM foo\nSYSTEM \"\"\"\nThis is a\nmultiline system.\n\"\"\"\n\t\t\t",
                Command::System("\nThis is a\nmultiline system.\n".into()),
            ),
            (
                "\nFROM foo\nSYSTEM \"\"\"\nThis is a\nmultiline system.\"\"\"\n\t\t\t",
                Command::System("\nThis is a\nmultiline system.".into()),
            ),
            (
                "\nFROM foo\nSYSTEM \"\"\"This is a\nmultiline system.\"\"\"\n\t\t\t",
                Command::System("This is a\nmultiline system.".into()),
            ),
            (
                "\nFROM foo\nSYSTEM \"\"\"This is a multiline system.\"\"\"\n\t\t\t",
                Command::System("This is a multiline system.".into()),
            ),
            (
                "\nFROM foo\nSYSTEM \"\"\"\nThis is a multiline system with \"quotes\".\n\"\"\"\n",
                Command::System("\nThis is a multiline system with \"quotes\".\n".into()),
            ),
            ("\nFROM foo\nSYSTEM \"\"\"\"\"\"\n", Command::System(String::new())),
            ("\nFROM foo\nSYSTEM \"\"\n", Command::System(String::new())),
            ("\nFROM foo\nSYSTEM \"'\"\n", Command::System("'".into())),
            (
                "\nFROM foo\nSYSTEM \"\"\"''\"'\"\"'\"\"'\"'''''\"\"'\"\"'\"\"\"\n",
                Command::System("''\"'\"\"'\"\"'\"'''''\"\"'\"\"'".into()),
            ),
            (
                "\nFROM foo\nTEMPLATE \"\"\"\n{{ .Prompt }}\n\"\"\"",
                Command::Template("\n{{ .Prompt }}\n".into()),
            ),
            ("FROM foo\nSYSTEM \"two\nlines\"", Command::System("two\nlines".into())),
            (
                "FROM foo\r\nSYSTEM \"\"\"a\r\nb\"\"\"\r\n",
                Command::System("a\r\nb".into()),
            ),
        ];
        for (input, want) in ok {
            assert_eq!(commands(input), vec![from("foo"), want.clone()], "{input:?}");
        }
        for input in [
            "\nFROM foo\nSYSTEM \"\"\"This is a multiline system.\"\"\n\t\t\t",
            "\nFROM foo\nSYSTEM \"\n\t\t\t",
            "FROM foo\nTEMPLATE \"\"\"never closed\n\nat all",
            "FROM foo\nSYSTEM \"closed\" then text\n",
        ] {
            let err = parse_modelfile(input).unwrap_err();
            assert!(
                matches!(err, ModelfileError::UnterminatedQuote { .. }),
                "{input:?}: {err}"
            );
            assert!(err.to_string().starts_with("unexpected EOF"), "{err}");
        }
        let err = parse_modelfile("FROM foo\n\nTEMPLATE \"\"\"x\ny").unwrap_err();
        assert_eq!(
            err,
            ModelfileError::UnterminatedQuote {
                line: 3,
                command: "TEMPLATE".into()
            }
        );
    }

    #[test]
    fn ollama_parameters() {
        let cases = [
            ("numa true", "numa", "true"),
            ("num_ctx 1", "num_ctx", "1"),
            ("top_p 1.0", "top_p", "1.0"),
            ("min_p 0.05", "min_p", "0.05"),
            ("penalize_newline true", "penalize_newline", "true"),
            ("stop ### User:", "stop", "### User:"),
            ("stop ### User: ", "stop", "### User:"),
            ("stop \"### User:\"", "stop", "### User:"),
            ("stop \"### User: \"", "stop", "### User: "),
            ("stop \"\"\"### User:\"\"\"", "stop", "### User:"),
            ("stop \"\"\"### User:\n\"\"\"", "stop", "### User:\n"),
            ("stop <|endoftext|>", "stop", "<|endoftext|>"),
            ("stop <|eot_id|>", "stop", "<|eot_id|>"),
            ("stop </s>", "stop", "</s>"),
        ];
        for (line, name, value) in cases {
            assert_eq!(
                commands(&format!("FROM foo\nPARAMETER {line}\n")),
                vec![from("foo"), param(name, value)],
                "{line:?}"
            );
        }
    }

    #[test]
    fn comments_and_blank_lines() {
        assert_eq!(commands("\n# comment\nFROM foo\n\t"), vec![from("foo")]);
        assert_eq!(
            commands("  # indented comment\n\n\nFROM foo # not a comment\n"),
            vec![from("foo # not a comment")]
        );
        assert_eq!(commands("\u{feff}FROM foo"), vec![from("foo")]);
    }

    #[test]
    fn control_characters_are_dropped() {
        assert_eq!(
            commands("FROM foo\nSYSTEM a\u{7}b\u{0}c\n"),
            vec![from("foo"), Command::System("abc".into())]
        );
        // Non-ASCII text is kept, including zero-width joiners.
        assert_eq!(
            commands("FROM foo\nSYSTEM 👩\u{200d}💻 héllo"),
            vec![from("foo"), Command::System("👩\u{200d}💻 héllo".into())]
        );
    }

    #[test]
    fn utf16_input() {
        let text = "FROM bob\nPARAMETER param1 1\nPARAMETER param2 4096\nSYSTEM You are a utf16 file.\n";
        let want = vec![
            from("bob"),
            param("param1", "1"),
            param("param2", "4096"),
            Command::System("You are a utf16 file.".into()),
        ];
        let mut le = vec![0xff, 0xfe];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(parse_modelfile_bytes(&le).unwrap().commands, want);
        let mut be = vec![0xfe, 0xff];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(parse_modelfile_bytes(&be).unwrap().commands, want);
        assert_eq!(parse_modelfile_bytes(text.as_bytes()).unwrap().commands, want);
        assert_eq!(
            parse_modelfile_bytes(&[0xff, 0xfe, 0x00]),
            Err(ModelfileError::InvalidEncoding)
        );
        assert_eq!(
            parse_modelfile_bytes(&[b'F', 0xff]),
            Err(ModelfileError::InvalidEncoding)
        );
    }

    #[test]
    fn renders_like_ollama() {
        let m = Modelfile {
            commands: vec![
                from("/root/.ollama/models/blobs/sha256-abc"),
                Command::Template("{{ .Prompt }}".into()),
                Command::System("You are \"helpful\".\nBe brief.".into()),
                param("stop", "<end_of_turn>"),
                param("stop", "### User: "),
                param("temperature", "1"),
                message("user", "hi"),
                Command::License("MIT".into()),
            ],
        };
        assert_eq!(
            m.to_string(),
            "FROM /root/.ollama/models/blobs/sha256-abc\n\
             TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n\
             SYSTEM \"\"\"You are \"helpful\".\nBe brief.\"\"\"\n\
             PARAMETER stop <end_of_turn>\n\
             PARAMETER stop \"### User: \"\n\
             PARAMETER temperature 1\n\
             MESSAGE user \"\"\"hi\"\"\"\n\
             LICENSE \"\"\"MIT\"\"\"\n"
        );
    }

    #[test]
    fn ollama_format_round_trips() {
        let cases = [
            "\nFROM foo\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\nTEMPLATE template1\nMESSAGE system You are a file parser. Always parse things.\nMESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n",
            "\nFROM foo\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\nTEMPLATE template1\nMESSAGE system \"\"\"\nYou are a store greeter. Always respond with \"Hello!\".\n\"\"\"\nMESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n",
            "\nFROM foo\nADAPTER adapter1\nLICENSE \"\"\"\nVery long and boring legal text.\nBlah blah blah.\n\"Oh look, a quote!\"\n\"\"\"\n\nPARAMETER param1 value1\nPARAMETER param2 value2\nTEMPLATE template1\nMESSAGE system \"\"\"\nYou are a store greeter. Always respond with \"Hello!\".\n\"\"\"\nMESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n",
            "\nFROM foo\nSYSTEM \"\"\n",
        ];
        for input in cases {
            let first = parse_modelfile(input).unwrap();
            let second = parse_modelfile(&first.to_string()).unwrap();
            assert_eq!(first, second, "{input:?}");
        }
    }

    #[test]
    fn awkward_values_round_trip() {
        let values = [
            "",
            " ",
            "plain",
            " leading",
            "trailing ",
            "\"quoted\"",
            "\"",
            "\"\"",
            "\"\"\"",
            "say \"hi\"",
            "ends with quote\"",
            "\nstarts with newline",
            "ends with newline\n",
            "x\"\n\"y",
            "tab\there",
            "\ttab first",
            "line\r\nbreak",
            "{{ if .System }}\"{{ .System }}\"{{ end }}\n\"\"\"",
            "# not a comment",
            "ünïcödé ✓",
        ];
        for v in values {
            for command in [
                from(v),
                param("stop", v),
                Command::Template(v.into()),
                Command::System(v.into()),
                Command::Adapter(v.into()),
                Command::License(v.into()),
                message("assistant", v),
            ] {
                let m = Modelfile {
                    commands: vec![from("base"), command],
                };
                let text = m.to_string();
                let back = parse_modelfile(&text).unwrap_or_else(|e| panic!("{v:?} rendered as {text:?}: {e}"));
                assert_eq!(back, m, "{v:?} rendered as {text:?}");
            }
        }
    }

    #[test]
    fn unrepresentable_values_still_render() {
        // A line (other than the last) ending in `"""`, or in `"` for every form, cannot be
        // written in Modelfile syntax at all (Ollama has the same limit); it renders
        // triple-quoted, as Ollama would.
        for v in ["a\"\"\"\nb", "a\"\"\"\n\"\"\"b", "\"\"\"\n", "a\"\"\" \nb"] {
            assert_eq!(Command::System(v.into()).to_string(), format!("SYSTEM \"\"\"{v}\"\"\""));
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let pieces = [
            "FROM",
            "from",
            " ",
            "\t",
            "\n",
            "\r",
            "\"",
            "\"\"\"",
            "#",
            "x",
            "PARAMETER",
            "MESSAGE",
            "user",
            "é",
            "\u{0}",
            ":",
        ];
        // Every sequence of up to 4 pieces.
        let mut level = vec![String::new()];
        let mut all = vec![String::new()];
        for _ in 0..4 {
            level = level
                .iter()
                .flat_map(|prefix| pieces.iter().map(move |p| format!("{prefix}{p}")))
                .collect();
            all.extend(level.iter().cloned());
        }
        assert!(all.len() > 65_536);
        for input in &all {
            if let Ok(m) = parse_modelfile(input) {
                // Whatever parses renders to something that parses to the same commands.
                assert_eq!(parse_modelfile(&m.to_string()).as_ref(), Ok(&m), "{input:?}");
            }
        }
    }
}
