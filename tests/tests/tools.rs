//! Tools with the real model: definitions rendered by a template that takes them, calls
//! parsed from the output, and `tool_choice` enforced by a grammar (the 270M base model
//! would rarely call a tool on its own; forced, every answer is a valid call).

use herd_tests::{chat_body, TestServer, MODEL};
use serde_json::{json, Value};

const TOOLS_MODEL: &str = "gemma3-tools:270m";

fn server() -> TestServer {
    let s = TestServer::with_model();
    s.create_with_template(TOOLS_MODEL, MODEL, "gemma3-tools.gotmpl");
    s
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]}
            }, "required": ["city", "unit"]}}},
        {"type": "function", "function": {
            "name": "get_time", "description": "The time in a timezone",
            "parameters": {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 40}},
                           "required": ["timezone"]}}}
    ])
}

fn tools_chat(content: &str, extra: Value) -> Value {
    let mut body = chat_body(
        content,
        json!({"model": TOOLS_MODEL, "tools": tools(), "stream": false}),
    );
    herd_tests::merge(&mut body, extra);
    body
}

#[test]
fn required_and_named_tool_choice_force_valid_calls() {
    let s = server();
    for seed in 0..5 {
        let (status, body) = s.post(
            "/api/chat",
            &tools_chat(
                "What is the weather in Paris?",
                json!({"tool_choice": "required", "options": {"temperature": 1.0, "seed": seed, "num_predict": 100}}),
            ),
        );
        assert_eq!(status, 200, "{body}");
        let calls = body["message"]["tool_calls"]
            .as_array()
            .unwrap_or_else(|| panic!("no tool calls: {body}"));
        assert_eq!(calls.len(), 1, "{body}");
        let function = &calls[0]["function"];
        match function["name"].as_str().unwrap() {
            "get_weather" => {
                assert!(function["arguments"]["city"].is_string(), "{body}");
                assert!(["celsius", "fahrenheit"].contains(&function["arguments"]["unit"].as_str().unwrap()));
            }
            "get_time" => assert!(function["arguments"]["timezone"].is_string(), "{body}"),
            other => panic!("unknown tool {other}"),
        }
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(body["message"]["content"], "", "{body}");
        assert_eq!(body["done_reason"], "stop");
    }
    // A named function: always that one, streamed as one whole call.
    let (status, lines) = s.post_stream(
        "/api/chat",
        &tools_chat(
            "Hello!",
            json!({"stream": true, "tool_choice": {"type": "function", "function": {"name": "get_time"}},
                   "options": {"num_predict": 100}}),
        ),
    );
    assert_eq!(status, 200);
    let calls: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l["message"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 1, "{lines:?}");
    assert_eq!(calls[0]["function"]["name"], "get_time");
    assert!(calls[0]["function"]["arguments"]["timezone"].is_string());
    let text: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(text, "", "no tag or JSON leaks into the content");
}

#[test]
fn tools_are_rendered_unless_the_choice_is_none() {
    let s = server();
    let render = |extra: Value| {
        let mut body = tools_chat("Weather in Oslo?", json!({"_debug_render_only": true}));
        herd_tests::merge(&mut body, extra);
        let (status, answer) = s.post("/api/chat", &body);
        assert_eq!(status, 200, "{answer}");
        answer["_debug_info"]["rendered_template"].as_str().unwrap().to_string()
    };
    let offered = render(json!({}));
    assert!(
        offered.starts_with("<start_of_turn>user\nYou can call these functions:\n{"),
        "{offered}"
    );
    assert!(
        offered.contains("\"name\":\"get_weather\"") && offered.contains("The time in a timezone"),
        "{offered}"
    );
    let none = render(json!({"tool_choice": "none"}));
    assert!(!none.contains("get_weather"), "{none}");
    // A past call and its result render through the template's own ToolCalls branch.
    let (status, body) = s.post(
        "/api/chat",
        &json!({"model": TOOLS_MODEL, "tools": tools(), "_debug_render_only": true, "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}}]},
            {"role": "tool", "content": "-3", "tool_name": "get_weather"}
        ]}),
    );
    assert_eq!(status, 200, "{body}");
    let rendered = body["_debug_info"]["rendered_template"].as_str().unwrap();
    assert!(
        rendered.contains("<start_of_turn>model\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Oslo\",\"unit\":\"celsius\"}}\n</tool_call><end_of_turn>\n<start_of_turn>user\n<tool_response>-3</tool_response>"),
        "{rendered}"
    );
    // With tool_choice none, the model answers in text and nothing is parsed.
    let (status, body) = s.post(
        "/api/chat",
        &tools_chat("Say hi.", json!({"tool_choice": "none", "options": {"num_predict": 8}})),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["message"].get("tool_calls").is_none(), "{body}");
}

#[test]
fn malformed_tools_and_choices_are_refused() {
    let s = server();
    let refused = |extra: Value| {
        let mut body = tools_chat("hi", json!({}));
        herd_tests::merge(&mut body, extra);
        let (status, answer) = s.post("/api/chat", &body);
        assert_eq!(status, 400, "{body}: {answer}");
        answer["error"].as_str().unwrap().to_string()
    };
    assert!(refused(json!({"tools": [{"type": "function"}]})).starts_with("invalid tool definition at tools[0]"));
    assert!(
        refused(json!({"tools": [{"function": {"name": "f", "parameters": {"type": "thing"}}}]}))
            .contains("function.parameters")
    );
    assert!(
        refused(json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}}))
            .contains("not among the tools")
    );
    assert!(refused(json!({"tool_choice": "sometimes"})).starts_with("invalid tool_choice"));
    assert!(refused(json!({"tool_choice": "required", "format": "json"})).contains("format cannot be combined"));
    // The model without a tools template still says so.
    let (status, body) = s.post("/api/chat", &chat_body("hi", json!({"tools": tools()})));
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "registry.ollama.ai/library/gemma3:270m does not support tools"
    );
}
