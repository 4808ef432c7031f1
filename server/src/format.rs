//! Structured outputs: what a request's `format` may be, checked before a runner sees it, so
//! that a mistake in a schema is a 400 naming the keyword and where it is. The runner turns
//! an accepted format into the grammar that sampling is held to.

use herd_proto::OutputFormat;
use serde_json::{Map, Value};

/// JSON Schema's type names.
const TYPES: [&str; 7] = ["string", "number", "integer", "boolean", "object", "array", "null"];

/// Keywords whose value is a schema.
const SCHEMA_KEYWORDS: [&str; 6] = [
    "items",
    "additionalProperties",
    "not",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
];

/// Keywords whose value is a list of schemas.
const SCHEMA_LIST_KEYWORDS: [&str; 4] = ["anyOf", "oneOf", "allOf", "prefixItems"];

/// Keywords whose value is a map of names to schemas.
const SCHEMA_MAP_KEYWORDS: [&str; 4] = ["properties", "$defs", "definitions", "patternProperties"];

/// Keywords whose value is a count.
const COUNT_KEYWORDS: [&str; 6] = [
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
];

/// Keywords whose value is a number.
const NUMBER_KEYWORDS: [&str; 4] = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];

/// The format a request asks for: `None` for free text (`format` absent, null or `""`),
/// `"json"` for any JSON object, or a JSON Schema object.
pub fn parse_format(format: Option<&Value>) -> Result<Option<OutputFormat>, String> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(OutputFormat::Json)),
        Some(Value::Object(schema)) => {
            check_schema(schema, "format")?;
            Ok(Some(OutputFormat::Schema(Value::Object(schema.clone()).to_string())))
        }
        Some(other) => Err(format!(
            "invalid format: {other}; expected \"json\" or a valid JSON Schema object"
        )),
    }
}

/// Checks the keywords herd's grammar converter reads; others are ignored, as JSON Schema says.
fn check_schema(schema: &Map<String, Value>, at: &str) -> Result<(), String> {
    let invalid = |path: &str, why: String| Err(format!("invalid JSON schema in format: at {path}: {why}"));
    for (keyword, value) in schema {
        let path = format!("{at}.{keyword}");
        match keyword.as_str() {
            "type" => check_type(value).or_else(|why| invalid(&path, why))?,
            "required" if !value.as_array().is_some_and(|names| names.iter().all(Value::is_string)) => {
                return invalid(&path, format!("expected a list of property names, got {value}"));
            }
            "enum" if value.as_array().is_none_or(Vec::is_empty) => {
                return invalid(&path, format!("expected a non-empty list of values, got {value}"));
            }
            "$ref" => match value.as_str() {
                Some(reference) if reference.starts_with('#') => {}
                Some(reference) => {
                    return invalid(
                        &path,
                        format!("remote references are not supported ({reference:?}); use \"#/$defs/...\""),
                    )
                }
                None => return invalid(&path, format!("expected a string, got {value}")),
            },
            "pattern" | "format" if !value.is_string() => {
                return invalid(&path, format!("expected a string, got {value}"));
            }
            k if SCHEMA_KEYWORDS.contains(&k) => check_subschema(value, &path)?,
            k if SCHEMA_LIST_KEYWORDS.contains(&k) => match value.as_array() {
                Some(list) if !list.is_empty() => {
                    for (i, item) in list.iter().enumerate() {
                        check_subschema(item, &format!("{path}[{i}]"))?;
                    }
                }
                _ => return invalid(&path, format!("expected a non-empty list of schemas, got {value}")),
            },
            k if SCHEMA_MAP_KEYWORDS.contains(&k) => match value.as_object() {
                Some(map) => {
                    for (name, item) in map {
                        check_subschema(item, &format!("{path}.{name}"))?;
                    }
                }
                None => return invalid(&path, format!("expected an object of schemas, got {value}")),
            },
            k if COUNT_KEYWORDS.contains(&k) && value.as_u64().is_none() => {
                return invalid(&path, format!("expected a non-negative integer, got {value}"));
            }
            k if NUMBER_KEYWORDS.contains(&k) && !value.is_number() => {
                return invalid(&path, format!("expected a number, got {value}"));
            }
            _ => {}
        }
    }
    for (low, high) in [
        ("minLength", "maxLength"),
        ("minItems", "maxItems"),
        ("minimum", "maximum"),
    ] {
        if let (Some(min), Some(max)) = (
            schema.get(low).and_then(Value::as_f64),
            schema.get(high).and_then(Value::as_f64),
        ) {
            if min > max {
                return invalid(&format!("{at}.{low}"), format!("{min} is more than {high} {max}"));
            }
        }
    }
    Ok(())
}

/// A schema in a keyword's place: an object, or `true`/`false`.
fn check_subschema(value: &Value, at: &str) -> Result<(), String> {
    match value {
        Value::Object(schema) => check_schema(schema, at),
        Value::Bool(_) => Ok(()),
        other => Err(format!(
            "invalid JSON schema in format: at {at}: expected a schema (an object), got {other}"
        )),
    }
}

fn check_type(value: &Value) -> Result<(), String> {
    let known = |name: &Value| name.as_str().is_some_and(|n| TYPES.contains(&n));
    let ok = match value {
        Value::String(_) => known(value),
        Value::Array(names) => !names.is_empty() && names.iter().all(known),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{value} is not a JSON Schema type ({})", TYPES.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(format: Value) -> String {
        parse_format(Some(&format)).unwrap_err()
    }

    #[test]
    fn absent_empty_and_null_mean_free_text() {
        assert_eq!(parse_format(None), Ok(None));
        assert_eq!(parse_format(Some(&Value::Null)), Ok(None));
        assert_eq!(parse_format(Some(&json!(""))), Ok(None));
    }

    #[test]
    fn json_and_schemas_are_accepted() {
        assert_eq!(parse_format(Some(&json!("json"))), Ok(Some(OutputFormat::Json)));
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 20},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
                "kind": {"anyOf": [{"type": "integer"}, {"$ref": "#/$defs/k"}]}
            },
            "required": ["name"],
            "additionalProperties": false,
            "$defs": {"k": {"type": ["string", "null"]}}
        });
        let Ok(Some(OutputFormat::Schema(text))) = parse_format(Some(&schema)) else {
            panic!("schema refused")
        };
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), schema);
    }

    #[test]
    fn other_formats_are_refused() {
        assert_eq!(
            error(json!("xml")),
            "invalid format: \"xml\"; expected \"json\" or a valid JSON Schema object"
        );
        assert!(error(json!(42)).starts_with("invalid format: 42;"));
        assert!(error(json!(["json"])).starts_with("invalid format: [\"json\"];"));
    }

    #[test]
    fn schema_mistakes_name_the_keyword_and_where_it_is() {
        let cases = [
            (
                json!({"type": "object", "properties": {"age": {"type": "int"}}}),
                "at format.properties.age.type: \"int\" is not a JSON Schema type",
            ),
            (
                json!({"properties": []}),
                "at format.properties: expected an object of schemas",
            ),
            (
                json!({"required": "name"}),
                "at format.required: expected a list of property names",
            ),
            (json!({"items": 3}), "at format.items: expected a schema"),
            (
                json!({"anyOf": []}),
                "at format.anyOf: expected a non-empty list of schemas",
            ),
            (json!({"enum": []}), "at format.enum: expected a non-empty list"),
            (
                json!({"$ref": "https://example.com/s.json"}),
                "at format.$ref: remote references are not supported",
            ),
            (
                json!({"maxLength": -1}),
                "at format.maxLength: expected a non-negative integer",
            ),
            (
                json!({"minItems": 5, "maxItems": 2}),
                "at format.minItems: 5 is more than maxItems 2",
            ),
            (json!({"type": []}), "at format.type: [] is not a JSON Schema type"),
        ];
        for (schema, expected) in cases {
            let message = error(schema.clone());
            assert!(
                message.starts_with("invalid JSON schema in format: ") && message.contains(expected),
                "{schema}: {message}"
            );
        }
    }
}
