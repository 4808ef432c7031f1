//! Decides which runner serves a request: loads a model on first use (its layers placed by
//! the VRAM free then), shares its runner while it is in use, and unloads it `keep_alive`
//! after its last request ends.
//!
//! One model loads at a time (loads compete for the same memory). A runner whose load
//! options differ from a new request's is retired: it finishes what it serves and then stops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::keep_alive::KeepAlive;
use crate::placement::{self, LoadCost};
use crate::store::{Store, StoreError};
use crate::supervisor::{LoadSpec, RunnerClient, RunnerError, WeightsKey};

/// How long a runner gets to exit on its own when unloaded.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A model that a request wants loaded.
#[derive(Clone, Debug)]
pub struct LoadRequest {
    /// The model's display name (e.g. `gemma3:270m`).
    pub name: String,
    /// The model's manifest digest (hex).
    pub digest: String,
    /// How to start its runner.
    pub spec: LoadSpec,
    /// The request's keep-alive; `None` keeps the current one (or the default on load).
    pub keep_alive: Option<KeepAlive>,
    /// What loading it takes (weights, KV cache, compute buffers): placed on a GPU and in
    /// system memory when it loads, by the VRAM free then.
    pub cost: LoadCost,
}

/// A loaded model, as `/api/ps` shows it.
#[derive(Clone, Debug)]
pub struct LoadedInfo {
    /// Display name.
    pub name: String,
    /// Manifest digest (hex).
    pub digest: String,
    /// Bytes in memory: system memory and VRAM.
    pub size: u64,
    /// Bytes of that in VRAM.
    pub size_vram: u64,
    /// When it unloads, if idle; `None` for never.
    pub expires_at: Option<SystemTime>,
    /// Context length of each slot.
    pub context_length: u32,
}

/// Loaded runners and their busy slots, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Occupancy {
    /// Runners loaded and alive.
    pub loaded: usize,
    /// Requests in their slots (leases beyond a runner's slots wait in it).
    pub serving: usize,
}

struct Loaded {
    name: String,
    digest: String,
    /// System memory the load was estimated to take; freed when it unloads.
    estimated_bytes: u64,
    /// VRAM it was estimated to take, if the runner offloaded anything.
    vram_bytes: u64,
    client: Arc<RunnerClient>,
    state: Mutex<LoadedState>,
}

impl Loaded {
    /// When it last served, if it serves nothing now.
    fn idle_since(&self) -> Option<Instant> {
        self.state.lock().ok().filter(|s| s.active == 0).map(|s| s.last_used)
    }
}

struct LoadedState {
    active: u32,
    /// When a request last started or ended.
    last_used: Instant,
    keep_alive: KeepAlive,
    /// Set when idle: when the model unloads.
    expires: Option<Instant>,
    /// Replaced by a runner with other options: stop once idle.
    retired: bool,
}

struct Inner {
    default_keep_alive: KeepAlive,
    max_loaded: usize,
    health_timeout: Duration,
    runner_path: PathBuf,
    load_timeout: Duration,
    /// Loaded runners by the weights they serve.
    loaded: Mutex<HashMap<WeightsKey, Arc<Loaded>>>,
    /// Held while a model loads: one load at a time.
    loading: tokio::sync::Mutex<()>,
    /// Blob files found whole since the server started, with the size and modification
    /// time they had then: each is hashed on its first load only.
    checked_blobs: Mutex<HashMap<PathBuf, (u64, SystemTime)>>,
}

impl Inner {
    /// Checks the weights, adapter and projector of `spec` against their digests, unless
    /// already done.
    async fn check_blobs(&self, spec: &LoadSpec) -> Result<(), StoreError> {
        for path in spec.weights().files() {
            let stamp = std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)));
            let known = self.checked_blobs.lock().ok().and_then(|c| c.get(path).copied());
            if stamp.is_some() && known == stamp {
                continue;
            }
            let file = path.clone();
            tokio::task::spawn_blocking(move || Store::check_blob_file(&file))
                .await
                .map_err(|e| StoreError::from_io("cannot check a blob", std::io::Error::other(e)))??;
            if let (Some(stamp), Ok(mut checked)) = (stamp, self.checked_blobs.lock()) {
                checked.insert(path.clone(), stamp);
            }
        }
        Ok(())
    }
}

/// Hands out runners and unloads idle ones.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

/// A runner in use by one request; releasing it (dropping) starts the keep-alive clock.
pub struct Lease {
    loaded: Arc<Loaded>,
    inner: Arc<Inner>,
}

impl Lease {
    /// The runner.
    pub fn client(&self) -> &Arc<RunnerClient> {
        &self.loaded.client
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let stop_now = {
            let Ok(mut state) = self.loaded.state.lock() else {
                return;
            };
            state.active = state.active.saturating_sub(1);
            state.last_used = Instant::now();
            if state.active > 0 {
                return;
            }
            match state.keep_alive {
                KeepAlive::For(d) if d.is_zero() => true,
                KeepAlive::For(d) => {
                    state.expires = Some(Instant::now() + d);
                    state.retired
                }
                KeepAlive::Forever => state.retired,
            }
        };
        if stop_now {
            let inner = self.inner.clone();
            let loaded = self.loaded.clone();
            tokio::spawn(async move { inner.unload(&loaded).await });
        }
    }
}

impl Scheduler {
    /// A scheduler that starts the configured runner for each model.
    pub fn new(config: &Config) -> Self {
        let inner = Arc::new(Inner {
            default_keep_alive: config.keep_alive,
            max_loaded: config.max_loaded_models as usize,
            health_timeout: config.health_timeout,
            runner_path: config.runner_path.clone(),
            load_timeout: config.load_timeout,
            loaded: Mutex::default(),
            loading: tokio::sync::Mutex::new(()),
            checked_blobs: Mutex::default(),
        });
        tokio::spawn(expire_idle(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// A runner for the request's model, loading it if needed; also returns the time spent
    /// waiting for the load.
    pub async fn acquire(&self, request: &LoadRequest) -> Result<(Lease, Duration), RunnerError> {
        let started = Instant::now();
        if let Some(lease) = self.try_reuse(request) {
            return Ok((lease, started.elapsed()));
        }
        let _loading = self.inner.loading.lock().await;
        if let Some(lease) = self.try_reuse(request) {
            return Ok((lease, started.elapsed()));
        }
        // Retire whatever runs this model with other options.
        let previous = self
            .inner
            .loaded
            .lock()
            .ok()
            .and_then(|mut l| l.remove(&request.spec.weights()));
        if let Some(previous) = previous {
            let idle = previous.state.lock().map(|mut s| {
                s.retired = true;
                s.active == 0
            });
            if idle.unwrap_or(true) {
                self.inner.unload(&previous).await;
            }
        }
        let placement = placement::place(&request.cost, &crate::hardware::gpus(), request.spec.num_gpu);
        self.make_room(request, placement.system_bytes).await?;
        tracing::info!(model = %request.name, spec = ?request.spec, ?placement, "loading model");
        // The weights are hashed while the runner loads them (the pages are read once, from
        // the cache the second time): a corrupt blob is never served.
        let starting = RunnerClient::start(
            &self.inner.runner_path,
            request.spec.clone(),
            &placement,
            self.inner.load_timeout,
            self.inner.health_timeout,
        );
        let (client, checked) = tokio::join!(starting, self.inner.check_blobs(&request.spec));
        if let Err(e) = checked {
            tracing::error!(model = %request.name, "{e}");
            // Dropping the client stops its runner.
            return Err(RunnerError::CorruptBlob(e.to_string()));
        }
        let client = client?;
        let loaded = Arc::new(Loaded {
            name: request.name.clone(),
            digest: request.digest.clone(),
            estimated_bytes: placement.system_bytes,
            vram_bytes: if client.facts.gpu_layers > 0 {
                placement.vram_bytes
            } else {
                0
            },
            client,
            state: Mutex::new(LoadedState {
                active: 1,
                last_used: Instant::now(),
                keep_alive: request.keep_alive.unwrap_or(self.inner.default_keep_alive),
                expires: None,
                retired: false,
            }),
        });
        if let Ok(mut all) = self.inner.loaded.lock() {
            all.insert(request.spec.weights(), loaded.clone());
        }
        let lease = Lease {
            loaded,
            inner: self.inner.clone(),
        };
        Ok((lease, started.elapsed()))
    }

    /// Unloads idle runners, least recently used first, until a new one is within
    /// `HERD_MAX_LOADED_MODELS` and fits in the memory available; waits (up to the load
    /// timeout) for a busy one to go idle. Refuses at once what would not fit in memory even
    /// with every runner gone, instead of letting the OS kill something.
    async fn make_room(&self, request: &LoadRequest, needed: u64) -> Result<(), RunnerError> {
        let deadline = Instant::now() + self.inner.load_timeout;
        loop {
            let loaded: Vec<Arc<Loaded>> = self
                .inner
                .loaded
                .lock()
                .map(|all| all.values().filter(|l| l.client.is_alive()).cloned().collect())
                .unwrap_or_default();
            let available = crate::hardware::available_memory();
            let short = available > 0 && needed > available;
            if loaded.len() < self.inner.max_loaded && !short {
                return Ok(());
            }
            if short {
                let freeable: u64 = loaded.iter().map(|l| l.estimated_bytes).sum();
                if needed > available + freeable {
                    return Err(RunnerError::DoesNotFit {
                        needed,
                        available: available + freeable,
                    });
                }
            }
            let least_recent = loaded
                .iter()
                .filter_map(|l| l.idle_since().map(|at| (at, l)))
                .min_by_key(|(at, _)| *at);
            match least_recent {
                Some((_, victim)) => {
                    tracing::info!(model = %victim.name, for_model = %request.name, short_of_memory = short, "evicting idle model");
                    self.inner.unload(victim).await;
                }
                None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                None => return Err(RunnerError::LoadTimeout(self.inner.load_timeout)),
            }
        }
    }

    fn try_reuse(&self, request: &LoadRequest) -> Option<Lease> {
        let mut all = self.inner.loaded.lock().ok()?;
        let loaded = all.get(&request.spec.weights())?.clone();
        if !loaded.client.is_alive() {
            tracing::warn!(model = %loaded.name, "runner is gone; starting a new one");
            all.remove(&request.spec.weights());
            return None;
        }
        if loaded.client.spec != request.spec {
            return None;
        }
        let mut state = loaded.state.lock().ok()?;
        state.active += 1;
        state.last_used = Instant::now();
        state.expires = None;
        if let Some(keep_alive) = request.keep_alive {
            state.keep_alive = keep_alive;
        }
        drop(state);
        Some(Lease {
            loaded,
            inner: self.inner.clone(),
        })
    }

    /// Unloads the runner of `weights` now (after its in-flight requests if any); false when
    /// it was not loaded.
    pub async fn unload(&self, weights: &WeightsKey) -> bool {
        let loaded = self.inner.loaded.lock().ok().and_then(|all| all.get(weights).cloned());
        let Some(loaded) = loaded else { return false };
        let idle = loaded.state.lock().map(|mut s| {
            s.keep_alive = KeepAlive::For(Duration::ZERO);
            s.active == 0
        });
        if idle.unwrap_or(true) {
            self.inner.unload(&loaded).await;
        }
        true
    }

    /// How many runners are loaded, and how many requests their slots serve now.
    pub fn occupancy(&self) -> Occupancy {
        let Ok(all) = self.inner.loaded.lock() else {
            return Occupancy::default();
        };
        let alive = || all.values().filter(|l| l.client.is_alive());
        Occupancy {
            loaded: alive().count(),
            serving: alive()
                .map(|l| {
                    let active = l.state.lock().map_or(0, |s| s.active);
                    active.min(l.client.spec.parallel) as usize
                })
                .sum(),
        }
    }

    /// The loaded models, the longest-lived first.
    pub fn loaded(&self) -> Vec<LoadedInfo> {
        let now_instant = Instant::now();
        let now = SystemTime::now();
        let mut infos: Vec<LoadedInfo> = self
            .inner
            .loaded
            .lock()
            .map(|all| {
                all.values()
                    .filter(|l| l.client.is_alive())
                    .map(|l| {
                        let state = l.state.lock().ok();
                        let expires_at = state.and_then(|s| match (s.expires, s.keep_alive) {
                            (_, KeepAlive::Forever) => None,
                            (Some(at), _) => Some(now + at.saturating_duration_since(now_instant)),
                            (None, KeepAlive::For(d)) => Some(now + d),
                        });
                        LoadedInfo {
                            name: l.name.clone(),
                            digest: l.digest.clone(),
                            size: (l.estimated_bytes + l.vram_bytes).max(l.client.facts.model_bytes),
                            size_vram: l.vram_bytes,
                            expires_at,
                            context_length: l.client.facts.context_length,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        infos.sort_by_key(|i| {
            std::cmp::Reverse(
                i.expires_at
                    .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX as u64 * 100)),
            )
        });
        infos
    }

    /// Stops every runner (server shutdown); with `cancel_reason`, requests still in flight
    /// end at once with that error.
    pub async fn stop_all(&self, cancel_reason: Option<&str>) {
        let all: Vec<_> = self
            .inner
            .loaded
            .lock()
            .map(|mut l| l.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        for loaded in all {
            if let Some(reason) = cancel_reason {
                loaded.client.fail_in_flight(reason);
            }
            loaded.client.shutdown(SHUTDOWN_GRACE).await;
        }
    }
}

impl Inner {
    async fn unload(&self, loaded: &Arc<Loaded>) {
        if let Ok(mut all) = self.loaded.lock() {
            if all
                .get(&loaded.client.spec.weights())
                .is_some_and(|l| Arc::ptr_eq(l, loaded))
            {
                all.remove(&loaded.client.spec.weights());
            }
        }
        tracing::info!(model = %loaded.name, "unloading model");
        loaded.client.shutdown(SHUTDOWN_GRACE).await;
    }
}

/// Unloads idle models whose keep-alive ran out, and forgets dead runners.
async fn expire_idle(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<Arc<Loaded>> = inner
            .loaded
            .lock()
            .map(|all| {
                all.values()
                    .filter(|l| {
                        !l.client.is_alive()
                            || l.state
                                .lock()
                                .is_ok_and(|s| s.active == 0 && s.expires.is_some_and(|at| at <= now))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for loaded in expired {
            inner.unload(&loaded).await;
        }
    }
}
