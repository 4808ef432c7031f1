// Force-included into llama.cpp's CUDA sources when nvcc is older than 12 (scripts/build-cuda).
//
// ggml-cuda enables programmatic dependent launch (PDL) from CUDA 11.8 on and calls its two
// device functions in Hopper code, but CUDA 11.8's headers do not declare them (they arrived
// with CUDA 12). Both are single PTX instructions of PTX ISA 7.8, which CUDA 11.8 supports for
// sm_90; these definitions are the ones CUDA 12's sm_90_rt.hpp has.
#pragma once
#if defined(__CUDACC__) && __CUDACC_VER_MAJOR__ < 12
static __device__ __forceinline__ void cudaGridDependencySynchronize() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
static __device__ __forceinline__ void cudaTriggerProgrammaticLaunchCompletion() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}
#endif
