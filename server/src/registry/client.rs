//! One registry repository as seen over HTTP: URLs, the 401 -> challenge -> retry flow,
//! size-capped bodies, the registry's error bodies, and blob redirects that never carry the
//! registry's credentials to another host.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, LOCATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use super::auth::{check_realm, Challenge, Credential};
use super::policy::RegistryPolicy;
use super::RegistryError;
use crate::store::ModelName;

/// Largest token response read (CVE-2024-12886 caps, compressed or not).
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Largest error body read from a registry.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Redirects followed for one blob request.
const MAX_REDIRECTS: usize = 10;

/// What the connection will be used for: the token scope asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `pull`.
    Pull,
    /// `pull,push`.
    Push,
}

/// The HTTP clients a connection sends through.
#[derive(Clone)]
pub struct HttpClients {
    /// For manifests, tokens and uploads: answers may be gzip-encoded, and are read capped.
    pub api: reqwest::Client,
    /// For blob bytes: never decoded, so what is stored is what the digest covers.
    pub blobs: reqwest::Client,
}

/// A registry repository (`host/namespace/model`) and the authorization obtained for it.
pub struct Connection {
    clients: HttpClients,
    policy: RegistryPolicy,
    /// `scheme://host[:port]/`.
    base: Url,
    /// `host[:port]`, as in the model name.
    authority: String,
    /// `namespace/model`.
    repository: String,
    credential: Option<Credential>,
    access: Access,
    /// The `Authorization` header currently used; shared by the parallel parts of a pull.
    authorization: tokio::sync::Mutex<Option<HeaderValue>>,
}

/// The registry's error body: `{"errors":[{"code":..,"message":..}]}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct TokenBody {
    token: Option<String>,
    access_token: Option<String>,
}

impl Connection {
    /// A connection to the repository of `name`, over http when `insecure`.
    pub fn new(
        clients: HttpClients,
        policy: RegistryPolicy,
        name: &ModelName,
        insecure: bool,
        credential: Option<Credential>,
        access: Access,
    ) -> Result<Self, RegistryError> {
        let scheme = match name.scheme.as_deref() {
            Some("http") if !insecure => return Err(RegistryError::InsecureProtocol),
            Some("http") => "http",
            Some(_) => "https",
            None if insecure => "http",
            None => "https",
        };
        policy.check_registry(&name.host)?;
        let base = Url::parse(&format!("{scheme}://{}/", name.host)).map_err(|_| RegistryError::NotAllowed {
            host: name.host.clone(),
            reason: "it is not a valid host".into(),
        })?;
        Ok(Self {
            clients,
            policy,
            base,
            authority: name.host.clone(),
            repository: format!("{}/{}", name.namespace, name.model),
            credential,
            access,
            authorization: tokio::sync::Mutex::new(None),
        })
    }

    /// The registry, `host[:port]`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `namespace/model`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `<base>/v2/<repository>/<rest>`.
    pub fn url(&self, rest: &str) -> Url {
        self.base
            .join(&format!("v2/{}/{rest}", self.repository))
            .expect("model names are valid URL path segments")
    }

    /// Resolves an upload `Location`, which may be relative.
    pub fn resolve(&self, location: &str) -> Result<Url, RegistryError> {
        let url = self
            .base
            .join(location)
            .map_err(|_| self.protocol(format!("the registry sent an invalid location {location:?}")))?;
        self.check_target(&url)?;
        Ok(url)
    }

    /// A protocol error from this registry.
    pub fn protocol(&self, message: String) -> RegistryError {
        RegistryError::Protocol {
            registry: self.authority.clone(),
            message,
        }
    }

    /// Sends the request `build` makes with the API client, authenticating on a 401 and
    /// retrying once.
    pub async fn send(&self, build: impl Fn(&reqwest::Client) -> RequestBuilder) -> Result<Response, RegistryError> {
        self.send_with(&self.clients.api, build).await
    }

    async fn send_with(
        &self,
        client: &reqwest::Client,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut authenticated = false;
        loop {
            let used = self.authorization.lock().await.clone();
            let mut request = build(client);
            if let Some(value) = &used {
                request = request.header(AUTHORIZATION, value.clone());
            }
            let response = request.send().await.map_err(|e| self.transport(e))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse);
            let detail = self.error_text(response).await;
            if let Some(Challenge::Bearer { error: Some(error), .. }) = &challenge {
                if error == "insufficient_scope" && used.is_some() {
                    return Err(RegistryError::InsufficientScope {
                        registry: self.authority.clone(),
                        repository: self.repository.clone(),
                        access: self.scope_action().into(),
                    });
                }
            }
            if authenticated {
                return Err(self.unauthorized(detail));
            }
            let Some(challenge) = challenge else {
                return Err(self.unauthorized(detail));
            };
            self.authenticate(challenge, used).await?;
            authenticated = true;
        }
    }

    fn scope_action(&self) -> &'static str {
        match self.access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        }
    }

    fn unauthorized(&self, detail: String) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.authority.clone(),
            reason: match &self.credential {
                None => format!(
                    "{detail}; no credentials are configured for it (HERD_REGISTRY_AUTH or ~/.herd/registry-auth.json)"
                ),
                Some(c) => format!(
                    "{detail}; the registry refused the credentials of user '{}'",
                    c.username
                ),
            },
        }
    }

    /// Answers a challenge: Basic with the configured credential, or a Bearer token fetched
    /// from a realm that passed [`check_realm`]. A no-op when another request already
    /// replaced the authorization `used`.
    async fn authenticate(&self, challenge: Challenge, used: Option<HeaderValue>) -> Result<(), RegistryError> {
        let mut current = self.authorization.lock().await;
        if *current != used {
            return Ok(());
        }
        let value = match challenge {
            Challenge::Basic => {
                let credential = self
                    .credential
                    .as_ref()
                    .ok_or_else(|| self.unauthorized("the registry asks for a user name and password".into()))?;
                basic(credential)
            }
            Challenge::Bearer {
                realm, service, scope, ..
            } => {
                let mut url = check_realm(&realm, &self.base)?;
                self.check_target(&url)?;
                // What this transfer needs, asked for up front: a push that first HEADs a blob
                // is challenged for pull only, and a pull-only token would fail its upload.
                let needed = format!("repository:{}:{}", self.repository, self.scope_action());
                let scopes: Vec<String> = match scope {
                    Some(scope) if scope != needed => vec![scope, needed],
                    _ => vec![needed],
                };
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = &service {
                        query.append_pair("service", service);
                    }
                    for scope in &scopes {
                        query.append_pair("scope", scope);
                    }
                }
                if url.query() == Some("") {
                    url.set_query(None);
                }
                let mut request = self.clients.api.get(url);
                if let Some(credential) = &self.credential {
                    request = request.header(AUTHORIZATION, basic(credential));
                }
                let response = request.send().await.map_err(|e| self.transport(e))?;
                if !response.status().is_success() {
                    let detail = self.error_text(response).await;
                    return Err(self.unauthorized(format!("the token service refused: {detail}")));
                }
                let body = read_capped(response, MAX_TOKEN_BYTES, "token response").await?;
                let token: TokenBody =
                    serde_json::from_slice(&body).map_err(|e| self.protocol(format!("invalid token response: {e}")))?;
                let token = token
                    .token
                    .or(token.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.protocol("the token response holds no token".into()))?;
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| self.protocol("the token is not a valid header value".into()))?
            }
        };
        *current = Some(value);
        Ok(())
    }

    /// GETs a blob (a byte range of it when `range` is given), following redirects: to the
    /// registry's own host with its authorization, to any other host (a blob store) without.
    pub async fn get_blob(&self, digest: &str, range: Option<(u64, u64)>) -> Result<Response, RegistryError> {
        let with_range = |request: RequestBuilder| match range {
            Some((start, end)) => request.header(reqwest::header::RANGE, format!("bytes={start}-{end}")),
            None => request,
        };
        let first = self.url(&format!("blobs/{digest}"));
        let mut response = self
            .send_with(&self.clients.blobs, |c| with_range(c.get(first.clone())))
            .await?;
        for _ in 0..MAX_REDIRECTS {
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| self.protocol("a redirect without a location".into()))?;
            let next = response
                .url()
                .join(location)
                .map_err(|_| self.protocol(format!("an invalid redirect location {location:?}")))?;
            self.check_target(&next)?;
            if self.base.scheme() == "https" && next.scheme() != "https" {
                return Err(self.protocol(format!("refusing a redirect from https to {}", next.scheme())));
            }
            response = if same_origin(&next, &self.base) {
                self.send_with(&self.clients.blobs, |c| with_range(c.get(next.clone())))
                    .await?
            } else {
                with_range(self.clients.blobs.get(next))
                    .send()
                    .await
                    .map_err(|e| self.transport(e))?
            };
        }
        Err(self.protocol("too many redirects".into()))
    }

    /// Refuses URLs that are not http(s) or point at a host the policy forbids.
    fn check_target(&self, url: &Url) -> Result<(), RegistryError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.protocol(format!("refusing a {} URL", url.scheme())));
        }
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        if authority.eq_ignore_ascii_case(&self.authority) {
            return Ok(());
        }
        self.policy.check_host(&authority)
    }

    /// A transport failure (connection refused, reset, timeout, refused address).
    pub fn transport(&self, error: reqwest::Error) -> RegistryError {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        RegistryError::Transport {
            registry: self.authority.clone(),
            message,
        }
    }

    /// The registry's error message from a failed response (`CODE: message`), capped.
    pub async fn error_text(&self, response: Response) -> String {
        let status = response.status();
        let body = read_capped(response, MAX_ERROR_BYTES, "error")
            .await
            .unwrap_or_default();
        let described = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .map(|b| {
                b.errors
                    .iter()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|s| !s.is_empty());
        match described {
            Some(text) => format!("{status} ({})", text.to_lowercase()),
            None => status.to_string(),
        }
    }

    /// An unexpected answer.
    pub async fn unexpected(&self, what: &str, response: Response) -> RegistryError {
        let detail = self.error_text(response).await;
        self.protocol(format!("{what}: {detail}"))
    }
}

fn basic(credential: &Credential) -> HeaderValue {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", credential.username, credential.password));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// Reads a whole body, failing as soon as it passes `limit` bytes (after decoding), whatever
/// `Content-Length` claims.
pub async fn read_capped(response: Response, limit: usize, what: &str) -> Result<Bytes, RegistryError> {
    let too_large = || RegistryError::ResponseTooLarge {
        what: what.to_string(),
        limit,
    };
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let encoded = response.headers().contains_key(reqwest::header::CONTENT_ENCODING);
    if !encoded && declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Interrupted(format!("reading the {what}: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
