//! `think`: the request's setting, and the reasoning separated from the answer by the tags
//! the template puts around `.Thinking` (Ollama's `thinking.InferTags` and parser).

use serde_json::Value;

use crate::error::HerdError;

/// What the request asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Think {
    /// Whether to reason first.
    pub enabled: bool,
    /// `low`, `medium` or `high` (`max` is read as `high`); empty for a plain `true`/`false`.
    pub level: String,
}

impl Think {
    /// Parses `think`: a bool or `"low" | "medium" | "high" | "max"`; anything else is Ollama's
    /// 400 `invalid think value`.
    pub fn parse(value: Option<&Value>) -> Result<Option<Self>, HerdError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(enabled)) => Ok(Some(Self {
                enabled: *enabled,
                level: String::new(),
            })),
            Some(Value::String(level)) => match level.as_str() {
                "low" | "medium" | "high" => Ok(Some(Self {
                    enabled: true,
                    level: level.clone(),
                })),
                "max" => Ok(Some(Self {
                    enabled: true,
                    level: "high".into(),
                })),
                _ => Err(invalid(value)),
            },
            Some(_) => Err(invalid(value)),
        }
    }
}

fn invalid(value: Option<&Value>) -> HerdError {
    let shown = value.map(Value::to_string).unwrap_or_default();
    HerdError::bad_request(format!(
        "invalid think value: {shown} (expected true, false, \"low\", \"medium\", \"high\" or \"max\")"
    ))
}

/// Where a [`ThinkingParser`] is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Before the opening tag: only whitespace seen so far.
    LookingForOpening,
    /// Just after the opening tag, eating whitespace.
    StartedEatingWhitespace,
    /// Inside the reasoning.
    Thinking,
    /// Just after the closing tag, eating whitespace.
    DoneEatingWhitespace,
    /// Past the reasoning: everything is answer.
    Done,
}

/// Splits streamed output into reasoning and answer: text between the opening and closing
/// tags (when the output starts with the opening tag) is reasoning. A tag split across
/// pieces is held back until it is whole.
#[derive(Debug)]
pub struct ThinkingParser {
    opening: String,
    closing: String,
    state: State,
    held: String,
}

/// What one piece of output held.
#[derive(Debug, Default, PartialEq)]
pub struct Split {
    /// Reasoning.
    pub thinking: String,
    /// Answer.
    pub content: String,
}

impl ThinkingParser {
    /// A parser for reasoning between `opening` and `closing`.
    pub fn new(opening: &str, closing: &str) -> Self {
        Self {
            opening: opening.to_string(),
            closing: closing.to_string(),
            state: State::LookingForOpening,
            held: String::new(),
        }
    }

    /// Starts inside the reasoning: the prompt already ends with the opening tag.
    pub fn opened(mut self) -> Self {
        let opening = self.opening.clone();
        self.push(&opening);
        self
    }

    /// Splits the next piece of output.
    pub fn push(&mut self, piece: &str) -> Split {
        self.held.push_str(piece);
        let mut split = Split::default();
        while self.step(&mut split) {}
        split
    }

    /// Whatever is still held when the output ends.
    pub fn finish(&mut self) -> Split {
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Thinking => Split {
                thinking: held,
                ..Default::default()
            },
            State::LookingForOpening | State::Done => Split {
                content: held,
                ..Default::default()
            },
            State::StartedEatingWhitespace | State::DoneEatingWhitespace => Split::default(),
        }
    }

    /// One step; `true` when another step may make progress.
    fn step(&mut self, split: &mut Split) -> bool {
        match self.state {
            State::LookingForOpening => {
                let trimmed = self.held.trim_start();
                if let Some(after) = trimmed.strip_prefix(self.opening.as_str()) {
                    let after = after.trim_start().to_string();
                    self.state = if after.is_empty() {
                        State::StartedEatingWhitespace
                    } else {
                        State::Thinking
                    };
                    self.held = after;
                    true
                } else if trimmed.is_empty() || self.opening.starts_with(trimmed) {
                    false
                } else {
                    // No reasoning: the whole output is answer, whitespace and all.
                    self.state = State::Done;
                    split.content.push_str(&std::mem::take(&mut self.held));
                    false
                }
            }
            State::StartedEatingWhitespace => {
                let trimmed = self.held.trim_start().to_string();
                self.held.clear();
                if trimmed.is_empty() {
                    false
                } else {
                    self.state = State::Thinking;
                    self.held = trimmed;
                    true
                }
            }
            State::Thinking => {
                if let Some(at) = self.held.find(self.closing.as_str()) {
                    split.thinking.push_str(&self.held[..at]);
                    let rest = self.held[at + self.closing.len()..].trim_start().to_string();
                    self.state = if rest.is_empty() {
                        State::DoneEatingWhitespace
                    } else {
                        State::Done
                    };
                    split.content.push_str(&rest);
                    self.held.clear();
                } else {
                    let keep = overlap(&self.held, &self.closing);
                    let cut = self.held.len() - keep;
                    split.thinking.push_str(&self.held[..cut]);
                    self.held.drain(..cut);
                }
                false
            }
            State::DoneEatingWhitespace => {
                let trimmed = self.held.trim_start().to_string();
                self.held.clear();
                if !trimmed.is_empty() {
                    self.state = State::Done;
                }
                split.content.push_str(&trimmed);
                false
            }
            State::Done => {
                split.content.push_str(&std::mem::take(&mut self.held));
                false
            }
        }
    }
}

/// The length of the longest suffix of `text` that is a prefix of `tag` (at a char boundary).
fn overlap(text: &str, tag: &str) -> usize {
    (1..=tag.len().min(text.len()))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && tag.is_char_boundary(n) && text.ends_with(&tag[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(parser: &mut ThinkingParser, pieces: &[&str]) -> (String, String) {
        let (mut thinking, mut content) = (String::new(), String::new());
        for piece in pieces {
            let split = parser.push(piece);
            thinking.push_str(&split.thinking);
            content.push_str(&split.content);
        }
        let split = parser.finish();
        (thinking + &split.thinking, content + &split.content)
    }

    #[test]
    fn reasoning_is_split_from_the_answer_across_pieces() {
        let mut parser = ThinkingParser::new("<think>", "</think>");
        let (thinking, content) = run(
            &mut parser,
            &["  <thi", "nk>\n Let me", " see.</th", "ink>\n\n", "Blue", "."],
        );
        assert_eq!((thinking.as_str(), content.as_str()), ("Let me see.", "Blue."));
    }

    #[test]
    fn output_without_the_tag_is_all_answer() {
        let mut parser = ThinkingParser::new("<think>", "</think>");
        assert_eq!(
            run(&mut parser, &["  Hello", " <think>x</think>"]).1,
            "  Hello <think>x</think>"
        );
    }

    #[test]
    fn a_prompt_ending_in_the_tag_starts_inside_the_reasoning() {
        let mut parser = ThinkingParser::new("<think>", "</think>").opened();
        assert_eq!(
            run(&mut parser, &["hmm </", "thinker", "</think>ok"]),
            ("hmm </thinker".into(), "ok".into())
        );
        // Never closed: everything was reasoning.
        let mut parser = ThinkingParser::new("<think>", "</think>").opened();
        assert_eq!(
            run(&mut parser, &["still ", "going </thi"]),
            ("still going </thi".into(), String::new())
        );
    }

    #[test]
    fn think_values_follow_ollama() {
        assert_eq!(Think::parse(None).unwrap(), None);
        assert!(Think::parse(Some(&json!(true))).unwrap().unwrap().enabled);
        assert!(!Think::parse(Some(&json!(false))).unwrap().unwrap().enabled);
        assert_eq!(Think::parse(Some(&json!("max"))).unwrap().unwrap().level, "high");
        for bad in [json!("extreme"), json!(1), json!({})] {
            let e = Think::parse(Some(&bad)).unwrap_err();
            assert!(e.to_string().starts_with("invalid think value"), "{e}");
        }
    }
}
