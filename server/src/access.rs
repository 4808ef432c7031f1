//! Who may use which route: API keys with scopes (`HERD_API_KEY`), the Host header on a
//! loopback listener (DNS rebinding), the web pages that may call the API (CORS,
//! `HERD_ORIGINS`), and model management from other machines.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest as _, Sha256};

/// What a route does, from least to most powerful; a key's scope allows its own and the
/// ones below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Reading: tags, show, ps, version, /v1/models.
    Read,
    /// Inference: generate, chat, embed and the /v1 completions.
    Infer,
    /// Model management: pull, push, create, copy, delete, blobs, export, import.
    Admin,
}

impl Scope {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "infer" => Some(Self::Infer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// The scope a request to `path` needs; `None` for the open heartbeat (`/`) and
    /// readiness probe (`/ready`).
    pub fn of(path: &str) -> Option<Self> {
        let path = path.trim_end_matches('/');
        if path.is_empty() || path == "/ready" {
            return None;
        }
        Some(match path {
            "/api/tags" | "/api/show" | "/api/ps" | "/api/version" | "/metrics" => Self::Read,
            p if p == "/v1/models" || p.starts_with("/v1/models/") => Self::Read,
            "/api/generate" | "/api/chat" | "/api/embed" | "/api/embeddings" => Self::Infer,
            p if p.starts_with("/v1/") => Self::Infer,
            _ => Self::Admin,
        })
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No key, or not one of the configured keys: 401.
    #[error("unauthorized: this server needs an API key (Authorization: Bearer <key>)")]
    Unauthorized,
    /// A key whose scope does not cover the route: 403.
    #[error("forbidden: the API key's scope does not allow this request")]
    OutOfScope,
    /// A Host header that is not a loopback name on a loopback listener: 403.
    #[error("forbidden: host {0:?} is not allowed on a loopback listener")]
    Host(String),
    /// Model management from another machine with no keys configured: 403.
    #[error("forbidden: managing models from another machine needs an API key; set HERD_API_KEY (an admin key) on the server")]
    RemoteAdmin,
    /// A web page whose origin is not allowed: 403.
    #[error("forbidden: origin {0:?} is not allowed; add it to HERD_ORIGINS on the server")]
    Origin(String),
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            _ => 403,
        }
    }
}

/// The access rules of one server.
#[derive(Clone, Debug)]
pub struct AccessPolicy {
    /// The listener's address.
    bound: SocketAddr,
    /// sha256 of each key, with its scope (hashes, so that the comparison takes the same
    /// time whatever the key shares with a guess).
    keys: Vec<([u8; 32], Scope)>,
    /// The web pages that may call the API.
    origins: Origins,
}

/// What the policy looks at in a request.
pub struct RequestFacts<'a> {
    /// The URL path.
    pub path: &'a str,
    /// The Host header.
    pub host: Option<&'a str>,
    /// The Authorization header.
    pub authorization: Option<&'a str>,
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The Origin header a browser sends with a cross-origin request.
    pub origin: Option<&'a str>,
}

impl AccessPolicy {
    /// The policy for a listener on `bound` with `HERD_API_KEY`'s value (keys separated by
    /// commas, each `KEY` (admin) or `KEY=read|infer|admin`) and `HERD_ORIGINS`' (origins
    /// allowed beyond the local ones, comma-separated, `*` a wildcard).
    pub fn new(bound: SocketAddr, api_keys: Option<&str>, origins: Option<&str>) -> Result<Self, String> {
        let mut keys = Vec::new();
        for entry in api_keys
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (key, scope) = match entry.rsplit_once('=') {
                Some((key, scope)) => (
                    key,
                    Scope::parse(scope)
                        .ok_or_else(|| format!("unknown scope {scope:?} (expected read, infer or admin)"))?,
                ),
                None => (entry, Scope::Admin),
            };
            if key.len() < 8 {
                return Err("an API key must have at least 8 characters".into());
            }
            keys.push((hash(key), scope));
        }
        Ok(Self {
            bound,
            keys,
            origins: Origins::new(origins),
        })
    }

    /// Whether a CORS preflight may be answered: the Host and the Origin are checked, not the
    /// key (browsers send none with a preflight).
    pub fn check_preflight(&self, request: &RequestFacts<'_>) -> Result<(), Refusal> {
        if self.bound.ip().is_loopback() {
            if let Some(host) = request.host.filter(|h| !is_loopback_host(h)) {
                return Err(Refusal::Host(host.chars().take(100).collect()));
            }
        }
        match request.origin {
            Some(origin) if !self.allows_origin(origin, request.host) => {
                Err(Refusal::Origin(origin.chars().take(100).collect()))
            }
            _ => Ok(()),
        }
    }

    /// Whether a page from `origin` may read the answers of a server reached as `host`:
    /// the same origin, a local one, or one `HERD_ORIGINS` names.
    pub fn allows_origin(&self, origin: &str, host: Option<&str>) -> bool {
        let same_origin = host.is_some_and(|host| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        });
        same_origin || self.origins.allow(origin)
    }

    /// Whether the request may go on.
    pub fn check(&self, request: &RequestFacts<'_>) -> Result<(), Refusal> {
        self.check_preflight(request)?;
        let Some(needed) = Scope::of(request.path) else {
            return Ok(());
        };
        if self.keys.is_empty() {
            let remote = request.remote.is_some_and(|r| !r.ip().is_loopback());
            return if needed == Scope::Admin && remote {
                Err(Refusal::RemoteAdmin)
            } else {
                Ok(())
            };
        }
        let presented = request
            .authorization
            .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")))
            .map(|k| hash(k.trim()))
            .ok_or(Refusal::Unauthorized)?;
        let scope = self
            .keys
            .iter()
            .fold(None, |found, (key, scope)| {
                if constant_time_eq(key, &presented) {
                    Some(*scope)
                } else {
                    found
                }
            })
            .ok_or(Refusal::Unauthorized)?;
        if scope >= needed {
            Ok(())
        } else {
            Err(Refusal::OutOfScope)
        }
    }
}

/// Origins of the pages that may call the API: Ollama's defaults (local pages, desktop app
/// shells, editor webviews, browser extensions) and `HERD_ORIGINS`.
#[derive(Clone, Debug)]
struct Origins {
    /// Patterns, `*` matching any run of characters.
    patterns: Vec<String>,
}

impl Origins {
    fn new(extra: Option<&str>) -> Self {
        let mut patterns = Vec::new();
        for host in ["localhost", "127.0.0.1", "0.0.0.0", "[::1]"] {
            for scheme in ["http", "https"] {
                patterns.push(format!("{scheme}://{host}"));
                patterns.push(format!("{scheme}://{host}:*"));
            }
        }
        for scheme in [
            "app",
            "file",
            "tauri",
            "vscode-webview",
            "vscode-file",
            "chrome-extension",
            "moz-extension",
            "safari-web-extension",
        ] {
            patterns.push(format!("{scheme}://*"));
        }
        patterns.extend(
            extra
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_ascii_lowercase),
        );
        Self { patterns }
    }

    fn allow(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.patterns.iter().any(|pattern| wildcard_match(pattern, &origin))
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// `localhost`, `*.localhost` or a loopback address, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(path: &'a str, host: Option<&'a str>, authorization: Option<&'a str>) -> RequestFacts<'a> {
        RequestFacts {
            path,
            host,
            authorization,
            remote: Some("127.0.0.1:5000".parse().unwrap()),
            origin: None,
        }
    }

    #[test]
    fn routes_need_the_scope_of_what_they_do() {
        assert_eq!(Scope::of("/"), None);
        assert_eq!(Scope::of("/api/tags"), Some(Scope::Read));
        assert_eq!(Scope::of("/metrics"), Some(Scope::Read));
        assert_eq!(Scope::of("/ready"), None);
        assert_eq!(Scope::of("/v1/models/gemma3:270m"), Some(Scope::Read));
        assert_eq!(Scope::of("/api/chat"), Some(Scope::Infer));
        assert_eq!(Scope::of("/v1/messages"), Some(Scope::Infer));
        assert_eq!(Scope::of("/api/pull"), Some(Scope::Admin));
        assert_eq!(Scope::of("/api/blobs/sha256:00"), Some(Scope::Admin));
    }

    #[test]
    fn keys_and_scopes_are_checked() {
        let bound = "127.0.0.1:11434".parse().unwrap();
        let policy = AccessPolicy::new(bound, Some("reader-key-1=read, admin-key-1"), None).unwrap();
        assert_eq!(policy.check(&facts("/", None, None)), Ok(()));
        assert_eq!(
            policy.check(&facts("/api/tags", None, None)),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            policy.check(&facts("/api/tags", None, Some("Bearer wrong-key-1"))),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            policy.check(&facts("/api/tags", None, Some("Bearer reader-key-1"))),
            Ok(())
        );
        assert_eq!(
            policy.check(&facts("/api/chat", None, Some("Bearer reader-key-1"))),
            Err(Refusal::OutOfScope)
        );
        assert_eq!(
            policy.check(&facts("/api/delete", None, Some("Bearer admin-key-1"))),
            Ok(())
        );
        assert!(AccessPolicy::new(bound, Some("short"), None).is_err());
        assert!(AccessPolicy::new(bound, Some("long-enough=root"), None).is_err());
    }

    #[test]
    fn a_loopback_listener_takes_only_loopback_host_names() {
        let policy = AccessPolicy::new("127.0.0.1:11434".parse().unwrap(), None, None).unwrap();
        for host in [
            "localhost:11434",
            "127.0.0.1:11434",
            "[::1]:11434",
            "LOCALHOST",
            "app.localhost",
        ] {
            assert_eq!(policy.check(&facts("/api/tags", Some(host), None)), Ok(()), "{host}");
        }
        for host in ["evil.example", "evil.example:11434", "127.0.0.1.evil.example"] {
            assert!(
                matches!(
                    policy.check(&facts("/api/tags", Some(host), None)),
                    Err(Refusal::Host(_))
                ),
                "{host}"
            );
        }
        // Bound to all interfaces, any Host goes; model management from afar needs a key.
        let open = AccessPolicy::new("0.0.0.0:11434".parse().unwrap(), None, None).unwrap();
        let mut remote = facts("/api/delete", Some("server.lan"), None);
        remote.remote = Some("192.168.1.20:5000".parse().unwrap());
        assert_eq!(open.check(&remote), Err(Refusal::RemoteAdmin));
        remote.path = "/api/chat";
        assert_eq!(open.check(&remote), Ok(()));
    }

    #[test]
    fn local_pages_and_named_origins_may_call_the_api() {
        let policy = AccessPolicy::new(
            "127.0.0.1:11434".parse().unwrap(),
            None,
            Some("https://chat.example.com, https://*.corp.example"),
        )
        .unwrap();
        for origin in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "http://[::1]:5173",
            "app://herd-desktop",
            "tauri://localhost",
            "vscode-webview://abc123",
            "chrome-extension://abcdefghijklmnop",
            "https://chat.example.com",
            "https://wiki.corp.example",
            "HTTP://LOCALHOST:3000",
        ] {
            assert!(policy.allows_origin(origin, None), "{origin}");
        }
        for origin in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "https://chat.example.com.evil.example",
            "https://corp.example",
            "null",
        ] {
            assert!(!policy.allows_origin(origin, None), "{origin}");
        }
        // Served from its own address, a page is same-origin whatever HERD_ORIGINS says.
        assert!(policy.allows_origin("http://server.lan:11434", Some("server.lan:11434")));
        let mut request = facts("/api/tags", Some("localhost:11434"), None);
        request.origin = Some("https://evil.example");
        assert_eq!(
            policy.check(&request),
            Err(Refusal::Origin("https://evil.example".into()))
        );
        let everyone = AccessPolicy::new("127.0.0.1:11434".parse().unwrap(), None, Some("*")).unwrap();
        assert!(everyone.allows_origin("https://anything.example", None));
    }

    #[test]
    fn wildcards_match_any_run_of_characters() {
        assert!(wildcard_match("http://localhost:*", "http://localhost:8080"));
        assert!(!wildcard_match("http://localhost:*", "http://localhost"));
        assert!(wildcard_match("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard_match("a*b*c", "a-x-c"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("abc", "abcd"));
        assert!(!wildcard_match("ab*ba", "aba"));
    }
}
