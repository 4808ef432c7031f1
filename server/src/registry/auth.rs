//! Registry authentication: credentials per registry host, `WWW-Authenticate` challenges
//! (Basic and Bearer), and the checks on a token realm before anything is sent to it.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::RegistryError;

/// A user name and password for one registry. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, ***)", self.username)
    }
}

/// Credentials by registry (`host[:port]`, lower case).
#[derive(Clone, Debug, Default)]
pub struct Credentials(HashMap<String, Credential>);

/// The JSON of `HERD_REGISTRY_AUTH` and of `registry-auth.json`: Docker's `config.json` form.
#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    /// base64 of `user:password`, as `docker login` writes it.
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Credentials {
    /// Reads `HERD_REGISTRY_AUTH` (JSON text) when given, else the file at `path` if it exists.
    /// Both use Docker's form: `{"auths": {"host:port": {"username": .., "password": ..}}}` or
    /// `{"auths": {"host:port": {"auth": "<base64 of user:password>"}}}`.
    pub fn load(env_json: Option<&str>, path: &Path) -> Result<Self, String> {
        let text = match env_json {
            Some(json) => json.to_string(),
            None => match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            },
        };
        let file: AuthFile = serde_json::from_str(&text).map_err(|e| format!("registry credentials: {e}"))?;
        let mut credentials = HashMap::new();
        for (host, entry) in file.auths {
            let credential = match (entry.username, entry.password, entry.auth) {
                (Some(username), Some(password), _) => Credential { username, password },
                (_, _, Some(auth)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|bytes| String::from_utf8(bytes).ok())
                        .ok_or_else(|| {
                            format!("registry credentials for {host}: auth is not base64 of user:password")
                        })?;
                    let (username, password) = decoded
                        .split_once(':')
                        .ok_or_else(|| format!("registry credentials for {host}: auth has no ':'"))?;
                    Credential {
                        username: username.into(),
                        password: password.into(),
                    }
                }
                _ => {
                    return Err(format!(
                        "registry credentials for {host}: need username and password, or auth"
                    ))
                }
            };
            let host = host
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_ascii_lowercase();
            credentials.insert(host, credential);
        }
        Ok(Self(credentials))
    }

    /// The credential for a registry, if one was configured.
    pub fn get(&self, authority: &str) -> Option<&Credential> {
        self.0.get(&authority.to_ascii_lowercase())
    }
}

/// What a registry's `401` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic.
    Basic,
    /// A token from `realm`, for `service` and `scope`; `error` is set when a token was
    /// refused (`insufficient_scope`, `invalid_token`).
    Bearer {
        /// Token endpoint.
        realm: String,
        /// The registry's service name.
        service: Option<String>,
        /// The access asked for (`repository:ns/model:pull`).
        scope: Option<String>,
        /// Why the presented token was refused.
        error: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value (`Bearer realm="..",service="..",scope=".."`).
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params);
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        Some(Self::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
            error: get("error"),
        })
    }
}

/// `key="value", key=value` pairs; quoted values may hold commas and `\"`.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
        }
        pairs.push((key.trim().to_string(), value.trim().to_string()));
    }
    pairs
}

/// Checks a Bearer realm before herd sends anything to it (CVE-2025-51471): it must be on
/// the registry's own host, use https unless the registry itself is plain http, and carry no
/// user info.
pub fn check_realm(realm: &str, registry: &reqwest::Url) -> Result<reqwest::Url, RegistryError> {
    let refuse = |why: &str| RegistryError::RealmRefused {
        realm: realm.chars().take(200).collect(),
        registry: registry.host_str().unwrap_or_default().to_string(),
        reason: why.to_string(),
    };
    let url = reqwest::Url::parse(realm).map_err(|_| refuse("it is not a URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if registry.scheme() == "http" => {}
        _ => return Err(refuse("its scheme is not https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("it carries user info"));
    }
    let same_host = url
        .host_str()
        .zip(registry.host_str())
        .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b));
    if !same_host {
        return Err(refuse("it is not on the registry's host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://r.example/token",service="r.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://r.example/token".into(),
                service: Some("r.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
                error: None,
            }
        );
        let refused = Challenge::parse(r#"Bearer realm="https://r/t",error="insufficient_scope""#).unwrap();
        assert!(matches!(refused, Challenge::Bearer { error: Some(e), .. } if e == "insufficient_scope"));
        assert_eq!(Challenge::parse(r#"Basic realm="herd-test""#), Some(Challenge::Basic));
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn a_realm_must_live_on_the_registry_host() {
        let registry = reqwest::Url::parse("https://registry.example:5000/v2/").unwrap();
        assert!(check_realm("https://registry.example/token", &registry).is_ok());
        for bad in [
            "https://evil.example/token",
            "http://registry.example/token",
            "https://user:pw@registry.example/token",
            "https://169.254.169.254/token",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(check_realm(bad, &registry).is_err(), "{bad} accepted");
        }
        let plain = reqwest::Url::parse("http://127.0.0.1:5000/v2/").unwrap();
        assert!(check_realm("http://127.0.0.1:5001/token", &plain).is_ok());
    }

    #[test]
    fn reads_docker_style_credentials_and_hides_passwords() {
        let creds = Credentials::load(
            Some(r#"{"auths":{"127.0.0.1:5001":{"username":"tester","password":"pw"},"Reg.Example":{"auth":"dTpw"}}}"#),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(creds.get("127.0.0.1:5001").unwrap().password, "pw");
        assert_eq!(creds.get("reg.example").unwrap().username, "u");
        assert!(!format!("{creds:?}").contains("pw"));
        assert!(Credentials::load(None, Path::new("/nonexistent"))
            .unwrap()
            .get("x")
            .is_none());
        assert!(Credentials::load(Some("{\"auths\":{\"h\":{}}}"), Path::new("/x")).is_err());
    }
}
