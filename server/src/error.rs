//! herd's domain errors, each with the HTTP status it maps to (in one place: [`HerdError::status`]).

use crate::registry::RegistryError;
use crate::store::StoreError;
use crate::supervisor::RunnerError;

/// Any failure of a domain operation.
#[derive(Debug, thiserror::Error)]
pub enum HerdError {
    /// A store failure (not found, digest mismatch, disk full...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A pull or push failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The runner failed to load or serve.
    #[error(transparent)]
    Runner(#[from] RunnerError),
    /// The request is invalid; the message says why.
    #[error("{0}")]
    BadRequest(String),
    /// A file or blob that should be a GGUF model is not one.
    #[error("{0}")]
    InvalidModelFile(String),
    /// Something went wrong on the server's side.
    #[error("{0}")]
    Internal(String),
    /// Every slot is busy and the queue is full (Ollama's text, two spaces included).
    #[error("server busy, please try again.  maximum pending requests exceeded")]
    Busy,
}

impl HerdError {
    /// The HTTP status code clients expect for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::Store(StoreError::ModelNotFound(_) | StoreError::BlobNotFound(_)) => 404,
            Self::Store(StoreError::DigestMismatch { .. }) => 400,
            Self::Store(
                StoreError::CorruptManifest { .. }
                | StoreError::CorruptBlob { .. }
                | StoreError::DiskFull
                | StoreError::InUse(_)
                | StoreError::Io { .. },
            ) => 500,
            Self::BadRequest(_) | Self::InvalidModelFile(_) => 400,
            Self::Registry(e) => e.status(),
            Self::Runner(RunnerError::LoadFailed(_)) => 500,
            Self::Runner(_) | Self::Internal(_) => 500,
            Self::Busy => 503,
        }
    }

    /// Shorthand for a 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }
}
