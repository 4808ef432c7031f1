//! Turns a conversation into the prompt text a model reads: with the model's Go template
//! layer, or with the GGUF's Jinja `tokenizer.chat_template` when there is no template
//! layer, or `{{ .Prompt }}` when there is neither.

use crate::error::HerdError;
use crate::template::{Message, PromptTemplate, Values};

/// The template a model's prompts are rendered with.
pub enum ChatTemplate {
    /// An Ollama (Go `text/template`) template.
    Go(PromptTemplate),
    /// A Hugging Face (Jinja) chat template from the GGUF.
    Jinja(String),
}

impl ChatTemplate {
    /// Parses a Go template; a broken one is the request's or the model's fault, said plainly.
    pub fn go(text: &str) -> Result<Self, HerdError> {
        PromptTemplate::parse(text)
            .map(Self::Go)
            .map_err(|e| HerdError::bad_request(format!("template error: {e}")))
    }

    /// Whether the template renders tool definitions.
    pub fn supports_tools(&self) -> bool {
        match self {
            Self::Go(t) => t.uses("tools"),
            Self::Jinja(source) => source.contains("tools"),
        }
    }

    /// What the model writes before a tool call; empty when calls are bare JSON.
    pub fn tool_call_tag(&self) -> String {
        match self {
            Self::Go(t) => t.tool_call_tag(),
            Self::Jinja(source) if source.contains("<tool_call>") => "<tool_call>".into(),
            Self::Jinja(_) => String::new(),
        }
    }

    /// Whether the template renders a suffix (fill-in-the-middle).
    pub fn supports_insert(&self) -> bool {
        match self {
            Self::Go(t) => t.uses("suffix"),
            Self::Jinja(_) => false,
        }
    }

    /// The tags the model puts around its reasoning; `None` when it does not reason (Ollama's
    /// `thinking` capability).
    pub fn thinking_tags(&self) -> Option<(String, String)> {
        match self {
            Self::Go(t) => t.thinking_tags(),
            Self::Jinja(source) if source.contains("<think>") && source.contains("</think>") => {
                Some(("<think>".into(), "</think>".into()))
            }
            Self::Jinja(_) => None,
        }
    }

    /// Renders the prompt.
    pub fn render(&self, values: &Values) -> Result<String, HerdError> {
        match self {
            Self::Go(t) => t
                .render(values)
                .map_err(|e| HerdError::bad_request(format!("template error: {e}"))),
            Self::Jinja(source) => render_jinja(source, &values.messages, values.think),
        }
    }
}

/// Template instructions one render may run: thousands of messages' worth, yet a template
/// from an untrusted GGUF that loops without end stops within a second.
const JINJA_FUEL: u64 = 20_000_000;

/// Renders a Hugging Face chat template the way `transformers` calls it.
fn render_jinja(source: &str, messages: &[Message], think: Option<bool>) -> Result<String, HerdError> {
    let mut env = minijinja::Environment::new();
    // minijinja also caps recursion depth, `range` and repeated strings.
    env.set_fuel(Some(JINJA_FUEL));
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        },
    );
    let error = |e: minijinja::Error| HerdError::bad_request(format!("chat template error: {e}"));
    env.add_template("chat", source).map_err(error)?;
    let template = env.get_template("chat").map_err(error)?;
    // llama.cpp adds BOS when tokenizing, so the template must not add it again.
    template
        .render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => "",
            eos_token => "",
            enable_thinking => think,
        })
        .map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }

    #[test]
    fn jinja_templates_render_with_python_string_methods() {
        let source = "{% for m in messages %}<|{{ m.role }}|>{{ m.content.strip() }}\n{% endfor %}\
                      {% if add_generation_prompt %}<|assistant|>{% endif %}";
        let template = ChatTemplate::Jinja(source.into());
        let values = Values {
            messages: vec![message("user", "  hi  ")],
            ..Default::default()
        };
        assert_eq!(template.render(&values).unwrap(), "<|user|>hi\n<|assistant|>");
    }

    #[test]
    fn hostile_jinja_templates_fail_fast() {
        for source in [
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "{{ 'x' * 1000000000 }}",
            "{{ range(1000000000) | list | length }}",
        ] {
            let started = std::time::Instant::now();
            let err = ChatTemplate::Jinja(source.into())
                .render(&Values::default())
                .unwrap_err();
            assert_eq!(err.status(), 400, "{source}: {err}");
            assert!(err.to_string().starts_with("chat template error"), "{source}: {err}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(3),
                "{source}: {:?}",
                started.elapsed()
            );
        }
        // Message content is data: `{{ 7*7 }}` in a message stays as written.
        let template = ChatTemplate::Jinja("{% for m in messages %}{{ m.content }}{% endfor %}".into());
        let values = Values {
            messages: vec![message("user", "{{ 7*7 }} {% raw %}")],
            ..Default::default()
        };
        assert_eq!(template.render(&values).unwrap(), "{{ 7*7 }} {% raw %}");
    }

    #[test]
    fn jinja_raise_exception_is_a_clear_error() {
        let template = ChatTemplate::Jinja("{{ raise_exception('roles must alternate') }}".into());
        let err = template.render(&Values::default()).unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
    }
}
