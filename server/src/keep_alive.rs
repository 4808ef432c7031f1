//! `keep_alive`: how long a model stays loaded after its last request.

use std::time::Duration;

/// How long a model stays loaded once idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// Unload this long after the last request ends (zero: right away).
    For(Duration),
    /// Never unload on a timer.
    Forever,
}

impl Default for KeepAlive {
    fn default() -> Self {
        Self::For(Duration::from_secs(300))
    }
}

impl KeepAlive {
    /// Parses a request's `keep_alive`: a number of seconds or a Go duration string; negative
    /// means forever.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        match value {
            serde_json::Value::Number(n) => {
                let secs = n.as_f64().ok_or("invalid keep_alive number")?;
                Ok(Self::from_secs_f64(secs))
            }
            serde_json::Value::String(s) => parse_go_duration(s).map(Self::from_secs_f64),
            other => Err(format!("Unsupported type: '{}'", json_type_name(other))),
        }
    }

    /// Parses `HERD_KEEP_ALIVE`: a duration string or a bare number of seconds.
    pub fn parse_env(value: &str) -> Result<Self, String> {
        match value.parse::<f64>() {
            Ok(secs) => Ok(Self::from_secs_f64(secs)),
            Err(_) => parse_go_duration(value).map(Self::from_secs_f64),
        }
    }

    fn from_secs_f64(secs: f64) -> Self {
        if secs < 0.0 || !secs.is_finite() {
            Self::Forever
        } else {
            Self::For(Duration::from_secs_f64(secs.min(1e12)))
        }
    }
}

fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Go's `time.ParseDuration`, in seconds: `"1h30m"`, `"300ms"`, `"-1m"`, `"0"`.
pub fn parse_go_duration(text: &str) -> Result<f64, String> {
    let err = || format!("time: invalid duration \"{text}\"");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(err());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| err())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration \"{text}\"")),
            unit => return Err(format!("time: unknown unit \"{unit}\" in duration \"{text}\"")),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_request_forms() {
        let five_min = KeepAlive::For(Duration::from_secs(300));
        assert_eq!(KeepAlive::from_json(&json!("5m")).unwrap(), five_min);
        assert_eq!(KeepAlive::from_json(&json!(300)).unwrap(), five_min);
        assert_eq!(
            KeepAlive::from_json(&json!("1h30m")).unwrap(),
            KeepAlive::For(Duration::from_secs(5400))
        );
        assert_eq!(
            KeepAlive::from_json(&json!("300ms")).unwrap(),
            KeepAlive::For(Duration::from_millis(300))
        );
        assert_eq!(KeepAlive::from_json(&json!(0)).unwrap(), KeepAlive::For(Duration::ZERO));
        assert_eq!(
            KeepAlive::from_json(&json!("0")).unwrap(),
            KeepAlive::For(Duration::ZERO)
        );
        assert_eq!(KeepAlive::from_json(&json!(-1)).unwrap(), KeepAlive::Forever);
        assert_eq!(KeepAlive::from_json(&json!("-1m")).unwrap(), KeepAlive::Forever);
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert!(KeepAlive::from_json(&json!("3600"))
            .unwrap_err()
            .contains("missing unit"));
        assert!(KeepAlive::from_json(&json!("5 minutes")).is_err());
        assert!(KeepAlive::from_json(&json!(true))
            .unwrap_err()
            .contains("Unsupported type"));
        assert_eq!(
            KeepAlive::parse_env("3600").unwrap(),
            KeepAlive::For(Duration::from_secs(3600))
        );
    }
}
