//! Pull and push of models over the OCI distribution protocol (Docker Registry HTTP API v2),
//! in the layout Ollama's registry serves.
//!
//! A thin client on `reqwest` rather than `oci-client`: that crate sends its token request
//! (with the Basic credentials) to whatever realm a registry names and reads manifest and
//! token bodies without a size cap, the two holes behind CVE-2025-51471 and CVE-2024-12886;
//! herd must refuse the first and cap the second, and needs resumable ranged parts on disk.

mod auth;
mod client;
mod download;
mod policy;
mod pull;
mod push;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

pub use auth::Credentials;
use client::HttpClients;
pub use client::{Access, Connection};
use download::BlobProgress;
pub use policy::RegistryPolicy;

use crate::store::{Digest, ModelName, StoreError};

/// How often a transfer reports its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry's host is not allowed (allow-list or a local/metadata address).
    #[error("registry not allowed: {host}: {reason}")]
    NotAllowed {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// A plain-http registry without `insecure`.
    #[error("insecure protocol http: set \"insecure\": true (herd pull --insecure) to use a plain-http registry")]
    InsecureProtocol,
    /// The registry has no such repository or tag.
    #[error("pull model manifest: model '{name}' not found in registry {registry}")]
    ManifestNotFound {
        /// The model.
        name: String,
        /// The registry.
        registry: String,
    },
    /// Authentication failed or is missing.
    #[error("unauthorized: registry {registry}: {reason}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// What the registry said and what herd had sent.
        reason: String,
    },
    /// The token was accepted but does not allow this access.
    #[error("registry {registry} denied {access} access to {repository} (insufficient_scope): the credentials do not allow it")]
    InsufficientScope {
        /// The registry.
        registry: String,
        /// `namespace/model`.
        repository: String,
        /// `pull` or `pull,push`.
        access: String,
    },
    /// A token realm herd will not send anything to.
    #[error("refusing the token realm {realm} of registry {registry}: {reason}")]
    RealmRefused {
        /// The realm, shortened.
        realm: String,
        /// The registry.
        registry: String,
        /// Why.
        reason: String,
    },
    /// A manifest, token or error body over its cap.
    #[error("response too large: the registry's {what} is over {limit} bytes")]
    ResponseTooLarge {
        /// Which body.
        what: String,
        /// The cap.
        limit: usize,
    },
    /// A manifest that fails validation; nothing was written.
    #[error("invalid manifest from registry {registry}: {reason}")]
    InvalidManifest {
        /// The registry.
        registry: String,
        /// What is wrong.
        reason: String,
    },
    /// The registry could not be reached.
    #[error("cannot reach registry {registry}: {message}")]
    Transport {
        /// The registry.
        registry: String,
        /// The failure.
        message: String,
    },
    /// A transfer broke off.
    #[error("transfer interrupted: {0}")]
    Interrupted(String),
    /// The registry answered something the protocol does not allow.
    #[error("registry {registry}: {message}")]
    Protocol {
        /// The registry.
        registry: String,
        /// What happened.
        message: String,
    },
    /// The registry answered an unexpected status.
    #[error("registry {registry}: {message}")]
    Status {
        /// The registry.
        registry: String,
        /// The status and the registry's message.
        message: String,
        /// Whether trying again may help (5xx, 408, 429).
        retryable: bool,
    },
    /// Downloaded bytes do not hash to their digest (twice).
    #[error("digest mismatch, file must be downloaded again: want {expected}, got {actual}")]
    DigestMismatch {
        /// The manifest's digest.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A local blob does not match the manifest that names it.
    #[error("cannot push {digest}: the blob in the store has {actual} bytes, its manifest says {expected}")]
    LocalBlobSize {
        /// The blob.
        digest: Digest,
        /// Size in the manifest.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },
    /// The missing blobs do not fit on the disk.
    #[error(
        "not enough disk space to pull {name}: {needed} bytes more are needed, {free} are free in the models directory"
    )]
    NotEnoughSpace {
        /// The model.
        name: String,
        /// Bytes still to download.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// A store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The failure of a download another pull started and this one waited for.
    #[error(transparent)]
    Shared(Arc<RegistryError>),
}

impl RegistryError {
    /// The HTTP status of this error when it is the answer to an API request.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotAllowed { .. } | Self::InsufficientScope { .. } => 403,
            Self::InsecureProtocol => 400,
            Self::ManifestNotFound { .. } => 404,
            Self::Unauthorized { .. } => 401,
            Self::NotEnoughSpace { .. } | Self::Store(StoreError::DiskFull) => 507,
            Self::Store(StoreError::ModelNotFound(_)) => 404,
            Self::Store(_) | Self::LocalBlobSize { .. } => 500,
            Self::Shared(inner) => inner.status(),
            _ => 502,
        }
    }

    /// Whether a transfer may succeed when tried again.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Interrupted(_) => true,
            Self::Status { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// One line of a pull's or push's progress, in Ollama's form.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransferStatus {
    /// `pulling manifest`, `pulling <12 hex>`, `verifying sha256 digest`, `success`, ...
    pub status: String,
    /// The blob, on per-blob lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// The blob's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Bytes done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

impl TransferStatus {
    /// A status line without a blob.
    pub fn message(status: &str) -> Self {
        Self {
            status: status.to_string(),
            digest: None,
            total: None,
            completed: None,
        }
    }

    /// A blob line: `<verb> <first 12 hex>` with its byte counts.
    pub fn blob(verb: &str, digest: &Digest, total: u64, completed: u64) -> Self {
        Self {
            status: format!("{verb} {}", &digest.hex()[..12]),
            digest: Some(digest.clone()),
            total: Some(total),
            completed: Some(completed),
        }
    }
}

/// Where a transfer sends its progress; a closed receiver (the client left) is not an error.
#[derive(Clone)]
pub struct Progress(tokio::sync::mpsc::UnboundedSender<TransferStatus>);

impl Progress {
    /// Progress into `sender`.
    pub fn new(sender: tokio::sync::mpsc::UnboundedSender<TransferStatus>) -> Self {
        Self(sender)
    }

    fn send(&self, status: TransferStatus) {
        let _ = self.0.send(status);
    }
}

/// A blob download in flight, shared by every pull that needs the blob.
struct InFlight {
    progress: Arc<BlobProgress>,
    result: tokio::sync::watch::Receiver<Option<Result<(), Arc<RegistryError>>>>,
    task: tokio::task::AbortHandle,
    waiters: usize,
}

type Downloads = Arc<Mutex<HashMap<Digest, InFlight>>>;

/// herd's registry client: the HTTP clients, the address policy, the credentials and the
/// downloads in flight.
pub struct Registry {
    clients: HttpClients,
    policy: RegistryPolicy,
    credentials: Credentials,
    downloads: Downloads,
}

impl Registry {
    /// A client that applies `policy` to every connection and answers challenges with
    /// `credentials`.
    pub fn new(policy: RegistryPolicy, credentials: Credentials) -> Result<Self, RegistryError> {
        let build = |decode: bool| {
            let builder = reqwest::Client::builder()
                .user_agent(concat!("herd/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(15))
                .dns_resolver(Arc::new(policy::PolicyResolver { policy: policy.clone() }));
            let builder = if decode { builder } else { builder.no_gzip() };
            builder
                .build()
                .map_err(|e| RegistryError::Interrupted(format!("cannot build an HTTP client: {e}")))
        };
        Ok(Self {
            clients: HttpClients {
                api: build(true)?,
                blobs: build(false)?,
            },
            policy,
            credentials,
            downloads: Arc::default(),
        })
    }

    /// A connection to the repository of `name` for `access`, after the policy checks, so
    /// that a refused registry is answered before any progress is streamed.
    pub fn connect(&self, name: &ModelName, insecure: bool, access: Access) -> Result<Connection, RegistryError> {
        Connection::new(
            self.clients.clone(),
            self.policy.clone(),
            name,
            insecure,
            self.credentials.get(&name.host).cloned(),
            access,
        )
    }
}

/// Reports `progress` of one blob every [`PROGRESS_INTERVAL`] until `work` ends.
async fn report_while<T>(work: impl std::future::Future<Output = T>, mut report: impl FnMut()) -> T {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = ticks.tick() => report(),
        }
    }
}
