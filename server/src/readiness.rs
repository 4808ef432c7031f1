//! Whether the server can take work now, for `GET /ready`: not shutting down, the runner
//! binary in place, the model store writable.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::Store;

/// Why the server cannot take work.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// A SIGTERM or SIGINT arrived: in-flight requests finish, new ones should go elsewhere.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// No model could load.
    #[error("the runner {0} is missing or not executable (set HERD_RUNNER)")]
    NoRunner(String),
    /// Pulls, creates and deletes would fail.
    #[error("the models directory is not writable: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The server's readiness; it only turns not ready when shutdown begins.
#[derive(Debug, Default)]
pub struct Readiness {
    shutting_down: AtomicBool,
}

impl Readiness {
    /// Marks the server as shutting down.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Ready, or the first reason it is not.
    pub fn check(&self, runner: &Path, store: &Store) -> Result<(), NotReady> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(NotReady::ShuttingDown);
        }
        if !runner.is_file() || nix::unistd::access(runner, nix::unistd::AccessFlags::X_OK).is_err() {
            return Err(NotReady::NoRunner(runner.display().to_string()));
        }
        store.check_writable()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_until_shutdown_and_only_with_a_runner() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("models")).unwrap();
        let runner = dir.path().join("herd-runner");
        let readiness = Readiness::default();
        assert!(matches!(readiness.check(&runner, &store), Err(NotReady::NoRunner(_))));
        std::fs::write(&runner, "#!/bin/sh\n").unwrap();
        assert!(matches!(readiness.check(&runner, &store), Err(NotReady::NoRunner(_))));
        std::fs::set_permissions(&runner, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert!(readiness.check(&runner, &store).is_ok());
        readiness.shutting_down();
        assert!(matches!(readiness.check(&runner, &store), Err(NotReady::ShuttingDown)));
    }
}
