//! Unit tests of language features; expectations come from Go 1.19.

use serde_json::json;

use super::{Template, TemplateError};

fn render(src: &str, data: serde_json::Value) -> Result<String, TemplateError> {
    Template::parse(src)?.render(&data)
}

fn ok(src: &str, data: serde_json::Value) -> String {
    render(src, data).unwrap_or_else(|e| panic!("{src}: {e}"))
}

#[test]
fn trim_markers_and_comments() {
    assert_eq!(
        ok("a \n {{- 1 -}} \n b{{/* c */}}c {{- /* d */ -}} d", json!({})),
        "a1bcd"
    );
    assert_eq!(ok("{{- 2 }} x", json!({})), "2 x");
    // `{{-3}}` is the number -3, not a trim marker.
    assert_eq!(ok("a {{-3}}", json!({})), "a -3");
}

#[test]
fn variables_scope_and_assignment() {
    let src = r#"{{ $s := "" }}{{ range .L }}{{ $s = printf "%s%s" $s . }}{{ $t := 1 }}{{ end }}{{ $s }}"#;
    assert_eq!(ok(src, json!({"L": ["a", "b"]})), "ab");
    assert!(Template::parse("{{ if true }}{{ $t := 1 }}{{ end }}{{ $t }}").is_err());
    assert_eq!(
        ok(
            "{{ with $x := .A }}{{ $x }}{{ $.B }}{{ end }}",
            json!({"A": 1, "B": "b"})
        ),
        "1b"
    );
}

#[test]
fn range_forms() {
    let data = json!({"L": ["a", "b", "c"], "M": {"z": 1, "a": 2}});
    assert_eq!(
        ok("{{ range $i, $v := .L }}{{ $i }}{{ $v }}{{ end }}", data.clone()),
        "0a1b2c"
    );
    assert_eq!(
        ok("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", data.clone()),
        "a2z1"
    );
    assert_eq!(
        ok(
            "{{ range .L }}{{ if eq . \"b\" }}{{ continue }}{{ end }}{{ . }}{{ end }}",
            data.clone()
        ),
        "ac"
    );
    assert_eq!(
        ok(
            "{{ range .L }}{{ if eq . \"b\" }}{{ break }}{{ end }}{{ . }}{{ end }}",
            data.clone()
        ),
        "a"
    );
    assert_eq!(ok("{{ range .X }}x{{ else }}none{{ end }}", data), "none");
}

#[test]
fn go_printing() {
    let data = json!({"M": {"b": [1, "x"], "a": null}, "F": 1e6, "G": 0.5});
    assert_eq!(
        ok("{{ .M }} {{ .F }} {{ .G }} {{ .Nope }} {{ print .Nope }}", data),
        "map[a:<nil> b:[1 x]] 1e+06 0.5 <no value> <nil>"
    );
    assert_eq!(
        ok(
            r#"{{ printf "%q|%5s|%-3d|%.2f|%v" "a\"b" "x" 7 3.14159 .L }}"#,
            json!({"L": [true]})
        ),
        "\"a\\\"b\"|    x|7  |3.14|[true]"
    );
}

#[test]
fn json_matches_go() {
    let data = json!({"A": {"z": "<&>", "a": [1.5, 2, 1e21, 1e-7]}});
    assert_eq!(
        ok("{{ json .A }}", data),
        r#"{"a":[1.5,2,1e+21,1e-7],"z":"\u003c\u0026\u003e"}"#
    );
}

#[test]
fn logic_and_comparison() {
    let data = json!({"Role": "user", "N": 2});
    assert_eq!(
        ok(
            r#"{{ eq .Role "system" "user" }} {{ and 1 "" 3 }} {{ or 0 "" }} {{ not 0 }}"#,
            data.clone()
        ),
        "true   true"
    );
    assert_eq!(
        ok("{{ lt .N 3.0 }} {{ le 1 1 }} {{ gt \"b\" \"a\" }}", data.clone()),
        "true true true"
    );
    // Go refuses to compare float64 data with an int literal.
    assert!(render("{{ eq .N 2 }}", data).is_err());
}

#[test]
fn define_and_template() {
    let src = r#"{{ define "T" }}<{{ . }}>{{ end }}{{ template "T" "x" }}{{ block "B" 1 }}[{{ . }}]{{ end }}"#;
    assert_eq!(ok(src, json!({})), "<x>[1]");
}

#[test]
fn errors_have_lines_and_never_panic() {
    match Template::parse("a\nb {{ if }}") {
        Err(TemplateError::Parse { line, .. }) => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
    let fuzz = [
        "{{",
        "}}",
        "{{ (",
        "{{ ) }}",
        "{{ .A.",
        "{{ $ }}",
        "{{ 'x }}",
        "{{ \"\\",
        "{{/*",
        "{{- -}}",
        "{{ 1e999 }}",
        "{{ index . -1 }}",
        "{{ slice \"é\" 1 }}",
    ];
    for src in fuzz {
        let _ = render(src, json!([1]));
    }
}

#[test]
fn deep_nesting_is_an_error() {
    let deep = "{{ if true }}".repeat(10_000);
    assert!(Template::parse(&deep).is_err());
    let parens = format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(Template::parse(&parens).is_err());
    // The deepest accepted nesting also executes within a test thread's stack.
    let nested = format!("{}x{}", "{{ if true }}".repeat(98), "{{ end }}".repeat(98));
    assert_eq!(
        Template::parse(&nested)
            .and_then(|t| t.render(&serde_json::Value::Null))
            .as_deref(),
        Ok("x")
    );
}

#[test]
fn unbounded_recursion_is_an_error() {
    let recursive = r#"{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" . }}"#;
    assert!(render(recursive, json!({})).is_err());
}

#[test]
fn field_names_like_ollama_vars() {
    let t = Template::parse("{{ range $i, $m := .Messages }}{{ $.System }}{{ (.X).Y }}{{ end }}").expect("parses");
    // Like Ollama, declared variables are not listed.
    assert_eq!(t.field_names(), ["$", "messages", "system", "x"]);
}
