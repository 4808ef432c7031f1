//! Request and Modelfile options (Ollama's `options` / `PARAMETER`), typed and resolved:
//! request `options` over the model's params layer over the defaults.
//!
//! The option table and the type checks ([`option_kind`], [`parse_parameter_value`],
//! [`check_option_value`]) are pure and follow Ollama's `api.Options` (`FromMap`,
//! `FormatParams`), error texts included.

use serde_json::{Map, Value};

use herd_proto::SamplingOptions;

use crate::config::Config;
use crate::error::HerdError;
use crate::keep_alive::KeepAlive;

/// The JSON type an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionKind {
    /// A whole number (any JSON number is accepted and truncated, as Ollama does).
    Int,
    /// A number.
    Float,
    /// true / false.
    Bool,
    /// An array of strings.
    StringList,
    /// A duration: a Go duration string (`10m`) or a number of seconds; negative is forever.
    Duration,
    /// A removed option that clients still send: accepted, with a warning, and ignored.
    Deprecated,
}

/// Every option herd knows, with its type (Ollama's `api.Options` and `api.Runner`, plus
/// herd's per-model policy: `num_parallel` slots and the model's default `keep_alive`).
pub const RUNTIME_OPTIONS: &[(&str, OptionKind)] = &[
    ("num_ctx", OptionKind::Int),
    ("num_parallel", OptionKind::Int),
    ("keep_alive", OptionKind::Duration),
    ("num_batch", OptionKind::Int),
    ("num_gpu", OptionKind::Int),
    ("main_gpu", OptionKind::Int),
    ("use_mmap", OptionKind::Bool),
    ("num_thread", OptionKind::Int),
    ("draft_num_predict", OptionKind::Int),
    ("num_keep", OptionKind::Int),
    ("seed", OptionKind::Int),
    ("num_predict", OptionKind::Int),
    ("top_k", OptionKind::Int),
    ("top_p", OptionKind::Float),
    ("min_p", OptionKind::Float),
    ("typical_p", OptionKind::Float),
    ("repeat_last_n", OptionKind::Int),
    ("temperature", OptionKind::Float),
    ("repeat_penalty", OptionKind::Float),
    ("presence_penalty", OptionKind::Float),
    ("frequency_penalty", OptionKind::Float),
    ("stop", OptionKind::StringList),
    ("numa", OptionKind::Deprecated),
    ("low_vram", OptionKind::Deprecated),
    ("f16_kv", OptionKind::Deprecated),
    ("logits_all", OptionKind::Deprecated),
    ("vocab_only", OptionKind::Deprecated),
    ("use_mlock", OptionKind::Deprecated),
    ("embedding_only", OptionKind::Deprecated),
    ("tfs_z", OptionKind::Deprecated),
    ("mirostat", OptionKind::Deprecated),
    ("mirostat_tau", OptionKind::Deprecated),
    ("mirostat_eta", OptionKind::Deprecated),
    ("penalize_newline", OptionKind::Deprecated),
];

/// The type of option `name`, or `None` when herd does not know it.
pub fn option_kind(name: &str) -> Option<OptionKind> {
    RUNTIME_OPTIONS.iter().find(|(n, _)| *n == name).map(|&(_, kind)| kind)
}

/// A wrongly typed option or `PARAMETER` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A Modelfile `PARAMETER` that is not an option.
    #[error("unknown parameter '{0}'")]
    UnknownParameter(String),
    /// A `PARAMETER` value that is not a whole number.
    #[error("invalid int value [{value}] for parameter '{name}': expected a whole number")]
    InvalidInt {
        /// The option.
        name: String,
        /// The value as written.
        value: String,
    },
    /// A `PARAMETER` value that is not a number.
    #[error("invalid float value [{value}] for parameter '{name}': expected a number such as 0.7")]
    InvalidFloat {
        /// The option.
        name: String,
        /// The value as written.
        value: String,
    },
    /// A `PARAMETER` value that is not a duration.
    #[error("invalid duration value [{value}] for parameter '{name}': expected a duration such as 10m or a number of seconds")]
    InvalidDuration {
        /// The option.
        name: String,
        /// The value as written.
        value: String,
    },
    /// A `PARAMETER` value that is not true or false.
    #[error("invalid bool value [{value}] for parameter '{name}': expected true or false")]
    InvalidBool {
        /// The option.
        name: String,
        /// The value as written.
        value: String,
    },
    /// A request option of the wrong JSON type (`integer`, `float32`, `boolean`, `array`).
    #[error("option \"{name}\" must be of type {expected}")]
    WrongType {
        /// The option.
        name: String,
        /// The expected type, in Ollama's words.
        expected: &'static str,
    },
    /// A list option with a non-string element.
    #[error("option \"{name}\" must be of an array of strings")]
    NotStrings {
        /// The option.
        name: String,
    },
}

/// Converts a Modelfile `PARAMETER` value to its typed JSON form, as Ollama's `FormatParams`:
/// ints (`strconv.ParseInt`), floats (32-bit, shortest form: `0.7` stays `0.7`), bools
/// (`1 t T TRUE true True 0 f F FALSE false False`), and `stop` as a one-element array (the
/// caller appends repeated `stop` lines). A deprecated option is typed as well as it can be
/// (bool, number, else string); the caller should warn and may drop it. An unknown name is
/// `unknown parameter '<name>'`.
pub fn parse_parameter_value(name: &str, raw: &str) -> Result<Value, OptionError> {
    let kind = option_kind(name).ok_or_else(|| OptionError::UnknownParameter(name.to_string()))?;
    let value = raw.to_string();
    let name = name.to_string();
    Ok(match kind {
        OptionKind::Int => Value::from(parse_go_int(raw).ok_or(OptionError::InvalidInt { name, value })?),
        OptionKind::Float => parse_go_float32(raw).ok_or(OptionError::InvalidFloat { name, value })?,
        OptionKind::Bool => Value::Bool(parse_go_bool(raw).ok_or(OptionError::InvalidBool { name, value })?),
        OptionKind::StringList => Value::Array(vec![Value::String(value)]),
        OptionKind::Duration => match KeepAlive::parse_env(raw) {
            Ok(_) => Value::String(value),
            Err(_) => return Err(OptionError::InvalidDuration { name, value }),
        },
        OptionKind::Deprecated => parse_go_bool(raw)
            .map(Value::Bool)
            .or_else(|| parse_go_int(raw).map(Value::from))
            .or_else(|| parse_go_float32(raw))
            .unwrap_or(Value::String(value)),
    })
}

/// Checks a request option's JSON value against its type, as Ollama's `Options.FromMap`:
/// `null` is ignored; ints take any number (Ollama truncates `1.5` to `1`); floats take any
/// number; bools only `true`/`false`; `stop` only an array of strings. Unknown and deprecated
/// options are `Ok` (the caller logs a warning and ignores them).
pub fn check_option_value(name: &str, value: &Value) -> Result<(), OptionError> {
    let Some(kind) = option_kind(name) else {
        return Ok(());
    };
    if value.is_null() {
        return Ok(());
    }
    let wrong = |expected| {
        Err(OptionError::WrongType {
            name: name.to_string(),
            expected,
        })
    };
    match kind {
        OptionKind::Int if !value.is_number() => wrong("integer"),
        OptionKind::Float if !value.is_number() => wrong("float32"),
        OptionKind::Bool if !value.is_boolean() => wrong("boolean"),
        OptionKind::Duration if KeepAlive::from_json(value).is_err() => wrong("duration"),
        OptionKind::StringList => match value.as_array() {
            None => wrong("array"),
            Some(items) if !items.iter().all(Value::is_string) => {
                Err(OptionError::NotStrings { name: name.to_string() })
            }
            Some(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits only, no spaces.
fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `strconv.ParseFloat(s, 32)` for finite decimal values, widened to `f64` through the
/// shortest `f32` form; `None` for text, out-of-range values, NaN and infinities (which JSON
/// cannot hold).
fn parse_go_float32(s: &str) -> Option<Value> {
    let valid = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if !valid {
        return None;
    }
    let f: f32 = s.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    let widened: f64 = f.to_string().parse().ok()?;
    serde_json::Number::from_f64(widened).map(Value::Number)
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Checks one request option's value against its type (see [`check_option_value`]); unknown
/// and deprecated keys are logged and ignored.
pub fn check_option(name: &str, value: &Value) -> Result<(), HerdError> {
    match option_kind(name) {
        None => tracing::warn!(option = name, "invalid option provided"),
        Some(OptionKind::Deprecated) => {
            tracing::warn!(option = name, "option is deprecated and ignored")
        }
        Some(_) => {}
    }
    check_option_value(name, value).map_err(|e| HerdError::bad_request(e.to_string()))
}

/// Everything a completion needs from the options.
#[derive(Clone, Debug)]
pub struct ResolvedOptions {
    /// Sampling parameters.
    pub sampling: SamplingOptions,
    /// Most tokens to generate (negative: unbounded).
    pub num_predict: i32,
    /// Tokens kept when a prompt is cut.
    pub num_keep: u32,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Context length.
    pub num_ctx: u32,
    /// Batch size.
    pub num_batch: u32,
    /// GPU layers (-1: decide).
    pub num_gpu: i32,
    /// CPU threads (0: decide).
    pub num_thread: u32,
    /// Slots decoded together (`HERD_NUM_PARALLEL` unless the model or request says).
    pub num_parallel: u32,
    /// The model's own keep-alive (`PARAMETER keep_alive`), if it sets one.
    pub keep_alive: Option<KeepAlive>,
}

/// llama.cpp's most sequences in one context (`LLAMA_MAX_SEQ`).
const MAX_PARALLEL: i64 = 256;

impl ResolvedOptions {
    /// Request options over model params over defaults; a wrongly typed request option is a 400.
    pub fn resolve(
        config: &Config,
        model_params: &Map<String, Value>,
        request: Option<&Map<String, Value>>,
    ) -> Result<Self, HerdError> {
        let empty = Map::new();
        let request = request.unwrap_or(&empty);
        for (name, value) in request {
            check_option(name, value)?;
        }
        let get = |name: &str| {
            request
                .get(name)
                .filter(|v| !v.is_null())
                .or_else(|| model_params.get(name))
        };
        let int = |name: &str, default: i64| get(name).and_then(Value::as_f64).map_or(default, |f| f as i64);
        let float = |name: &str, default: f32| get(name).and_then(Value::as_f64).map_or(default, |f| f as f32);
        let defaults = SamplingOptions::default();
        let stop = match get("stop") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        };
        let clamp_u32 = |n: i64| n.clamp(0, u32::MAX as i64) as u32;
        let clamp_i32 = |n: i64| n.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        Ok(Self {
            sampling: SamplingOptions {
                temperature: float("temperature", defaults.temperature),
                top_k: clamp_i32(int("top_k", defaults.top_k as i64)),
                top_p: float("top_p", defaults.top_p),
                min_p: float("min_p", defaults.min_p),
                typical_p: float("typical_p", defaults.typical_p),
                repeat_last_n: clamp_i32(int("repeat_last_n", defaults.repeat_last_n as i64)),
                repeat_penalty: float("repeat_penalty", defaults.repeat_penalty),
                presence_penalty: float("presence_penalty", defaults.presence_penalty),
                frequency_penalty: float("frequency_penalty", defaults.frequency_penalty),
                seed: int("seed", -1),
            },
            num_predict: clamp_i32(int("num_predict", -1)),
            num_keep: clamp_u32(int("num_keep", 4)),
            stop,
            num_ctx: clamp_u32(int("num_ctx", config.context_length as i64)).max(4),
            num_batch: clamp_u32(int("num_batch", 512)).clamp(1, 8192),
            num_gpu: clamp_i32(int("num_gpu", -1)),
            num_thread: clamp_u32(int("num_thread", 0)),
            num_parallel: int("num_parallel", config.num_parallel.into()).clamp(1, MAX_PARALLEL) as u32,
            keep_alive: get("keep_alive").and_then(|v| KeepAlive::from_json(v).ok()),
        })
    }
}

/// Converts a Modelfile `PARAMETER` value to its typed JSON form (see
/// [`parse_parameter_value`]); errors are 400s.
pub fn parse_parameter(name: &str, raw: &str) -> Result<Value, HerdError> {
    parse_parameter_value(name, raw).map_err(|e| HerdError::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Config {
        Config::from_env().unwrap()
    }

    #[test]
    fn request_options_override_model_params() {
        let params = json!({"temperature": 1.0, "top_k": 64, "stop": ["<end_of_turn>"]});
        let request = json!({"temperature": 0, "seed": 42, "num_predict": 8});
        let o = ResolvedOptions::resolve(&config(), params.as_object().unwrap(), request.as_object()).unwrap();
        assert_eq!(o.sampling.temperature, 0.0);
        assert_eq!(o.sampling.top_k, 64);
        assert_eq!(o.sampling.seed, 42);
        assert_eq!(o.num_predict, 8);
        assert_eq!(o.stop, vec!["<end_of_turn>"]);
    }

    #[test]
    fn per_model_policy_comes_from_params_and_yields_to_the_request() {
        let params = json!({"num_parallel": 3, "keep_alive": "1h"});
        let o = ResolvedOptions::resolve(&config(), params.as_object().unwrap(), None).unwrap();
        assert_eq!(o.num_parallel, 3);
        assert_eq!(o.keep_alive, Some(KeepAlive::For(std::time::Duration::from_secs(3600))));
        let request = json!({"num_parallel": 100_000});
        let o = ResolvedOptions::resolve(&config(), params.as_object().unwrap(), request.as_object()).unwrap();
        assert_eq!(o.num_parallel, 256, "clamped to llama.cpp's most sequences");
        let o = ResolvedOptions::resolve(&config(), &Map::new(), None).unwrap();
        assert_eq!((o.num_parallel, o.keep_alive), (config().num_parallel, None));
    }

    #[test]
    fn wrong_types_are_rejected_with_ollamas_text() {
        let request = json!({"num_predict": "ten"});
        let err = ResolvedOptions::resolve(&config(), &Map::new(), request.as_object()).unwrap_err();
        assert_eq!(err.to_string(), "option \"num_predict\" must be of type integer");
        let request = json!({"stop": [1]});
        assert!(ResolvedOptions::resolve(&config(), &Map::new(), request.as_object()).is_err());
        let request = json!({"made_up": 1});
        assert!(ResolvedOptions::resolve(&config(), &Map::new(), request.as_object()).is_ok());
    }

    #[test]
    fn parameters_parse_to_typed_json() {
        assert_eq!(parse_parameter("temperature", "0.7").unwrap(), json!(0.7));
        assert_eq!(parse_parameter("top_k", "64").unwrap(), json!(64));
        assert_eq!(
            parse_parameter("stop", "<end_of_turn>").unwrap(),
            json!(["<end_of_turn>"])
        );
        assert!(parse_parameter("top_k", "many").is_err());
        assert!(parse_parameter("nonsense", "1").is_err());
    }

    #[test]
    fn every_documented_option_has_a_kind() {
        let ints = [
            "num_ctx",
            "num_batch",
            "num_gpu",
            "main_gpu",
            "num_thread",
            "num_keep",
            "seed",
            "num_predict",
            "top_k",
            "repeat_last_n",
        ];
        let floats = [
            "top_p",
            "min_p",
            "typical_p",
            "temperature",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
        ];
        for name in ints {
            assert_eq!(option_kind(name), Some(OptionKind::Int), "{name}");
        }
        for name in floats {
            assert_eq!(option_kind(name), Some(OptionKind::Float), "{name}");
        }
        assert_eq!(option_kind("num_parallel"), Some(OptionKind::Int));
        assert_eq!(option_kind("keep_alive"), Some(OptionKind::Duration));
        assert_eq!(option_kind("use_mmap"), Some(OptionKind::Bool));
        assert_eq!(option_kind("stop"), Some(OptionKind::StringList));
        for name in [
            "numa",
            "low_vram",
            "f16_kv",
            "logits_all",
            "vocab_only",
            "use_mlock",
            "embedding_only",
            "tfs_z",
            "mirostat",
            "mirostat_tau",
            "mirostat_eta",
            "penalize_newline",
        ] {
            assert_eq!(option_kind(name), Some(OptionKind::Deprecated), "{name}");
        }
        assert_eq!(option_kind("made_up"), None);
        assert_eq!(option_kind("NUM_CTX"), None);
    }

    #[test]
    fn parameter_values_follow_go_parsing() {
        assert_eq!(parse_parameter_value("num_ctx", "4096"), Ok(json!(4096)));
        assert_eq!(parse_parameter_value("seed", "-1"), Ok(json!(-1)));
        assert_eq!(parse_parameter_value("seed", "+7"), Ok(json!(7)));
        assert_eq!(parse_parameter_value("temperature", "0.7"), Ok(json!(0.7)));
        assert_eq!(parse_parameter_value("temperature", "1"), Ok(json!(1.0)));
        assert_eq!(parse_parameter_value("top_p", "1e-1"), Ok(json!(0.1)));
        assert_eq!(parse_parameter_value("use_mmap", "true"), Ok(json!(true)));
        assert_eq!(parse_parameter_value("use_mmap", "F"), Ok(json!(false)));
        assert_eq!(parse_parameter_value("use_mmap", "0"), Ok(json!(false)));
        assert_eq!(parse_parameter_value("stop", "### User:"), Ok(json!(["### User:"])));
        assert_eq!(parse_parameter_value("penalize_newline", "true"), Ok(json!(true)));
        assert_eq!(parse_parameter_value("mirostat_tau", "5.0"), Ok(json!(5.0)));
        for (name, raw) in [
            ("num_ctx", "4k"),
            ("num_ctx", "1.5"),
            ("num_ctx", " 1"),
            ("num_ctx", ""),
            ("seed", "99999999999999999999"),
        ] {
            let err = parse_parameter_value(name, raw).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("invalid int value [{raw}]")),
                "{err}"
            );
        }
        for raw in ["warm", "1e39", "NaN", "inf", "", "0x1p-2", "1_0"] {
            let err = parse_parameter_value("temperature", raw).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("invalid float value [{raw}]")),
                "{err}"
            );
        }
        assert_eq!(parse_parameter_value("keep_alive", "10m"), Ok(json!("10m")));
        assert_eq!(parse_parameter_value("keep_alive", "-1"), Ok(json!("-1")));
        let err = parse_parameter_value("keep_alive", "soon").unwrap_err();
        assert!(err.to_string().starts_with("invalid duration value [soon]"), "{err}");
        let err = parse_parameter_value("use_mmap", "yes").unwrap_err();
        assert!(err.to_string().starts_with("invalid bool value [yes]"), "{err}");
        assert_eq!(
            parse_parameter_value("nonsense", "1"),
            Err(OptionError::UnknownParameter("nonsense".into()))
        );
        assert_eq!(
            OptionError::UnknownParameter("x".into()).to_string(),
            "unknown parameter 'x'"
        );
    }

    #[test]
    fn request_values_follow_ollama_from_map() {
        let ok = [
            ("num_ctx", json!(4096)),
            ("num_ctx", json!(4096.0)),
            ("num_ctx", json!(1.5)),
            ("seed", json!(-1)),
            ("temperature", json!(0)),
            ("temperature", json!(0.5)),
            ("use_mmap", json!(false)),
            ("stop", json!(["a", "b"])),
            ("stop", json!([])),
            ("num_ctx", Value::Null),
            ("stop", Value::Null),
            ("made_up", json!({"anything": 1})),
            ("mirostat", json!("whatever")),
        ];
        for (name, value) in ok {
            assert_eq!(check_option_value(name, &value), Ok(()), "{name}: {value}");
        }
        let bad = [
            ("num_ctx", json!("4096"), "option \"num_ctx\" must be of type integer"),
            (
                "num_predict",
                json!(true),
                "option \"num_predict\" must be of type integer",
            ),
            (
                "temperature",
                json!("0.5"),
                "option \"temperature\" must be of type float32",
            ),
            ("use_mmap", json!(1), "option \"use_mmap\" must be of type boolean"),
            ("use_mmap", json!("true"), "option \"use_mmap\" must be of type boolean"),
            ("stop", json!("x"), "option \"stop\" must be of type array"),
            (
                "keep_alive",
                json!("soon"),
                "option \"keep_alive\" must be of type duration",
            ),
            ("stop", json!({"a": 1}), "option \"stop\" must be of type array"),
            (
                "stop",
                json!(["a", 1]),
                "option \"stop\" must be of an array of strings",
            ),
        ];
        for (name, value, want) in bad {
            assert_eq!(check_option_value(name, &value).unwrap_err().to_string(), want);
        }
    }
}
