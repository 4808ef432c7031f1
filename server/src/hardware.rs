//! What the machine offers models: system memory (sysinfo), CPU cores, and NVIDIA GPUs with
//! their VRAM through NVML, which is loaded at run time: a machine without the driver runs
//! on CPU, with a log line saying why.

/// One NVIDIA GPU.
#[derive(Clone, Debug)]
pub struct Gpu {
    /// NVML's device index.
    pub index: u32,
    /// Marketing name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// VRAM in bytes.
    pub total_vram: u64,
    /// Free VRAM in bytes when detected.
    pub free_vram: u64,
}

/// The machine, as found at startup.
#[derive(Clone, Debug)]
pub struct Hardware {
    /// System memory in bytes.
    pub total_memory: u64,
    /// Logical CPU cores.
    pub cpu_cores: usize,
    /// NVIDIA GPUs; empty without the driver.
    pub gpus: Vec<Gpu>,
}

impl Hardware {
    /// Looks at the machine once and logs what it found.
    pub fn detect() -> Self {
        let hardware = Self {
            total_memory: memory().map_or(0, |(total, _)| total),
            cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            gpus: nvidia_gpus(),
        };
        tracing::info!(
            memory = %human_bytes(hardware.total_memory),
            available = %human_bytes(available_memory()),
            cpu_cores = hardware.cpu_cores,
            "system"
        );
        for gpu in &hardware.gpus {
            tracing::info!(
                index = gpu.index,
                name = %gpu.name,
                vram = %human_bytes(gpu.total_vram),
                free = %human_bytes(gpu.free_vram),
                "inference compute: NVIDIA GPU"
            );
        }
        hardware
    }
}

/// System memory free for new allocations now, in bytes (0 when it cannot be read).
pub fn available_memory() -> u64 {
    memory().map_or(0, |(_, available)| available)
}

fn memory() -> Option<(u64, u64)> {
    let mut system = sysinfo::System::new().ok()?;
    system.refresh_memory();
    Some((system.total_memory(), system.available_memory()))
}

/// NVML, loaded once; `Err` says why there is none (no driver, no GPU).
fn nvml() -> &'static Result<nvml_wrapper::Nvml, String> {
    static NVML: std::sync::OnceLock<Result<nvml_wrapper::Nvml, String>> = std::sync::OnceLock::new();
    NVML.get_or_init(|| nvml_wrapper::Nvml::init().map_err(|e| e.to_string()))
}

fn nvidia_gpus() -> Vec<Gpu> {
    if let Err(e) = nvml() {
        tracing::info!("no NVIDIA GPU ({e}); inference runs on the CPU");
        return Vec::new();
    }
    let gpus = gpus();
    if gpus.is_empty() {
        tracing::info!("no NVIDIA GPU (the driver lists none); inference runs on the CPU");
    }
    gpus
}

/// NVIDIA GPUs with their free VRAM now; empty without the driver.
pub fn gpus() -> Vec<Gpu> {
    let Ok(nvml) = nvml() else {
        return Vec::new();
    };
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|index| {
            let device = nvml.device_by_index(index).ok()?;
            let memory = device.memory_info().ok()?;
            Some(Gpu {
                index,
                name: device.name().unwrap_or_else(|_| "unknown".into()),
                total_vram: memory.total,
                free_vram: memory.free,
            })
        })
        .collect()
}

/// Bytes as Ollama's `format.HumanBytes2` prints them: `38.6 GiB`, `512 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_like_ollama() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(512 * 1024 * 1024), "512 MiB");
        assert_eq!(human_bytes(41_446_408_192), "38.6 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn this_machine_has_memory() {
        let hardware = Hardware::detect();
        assert!(hardware.total_memory > 0 && hardware.cpu_cores > 0);
        assert!(available_memory() <= hardware.total_memory);
    }
}
