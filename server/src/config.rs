//! Server configuration, read once from the environment (`HERD_*`, with the `OLLAMA_*`
//! names accepted) and passed down. Nothing else in herd reads the environment.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::access::AccessPolicy;
use crate::keep_alive::KeepAlive;

/// Every environment variable herd reads, with what it means (printed by `herd serve --help`).
pub const ENV_VARS: &[(&str, &str)] = &[
    ("HERD_HOST", "address to bind or connect to (default 127.0.0.1:11434)"),
    ("HERD_MODELS", "models directory (default ~/.herd/models)"),
    ("HERD_KEEP_ALIVE", "how long an idle model stays loaded (default 5m)"),
    ("HERD_CONTEXT_LENGTH", "default context length in tokens (default 4096)"),
    ("HERD_NUM_PARALLEL", "requests each model decodes together (default 1)"),
    (
        "HERD_MAX_LOADED_MODELS",
        "models loaded at once; the least recently used idle one makes room (default 3)",
    ),
    (
        "HERD_MAX_QUEUE",
        "requests that may wait for a slot before the rest get 503 (default 512)",
    ),
    ("HERD_LOAD_TIMEOUT", "longest a model load may take (default 5m)"),
    (
        "HERD_HEALTH_TIMEOUT",
        "how long a runner may leave a health check unanswered before it is killed (default 2m)",
    ),
    (
        "HERD_SHUTDOWN_GRACE",
        "on SIGTERM or SIGINT, how long in-flight requests may finish before they are cancelled (default 10s)",
    ),
    ("HERD_RUNNER", "path of the herd-runner binary (default: next to herd)"),
    (
        "HERD_ALLOW_LOCAL_PATHS",
        "allow /api/create to read files on the server (default off)",
    ),
    (
        "HERD_REGISTRIES",
        "registries pulls and pushes may use, comma-separated host[:port] (default: any public host)",
    ),
    (
        "HERD_REGISTRY_AUTH",
        "registry credentials as JSON, Docker's form (default: ~/.herd/registry-auth.json)",
    ),
    (
        "HERD_API_KEY",
        "API keys, comma-separated, each KEY (admin) or KEY=read|infer|admin; when set, every request needs Authorization: Bearer KEY (default: none)",
    ),
    (
        "HERD_ORIGINS",
        "web page origins allowed to call the API besides local ones, comma-separated, * a wildcard (default: none)",
    ),
    ("HERD_DEBUG", "verbose logs"),
    ("HERD_LOG_FORMAT", "text (default) or json: one JSON object per log line"),
];

/// Variables whose values are never logged.
pub const SECRET_ENV_VARS: &[&str] = &["HERD_REGISTRY_AUTH", "HERD_API_KEY"];

/// The default port, Ollama's.
pub const DEFAULT_PORT: u16 = 11434;

/// What `herd serve` runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind.
    pub host: SocketAddr,
    /// Models directory.
    pub models_dir: PathBuf,
    /// Default keep-alive of a loaded model.
    pub keep_alive: KeepAlive,
    /// Default `num_ctx`.
    pub context_length: u32,
    /// Slots per runner.
    pub num_parallel: u32,
    /// Runners loaded at once.
    pub max_loaded_models: u32,
    /// Requests that may wait for a slot; beyond them, 503.
    pub max_queue: u32,
    /// Longest a model load may take.
    pub load_timeout: Duration,
    /// Longest a runner may leave a health check unanswered.
    pub health_timeout: Duration,
    /// On SIGTERM or SIGINT, how long in-flight requests may finish.
    pub shutdown_grace: Duration,
    /// The runner binary.
    pub runner_path: PathBuf,
    /// Whether `/api/create` may read server-side paths.
    pub allow_local_paths: bool,
    /// `HERD_REGISTRIES`: the registry allow-list, when set.
    pub registries: Option<String>,
    /// `HERD_REGISTRY_AUTH`: registry credentials as JSON, when set.
    pub registry_auth: Option<String>,
    /// The credentials file read when `HERD_REGISTRY_AUTH` is not set.
    pub registry_auth_file: PathBuf,
    /// Verbose logging.
    pub debug: bool,
    /// One JSON object per log line instead of text.
    pub json_logs: bool,
    /// Who may use the API (`HERD_API_KEY`, `HERD_ORIGINS`, the bound address).
    pub access: AccessPolicy,
}

/// A variable with a value herd cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    reason: String,
}

/// Reads `HERD_<name>`, else `OLLAMA_<name>`; trimmed of spaces and quotes as Ollama does.
pub fn env_var(name: &str) -> Option<String> {
    [format!("HERD_{name}"), format!("OLLAMA_{name}")]
        .iter()
        .filter_map(|key| std::env::var(key).ok())
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .find(|v| !v.is_empty())
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let host = match env_var("HOST") {
            Some(value) => parse_host(&value).map_err(|reason| ConfigError {
                name: "HERD_HOST",
                value: value.clone(),
                reason,
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
        };
        let models_dir = env_var("MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| home_dir().join(".herd/models"));
        let keep_alive = match env_var("KEEP_ALIVE") {
            Some(value) => KeepAlive::parse_env(&value).map_err(|reason| ConfigError {
                name: "HERD_KEEP_ALIVE",
                value: value.clone(),
                reason,
            })?,
            None => KeepAlive::default(),
        };
        let number = |name: &'static str, default: u32| -> Result<u32, ConfigError> {
            match env_var(name) {
                Some(value) => value.parse().map_err(|_| ConfigError {
                    name,
                    value,
                    reason: "expected a whole number".into(),
                }),
                None => Ok(default),
            }
        };
        // A Go duration or seconds; 0 or negative means no limit.
        let duration = |suffix: &str, name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match env_var(suffix) {
                Some(value) => match KeepAlive::parse_env(&value) {
                    Ok(KeepAlive::For(d)) if !d.is_zero() => Ok(d),
                    Ok(_) => Ok(Duration::from_secs(u64::MAX / 4)),
                    Err(reason) => Err(ConfigError { name, value, reason }),
                },
                None => Ok(default),
            }
        };
        let load_timeout = duration("LOAD_TIMEOUT", "HERD_LOAD_TIMEOUT", Duration::from_secs(300))?;
        Ok(Self {
            host,
            models_dir,
            keep_alive,
            context_length: number("CONTEXT_LENGTH", 4096)?.max(4),
            num_parallel: number("NUM_PARALLEL", 1)?.max(1),
            max_loaded_models: number("MAX_LOADED_MODELS", 3)?.max(1),
            max_queue: number("MAX_QUEUE", 512)?,
            load_timeout,
            health_timeout: duration("HEALTH_TIMEOUT", "HERD_HEALTH_TIMEOUT", Duration::from_secs(120))?,
            shutdown_grace: duration("SHUTDOWN_GRACE", "HERD_SHUTDOWN_GRACE", Duration::from_secs(10))?,
            runner_path: env_var("RUNNER").map(PathBuf::from).unwrap_or_else(default_runner_path),
            allow_local_paths: env_var("ALLOW_LOCAL_PATHS").is_some_and(|v| truthy(&v)),
            registries: env_var("REGISTRIES"),
            registry_auth: std::env::var("HERD_REGISTRY_AUTH")
                .ok()
                .filter(|v| !v.trim().is_empty()),
            registry_auth_file: home_dir().join(".herd/registry-auth.json"),
            debug: env_var("DEBUG").is_some_and(|v| truthy(&v)),
            json_logs: match env_var("LOG_FORMAT").as_deref().map(str::trim) {
                None | Some("" | "text") => false,
                Some("json") => true,
                Some(other) => {
                    return Err(ConfigError {
                        name: "HERD_LOG_FORMAT",
                        value: other.to_string(),
                        reason: "expected text or json".into(),
                    })
                }
            },
            // HERD_ only: OLLAMA_API_KEY is the Ollama client's key for ollama.com.
            access: AccessPolicy::new(
                host,
                std::env::var("HERD_API_KEY").ok().as_deref(),
                env_var("ORIGINS").as_deref(),
            )
            .map_err(|reason| ConfigError {
                name: "HERD_API_KEY",
                value: "(not shown)".into(),
                reason,
            })?,
        })
    }
}

fn truthy(value: &str) -> bool {
    matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on" | "2")
}

/// `~/.herd`: the client's history, the registry credentials.
pub fn herd_home() -> PathBuf {
    home_dir().join(".herd")
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `herd-runner` next to the running executable.
fn default_runner_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("herd-runner")))
        .unwrap_or_else(|| PathBuf::from("herd-runner"))
}

/// Parses Ollama's host forms: `host`, `host:port`, `:port`, `scheme://host:port[/path]`.
pub fn parse_host(value: &str) -> Result<SocketAddr, String> {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => ("http", value),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let default_port = match scheme {
        "https" => 443,
        "http" if value.contains("://") => 80,
        _ => DEFAULT_PORT,
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => {
            (host, port.parse::<u16>().map_err(|_| format!("invalid port {port:?}"))?)
        }
        Some(("", port)) => (
            "127.0.0.1",
            port.parse::<u16>().map_err(|_| format!("invalid port {port:?}"))?,
        ),
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ollama_host_forms() {
        assert_eq!(parse_host("127.0.0.1").unwrap(), "127.0.0.1:11434".parse().unwrap());
        assert_eq!(parse_host("0.0.0.0:8080").unwrap(), "0.0.0.0:8080".parse().unwrap());
        assert_eq!(parse_host(":9000").unwrap(), "127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            parse_host("http://127.0.0.1:5/x").unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
        assert_eq!(parse_host("http://127.0.0.1").unwrap(), "127.0.0.1:80".parse().unwrap());
        assert_eq!(parse_host("[::1]:7").unwrap(), "[::1]:7".parse().unwrap());
        assert!(parse_host("127.0.0.1:notaport").is_err());
    }
}
