//! Table tests against outputs of Go's own `text/template` (see
//! `tests-data/templates/gen/main.go`).

use serde_json::Value as Json;

use super::gotmpl::Template;
use super::{Message, PromptTemplate, Values, GEMMA3_TEMPLATE};

const CASES: &str = include_str!("../../tests-data/templates/cases.json");

fn template_file(name: &str) -> String {
    let path = format!("{}/tests-data/templates/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn cases(section: &str) -> Vec<Json> {
    let all: Json = serde_json::from_str(CASES).expect("cases.json");
    all[section].as_array().expect("case list").clone()
}

#[test]
fn render_matches_go() {
    let mut failures = Vec::new();
    let cases = cases("render");
    assert!(cases.len() > 100);
    for case in &cases {
        let name = case["name"].as_str().unwrap_or_default();
        let source = match case["template"].as_str() {
            Some(file) => template_file(file),
            None => case["inline"].as_str().unwrap_or_default().to_string(),
        };
        let got = Template::parse(&source).and_then(|t| t.render(&case["data"]));
        let want_error = case["error"].as_bool().unwrap_or(false);
        match (&got, want_error) {
            (Ok(out), false) if out == case["expected"].as_str().unwrap_or_default() => {}
            (Err(_), true) => {}
            _ => failures.push(format!(
                "{name}: {source:?}\n  got:  {got:?}\n  want: {:?} (error: {want_error})",
                case["expected"]
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn values(v: &Json) -> Values {
    let messages: Vec<Message> = serde_json::from_value(v["messages"].clone()).unwrap_or_default();
    Values {
        messages,
        tools: v.get("tools").cloned(),
        prompt: v["prompt"].as_str().unwrap_or_default().to_string(),
        suffix: v["suffix"].as_str().unwrap_or_default().to_string(),
        think: v["is_think_set"]
            .as_bool()
            .unwrap_or(false)
            .then(|| v["think"].as_bool().unwrap_or(false)),
        think_level: v["think_level"].as_str().map(str::to_string),
        force_legacy: v["force_legacy"].as_bool().unwrap_or(false),
    }
}

#[test]
fn prompt_matches_ollama() {
    let mut failures = Vec::new();
    for case in cases("prompt") {
        let name = case["name"].as_str().unwrap_or_default();
        let source = template_file(case["template"].as_str().unwrap_or_default());
        let got = PromptTemplate::parse(&source).and_then(|t| t.render(&values(&case["values"])));
        if got.as_deref() != Ok(case["expected"].as_str().unwrap_or_default()) {
            failures.push(format!("{name}\n  got:  {got:?}\n  want: {:?}", case["expected"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn prompt_template_api() {
    let t = PromptTemplate::parse(GEMMA3_TEMPLATE).expect("gemma3 parses");
    assert!(t.uses("messages") && t.uses("System") && !t.uses("tools"));
    let legacy = PromptTemplate::parse(super::default_template()).expect("default parses");
    // Like Ollama, a bare prompt reaches templates as a user message.
    let user = Message {
        role: "user".to_string(),
        content: "hi".to_string(),
        ..Message::default()
    };
    let values = Values {
        messages: vec![user],
        ..Values::default()
    };
    assert_eq!(legacy.render(&values).as_deref(), Ok("hi"));
}

#[test]
fn tool_call_tags_come_from_the_tool_calls_branch() {
    let tag = |source: &str| PromptTemplate::parse(source).unwrap().tool_call_tag();
    assert_eq!(
        tag("{{ range .Messages }}{{- if .ToolCalls }}<tool_call>\n{{ range .ToolCalls }}{\"name\": \"{{ .Function.Name }}\"}{{ end }}</tool_call>{{ end }}{{ end }}"),
        "<tool_call>"
    );
    // Bare JSON calls: the first text is the JSON itself.
    assert_eq!(
        tag("{{ if .ToolCalls }}{{ range .ToolCalls }}{\"name\": \"{{ .Function.Name }}\"}{{ end }}{{ end }}"),
        ""
    );
    assert_eq!(
        tag("{{ if .Messages }}{{ if .ToolCalls }}[TOOL_CALLS]{{ json .ToolCalls }}{{ end }}{{ end }}"),
        "[TOOL_CALLS]"
    );
    assert_eq!(tag("{{ .Prompt }}"), "");
}

/// Ollama's own `TestInferThinkingTags` cases (thinking/template_test.go), kept as data.
#[test]
fn thinking_tags_are_inferred_as_ollama_infers_them() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../../tests-data/templates/thinking-tags.json")).unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let template = PromptTemplate::parse(case["template"].as_str().unwrap()).unwrap();
        let want = match (case["opening"].as_str().unwrap(), case["closing"].as_str().unwrap()) {
            ("", "") => None,
            (opening, closing) => Some((opening.to_string(), closing.to_string())),
        };
        assert_eq!(template.thinking_tags(), want, "{}", case["desc"]);
    }
}
