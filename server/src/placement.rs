//! Where a model runs: how many of its layers a GPU takes, decided from the weights and KV
//! cache the GGUF implies and the VRAM free now, by llama.cpp's rules (the last
//! `n_gpu_layers` blocks are offloaded; the output head only when every block is).

use crate::gguf::LayerWeights;
use crate::hardware::Gpu;

/// VRAM left free on a GPU for the CUDA context and other processes.
const GPU_RESERVE: u64 = 512 << 20;

/// What a load costs, split the way llama.cpp splits it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadCost {
    /// Weights per block and of the output head.
    pub weights: LayerWeights,
    /// Bytes of the whole KV cache (every block, every slot).
    pub kv_cache: u64,
    /// Scratch memory of one decode step, on each device that computes.
    pub compute: u64,
    /// Other bytes, counted on the CPU: an adapter, a vision projector (which follows the
    /// layers to a GPU, but is small beside them).
    pub cpu_only: u64,
}

/// Where one model's layers go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The GPU (NVML index) that takes layers, if any.
    pub gpu: Option<u32>,
    /// Layers offloaded (`n_gpu_layers`); one more than the blocks means the output head too.
    pub gpu_layers: u32,
    /// Bytes expected in VRAM.
    pub vram_bytes: u64,
    /// Bytes expected in system memory.
    pub system_bytes: u64,
}

impl LoadCost {
    fn block_count(&self) -> usize {
        self.weights.blocks.len()
    }

    /// Bytes of the last `n` blocks with their share of the KV cache (and the output head
    /// when `n` exceeds the blocks).
    fn offloaded_bytes(&self, n: usize) -> u64 {
        let blocks = self.block_count();
        let kv_per_block = self.kv_cache / blocks.max(1) as u64;
        let taken = n.min(blocks);
        let weights: u64 = self.weights.blocks[blocks - taken..].iter().sum();
        let head = if n > blocks { self.weights.head } else { 0 };
        weights + kv_per_block * taken as u64 + head
    }

    /// Everything in system memory when nothing is offloaded.
    fn on_cpu(&self) -> u64 {
        let weights: u64 = self.weights.blocks.iter().sum();
        weights + self.weights.embedding + self.weights.head - self.weights.tied_head
            + self.kv_cache
            + self.compute
            + self.cpu_only
    }
}

/// Scratch memory llama.cpp allocates for one decode step of `ubatch` tokens over `context`
/// cached positions: activations, and attention scores per head (an upper bound without
/// flash attention), plus a fixed allowance for the graph.
pub fn compute_bytes(embedding: u64, heads: u64, context: u64, ubatch: u64) -> u64 {
    let activations = ubatch * embedding * 4 * 12;
    let scores = ubatch * context * heads * 4;
    (64 << 20) + activations + scores
}

/// Places a model: `num_gpu` layers when it is 0 or more, else as many as fit in the GPU
/// with the most free VRAM (all of them, output head included, when the model fits).
pub fn place(cost: &LoadCost, gpus: &[Gpu], num_gpu: i32) -> Placement {
    let cpu_only = Placement {
        system_bytes: cost.on_cpu(),
        ..Placement::default()
    };
    let Some(gpu) = gpus.iter().max_by_key(|g| g.free_vram) else {
        return cpu_only;
    };
    let all_layers = cost.block_count() + 1;
    let layers = match usize::try_from(num_gpu) {
        Ok(requested) => requested.min(all_layers),
        Err(_) => {
            let room = gpu.free_vram.saturating_sub(GPU_RESERVE + cost.compute);
            (0..=all_layers)
                .rev()
                .find(|&n| cost.offloaded_bytes(n) <= room)
                .unwrap_or(0)
        }
    };
    if layers == 0 {
        return cpu_only;
    }
    let vram_bytes = cost.offloaded_bytes(layers) + cost.compute;
    Placement {
        gpu: Some(gpu.index),
        gpu_layers: layers as u32,
        vram_bytes,
        // The CPU keeps a compute buffer while any block stays there; a head copied to the
        // GPU was never extra bytes on the CPU.
        system_bytes: cost.on_cpu()
            + if layers < all_layers {
                cost.compute
            } else {
                cost.weights.tied_head
            }
            - vram_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn cost() -> LoadCost {
        LoadCost {
            weights: LayerWeights {
                blocks: vec![100 * MIB; 10],
                head: 50 * MIB,
                tied_head: 0,
                embedding: 30 * MIB,
            },
            kv_cache: 200 * MIB,
            compute: 64 * MIB,
            cpu_only: 0,
        }
    }

    fn gpu(index: u32, free_mib: u64) -> Gpu {
        Gpu {
            index,
            name: "test".into(),
            total_vram: 80_000 * MIB,
            free_vram: free_mib * MIB,
        }
    }

    #[test]
    fn without_a_gpu_everything_stays_in_system_memory() {
        let placed = place(&cost(), &[], -1);
        assert_eq!(placed.gpu_layers, 0);
        assert_eq!(placed.vram_bytes, 0);
        assert_eq!(placed.system_bytes, (1000 + 50 + 200 + 64 + 30) * MIB);
        assert_eq!(place(&cost(), &[], 99).gpu_layers, 0, "num_gpu cannot conjure a GPU");
    }

    #[test]
    fn a_model_that_fits_goes_whole_to_the_gpu_with_most_free_vram() {
        let placed = place(&cost(), &[gpu(0, 1000), gpu(1, 40_000)], -1);
        assert_eq!(placed.gpu, Some(1));
        assert_eq!(placed.gpu_layers, 11, "every block and the output head");
        assert_eq!(placed.vram_bytes, (1000 + 50 + 200 + 64) * MIB);
        assert_eq!(placed.system_bytes, 30 * MIB, "only the input embedding stays");
    }

    #[test]
    fn a_model_too_big_for_vram_offloads_the_last_layers_that_fit() {
        // 512 MiB reserve + 64 MiB compute leave 624 MiB: five blocks of 100 + 20 (KV share).
        let placed = place(&cost(), &[gpu(0, 1200)], -1);
        assert_eq!(placed.gpu_layers, 5);
        assert_eq!(placed.vram_bytes, (5 * 120 + 64) * MIB);
        assert_eq!(
            placed.system_bytes + placed.vram_bytes,
            (1000 + 50 + 200 + 64 + 30 + 64) * MIB,
            "both devices hold a compute buffer"
        );
        assert_eq!(place(&cost(), &[gpu(0, 500)], -1).gpu_layers, 0, "nothing fits");
    }

    #[test]
    fn a_tied_head_costs_the_cpu_nothing_and_the_gpu_a_copy() {
        let mut tied = cost();
        tied.weights.head = 31 * MIB;
        tied.weights.tied_head = 30 * MIB;
        assert_eq!(place(&tied, &[], -1).system_bytes, (1000 + 30 + 1 + 200 + 64) * MIB);
        let placed = place(&tied, &[gpu(0, 40_000)], -1);
        assert_eq!(placed.vram_bytes, (1000 + 31 + 200 + 64) * MIB);
        assert_eq!(placed.system_bytes, 30 * MIB);
    }

    #[test]
    fn num_gpu_overrides_the_decision() {
        assert_eq!(place(&cost(), &[gpu(0, 40_000)], 0).gpu_layers, 0);
        assert_eq!(place(&cost(), &[gpu(0, 40_000)], 3).gpu_layers, 3);
        assert_eq!(
            place(&cost(), &[gpu(0, 100)], 999).gpu_layers,
            11,
            "clamped to every layer"
        );
    }
}
