//! `herd`: an Ollama-compatible local LLM server (`herd serve`) and its command line.

mod access;
mod api;
mod bundle;
mod cli;
mod config;
mod create;
mod embedding;
mod error;
mod format;
mod gguf;
mod hardware;
mod images;
mod inference;
mod keep_alive;
mod metrics;
mod model;
mod modelfile;
mod options;
mod placement;
mod prompt;
mod readiness;
mod registry;
mod scheduler;
mod show;
mod store;
mod supervisor;
mod template;
mod thinking;
mod tools;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::api::AppState;
use crate::config::Config;
use crate::inference::Inference;
use crate::readiness::Readiness;
use crate::registry::{Credentials, Registry, RegistryPolicy};
use crate::scheduler::Scheduler;
use crate::store::Store;

/// Interrupted downloads older than this are removed at start; younger ones resume.
const STALE_PARTIAL_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

fn main() {
    let args = cli::Cli::parse();
    let serving = matches!(args.command, Some(cli::Command::Serve));
    if !serving {
        // A client piped into `head` should stop quietly, as other command-line tools do.
        // SAFETY: restores the default disposition before any other thread exists.
        unsafe {
            let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
        }
    }
    // ...but a socket the server closed mid-upload must be an error, not a silent death: the
    // runtime's threads, which do the network I/O, block SIGPIPE (a write then gets EPIPE).
    // (The server ignores SIGPIPE, as Rust sets it up, and its runners inherit no mask.)
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if !serving {
        runtime.on_thread_start(block_sigpipe);
    }
    let runtime = runtime.build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(async move {
            match args.command {
                Some(cli::Command::Serve) => serve().await,
                Some(command) => cli::run(command).await,
                None => cli::print_version().await,
            }
        }),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

/// Blocks SIGPIPE in the calling thread.
fn block_sigpipe() {
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGPIPE);
    let _ = nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&signals), None);
}

/// `herd serve`: runs the HTTP API until SIGINT or SIGTERM.
async fn serve() -> anyhow::Result<()> {
    let config = Arc::new(Config::from_env()?);
    let filter = if config.debug { "debug" } else { "info" };
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HERD_LOG").unwrap_or_else(|_| filter.into()));
    if config.json_logs {
        logs.json().flatten_event(true).init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
            .init();
    }
    hardware::Hardware::detect();
    let store = Arc::new(Store::open(&config.models_dir).context("cannot open the models directory")?);
    let _claim = store.claim()?;
    store.remove_stale_temp_files();
    store.prune_stale_partials(STALE_PARTIAL_AGE);
    let credentials =
        Credentials::load(config.registry_auth.as_deref(), &config.registry_auth_file).map_err(anyhow::Error::msg)?;
    let registry = Registry::new(RegistryPolicy::new(config.registries.as_deref()), credentials)?;
    let scheduler = Scheduler::new(&config);
    let inference = Inference::new(config.clone(), store.clone(), scheduler.clone());
    let state = Arc::new(AppState {
        config: config.clone(),
        store,
        scheduler: scheduler.clone(),
        inference,
        registry,
        readiness: Readiness::default(),
    });
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let (addr, server) = warp::serve(api::routes(state.clone()))
        .try_bind_with_graceful_shutdown(config.host, async move {
            let _ = stopping.changed().await;
        })
        .with_context(|| {
            format!(
                "cannot listen on {} (is another herd or ollama serving there? HERD_HOST picks another address)",
                config.host
            )
        })?;
    for (name, meaning) in config::ENV_VARS {
        if let Some(value) = config::env_var(name.trim_start_matches("HERD_")) {
            let shown = if config::SECRET_ENV_VARS.contains(name) {
                "(set, not shown)"
            } else {
                &value
            };
            tracing::info!("{name}={shown} ({meaning})");
        }
    }
    tracing::info!(models = %config.models_dir.display(), runner = %config.runner_path.display(), "config");
    tracing::info!("listening on {addr}");
    let mut server = tokio::spawn(server);
    tokio::select! {
        _ = &mut server => {}
        _ = shutdown_signal() => {
            let grace = config.shutdown_grace;
            tracing::info!(?grace, "shutting down: no new connections; in-flight requests may finish");
            state.readiness.shutting_down();
            let _ = stopping_tx.send(true);
            if tokio::time::timeout(grace, &mut server).await.is_err() {
                tracing::warn!("grace period over: cancelling in-flight requests");
                scheduler.stop_all(Some("the server is shutting down")).await;
                // Their streams end with that error; then the connections close.
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut server).await;
            }
        }
    }
    tracing::info!("stopping runners");
    scheduler.stop_all(None).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
