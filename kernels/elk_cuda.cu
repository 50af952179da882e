// elk_cuda.cu -- CUDA kernels: the stages of elk_math.cuh run by a thread block, with
// __syncthreads() between them. Argument checks and messages are shared with the host path
// (elk_host.cpp); this file adds device-pointer checks, launches and CUDA error reporting.
#include "edge_ladder_kernels.h"
#include "elk_internal.h"
#include "elk_math.cuh"

#include <cuda_runtime.h>

#include <stdio.h>

namespace elk {
namespace {

constexpr int kLogMelThreads = 256;
constexpr int kFaceThreads = 256;          // power of two: the block reduction halves it
constexpr int kFacesPerLaunch = 64;        // boxes travel in the kernel parameters (<= 4 KB)

// One block per frame (grid-strided). Shared: re, im [n_fft]; twiddles [n_fft/2] x 2; mel ranges.
__global__ void log_mel_kernel(const void *pcm, int pcm_format, int64_t n_frames, int win, int hop,
                               int n_fft, int log2_n, int n_mels, const float *filterbank,
                               float log_floor, void *out, int out_dtype, int64_t out_row_stride,
                               int64_t out_time_offset) {
    extern __shared__ float shared[];
    float *re = shared;
    float *im = re + n_fft;
    float *twiddle_re = im + n_fft;
    float *twiddle_im = twiddle_re + n_fft / 2;
    int *mel_lo = (int *)(twiddle_im + n_fft / 2);
    int *mel_hi = mel_lo + n_mels;
    const int tid = threadIdx.x, n_threads = blockDim.x, n_bins = n_fft / 2 + 1;

    stage_twiddles(tid, n_threads, n_fft, twiddle_re, twiddle_im);
    stage_mel_ranges_reset(tid, n_threads, n_mels, n_bins, mel_lo, mel_hi);
    __syncthreads();
    stage_mel_ranges(tid, n_threads, filterbank, n_mels, n_bins, mel_lo, mel_hi);
    __syncthreads();
    for (int64_t t = blockIdx.x; t < n_frames; t += gridDim.x) {
        stage_load_frame(tid, n_threads, pcm, pcm_format, t * hop, win, n_fft, log2_n, re, im);
        __syncthreads();
        for (int half = 1; half < n_fft; half *= 2) {
            stage_butterflies(tid, n_threads, n_fft, half, twiddle_re, twiddle_im, re, im);
            __syncthreads();
        }
        stage_power(tid, n_threads, n_fft, re, im);
        __syncthreads();
        stage_mel_log(tid, n_threads, re, filterbank, n_mels, n_bins, mel_lo, mel_hi, log_floor, out,
                      out_dtype, (out_time_offset + t) * out_row_stride);
        __syncthreads();   // the next frame overwrites re
    }
}

struct FaceLaunch {
    float boxes[kFacesPerLaunch][4];
    int64_t out_offsets[kFacesPerLaunch];   // elements
};

// Sum of one value per thread over the block; every thread gets the total. scratch[blockDim.x].
__device__ float block_sum(float value, float *scratch) {
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) scratch[threadIdx.x] += scratch[threadIdx.x + stride];
        __syncthreads();
    }
    const float total = scratch[0];
    __syncthreads();   // scratch is reused by the next call
    return total;
}

// One block per box. Shared: crop [size * size], scratch [blockDim.x].
__global__ void face_crops_kernel(const uint8_t *frame, int height, int width, int64_t row_pitch,
                                  LumaWeights weights, FaceLaunch launch, int size, void *out,
                                  int out_dtype) {
    extern __shared__ float shared[];
    const int n_pixels = size * size;
    float *crop = shared;
    float *scratch = crop + n_pixels;
    const int tid = threadIdx.x, n_threads = blockDim.x;

    stage_crop(tid, n_threads, frame, height, width, row_pitch, weights, launch.boxes[blockIdx.x],
               size, crop);
    __syncthreads();
    float partial = 0.0f;
    for (int i = tid; i < n_pixels; i += n_threads) partial += crop[i];
    const float mean = block_sum(partial, scratch) / (float)n_pixels;
    partial = 0.0f;
    for (int i = tid; i < n_pixels; i += n_threads) {
        const float deviation = crop[i] - mean;
        partial += deviation * deviation;
    }
    const float std = sqrtf(block_sum(partial, scratch) / (float)n_pixels);
    stage_standardise_store(tid, n_threads, crop, size, mean, std, out, out_dtype,
                            launch.out_offsets[blockIdx.x]);
}

int cuda_fail(const char *function, cudaError_t error) {
    return fail(ELK_ERROR_CUDA, "%s: CUDA error %d (%s): %s", function, (int)error,
                cudaGetErrorName(error), cudaGetErrorString(error));
}

// `name` must point to device-accessible memory (device, managed or mapped pinned host memory).
int check_device_pointer(const char *function, const char *name, const void *pointer) {
    cudaPointerAttributes attributes;
    const cudaError_t error = cudaPointerGetAttributes(&attributes, pointer);
    if (error != cudaSuccess) {
        cudaGetLastError();   // this error is not sticky: clear it
        if (error == cudaErrorInvalidValue)
            return fail(ELK_ERROR_INVALID_ARGUMENT, "%s: %s=%p is not a valid CUDA pointer (%s)",
                        function, name, pointer, cudaGetErrorString(error));
        return fail(ELK_ERROR_CUDA, "%s: checking %s: CUDA error %d (%s): %s", function, name,
                    (int)error, cudaGetErrorName(error), cudaGetErrorString(error));
    }
    if (attributes.type == cudaMemoryTypeUnregistered ||
        (attributes.type == cudaMemoryTypeHost && attributes.devicePointer == nullptr))
        return fail(ELK_ERROR_INVALID_ARGUMENT,
                    "%s: %s=%p is host memory; the *_cuda functions take device pointers "
                    "(cudaMalloc, or use the *_host function for host arrays)", function, name, pointer);
    return ELK_OK;
}

}  // namespace
}  // namespace elk

using namespace elk;

extern "C" {

int elk_built_with_cuda(void) { return 1; }

const char *elk_build_info(void) {
    return "CUDA " ELK_CUDA_VERSION_STRING " (architectures " ELK_CUDA_ARCHITECTURES_STRING
           "), host " ELK_HOST_COMPILER;
}

int elk_log_mel_cuda(const void *pcm, int pcm_format, int64_t n_samples, int win, int hop, int n_fft,
                     int n_mels, const float *mel_filterbank, float log_floor, void *out,
                     int out_dtype, int64_t out_row_stride, int64_t out_time_offset,
                     int64_t out_time_capacity, void *stream) {
    static const char *function = "elk_log_mel_cuda";
    clear_error();
    int64_t n_frames = 0;
    int log2_n = 0;
    int status = check_log_mel(pcm, pcm_format, n_samples, win, hop, n_fft, n_mels, mel_filterbank,
                               log_floor, out, out_dtype, out_row_stride, out_time_offset,
                               out_time_capacity, &n_frames, &log2_n);
    if (status != ELK_OK || n_frames == 0) return status;
    if ((status = check_device_pointer(function, "pcm", pcm)) != ELK_OK) return status;
    if ((status = check_device_pointer(function, "mel_filterbank", mel_filterbank)) != ELK_OK) return status;
    if ((status = check_device_pointer(function, "out", out)) != ELK_OK) return status;
    const int threads = n_fft / 2 < kLogMelThreads ? (n_fft / 2 < 32 ? 32 : n_fft / 2) : kLogMelThreads;
    const int blocks = n_frames < (1 << 20) ? (int)n_frames : (1 << 20);
    const size_t shared_bytes = sizeof(float) * (3 * (size_t)n_fft) + sizeof(int) * 2 * (size_t)n_mels;
    log_mel_kernel<<<blocks, threads, shared_bytes, (cudaStream_t)stream>>>(
        pcm, pcm_format, n_frames, win, hop, n_fft, log2_n, n_mels, mel_filterbank, log_floor, out,
        out_dtype, out_row_stride, out_time_offset);
    const cudaError_t error = cudaGetLastError();
    return error == cudaSuccess ? ELK_OK : cuda_fail(function, error);
}

int elk_face_crops_cuda(const uint8_t *frame, int height, int width, int64_t row_pitch,
                        int channel_order, const float *boxes, const int32_t *slots, int n_boxes,
                        int size, void *out, int out_dtype, int out_batch, int out_time, void *stream) {
    static const char *function = "elk_face_crops_cuda";
    clear_error();
    int status = check_face_crops(frame, height, width, row_pitch, channel_order, boxes, slots,
                                  n_boxes, size, out, out_dtype, out_batch, out_time);
    if (status != ELK_OK || n_boxes == 0) return status;
    if ((status = check_device_pointer(function, "frame", frame)) != ELK_OK) return status;
    if ((status = check_device_pointer(function, "out", out)) != ELK_OK) return status;
    const int n_pixels = size * size;
    const size_t shared_bytes = sizeof(float) * ((size_t)n_pixels + kFaceThreads);
    for (int first = 0; first < n_boxes; first += kFacesPerLaunch) {
        const int count = n_boxes - first < kFacesPerLaunch ? n_boxes - first : kFacesPerLaunch;
        FaceLaunch launch;
        for (int i = 0; i < count; ++i) {
            const int box = first + i;
            for (int c = 0; c < 4; ++c) launch.boxes[i][c] = boxes[4 * box + c];
            const int64_t slot = (int64_t)slots[2 * box] * out_time + slots[2 * box + 1];
            launch.out_offsets[i] = slot * n_pixels;
        }
        face_crops_kernel<<<count, kFaceThreads, shared_bytes, (cudaStream_t)stream>>>(
            frame, height, width, row_pitch, luma_weights(channel_order), launch, size, out, out_dtype);
        const cudaError_t error = cudaGetLastError();
        if (error != cudaSuccess) return cuda_fail(function, error);
    }
    return ELK_OK;
}

int elk_cuda_device_count(int *count) {
    clear_error();
    if (count == nullptr) return fail(ELK_ERROR_INVALID_ARGUMENT, "count is NULL");
    *count = 0;
    const cudaError_t error = cudaGetDeviceCount(count);
    if (error != cudaSuccess) {
        *count = 0;
        cudaGetLastError();
        return cuda_fail("elk_cuda_device_count", error);
    }
    return ELK_OK;
}

int elk_cuda_device_name(int device, char *name, int name_size) {
    clear_error();
    if (name == nullptr || name_size < 1)
        return fail(ELK_ERROR_INVALID_ARGUMENT, "name must be a buffer of name_size >= 1 bytes");
    cudaDeviceProp properties;
    const cudaError_t error = cudaGetDeviceProperties(&properties, device);
    if (error != cudaSuccess) return cuda_fail("elk_cuda_device_name", error);
    snprintf(name, (size_t)name_size, "%s (sm_%d%d)", properties.name, properties.major, properties.minor);
    return ELK_OK;
}

int elk_cuda_malloc(void **ptr, size_t bytes) {
    clear_error();
    if (ptr == nullptr) return fail(ELK_ERROR_INVALID_ARGUMENT, "ptr is NULL");
    const cudaError_t error = cudaMalloc(ptr, bytes);
    return error == cudaSuccess ? ELK_OK : cuda_fail("elk_cuda_malloc", error);
}

int elk_cuda_free(void *ptr) {
    clear_error();
    const cudaError_t error = cudaFree(ptr);
    return error == cudaSuccess ? ELK_OK : cuda_fail("elk_cuda_free", error);
}

int elk_cuda_copy_to_device(void *dst, const void *src, size_t bytes, void *stream) {
    clear_error();
    const cudaError_t error = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, (cudaStream_t)stream);
    return error == cudaSuccess ? ELK_OK : cuda_fail("elk_cuda_copy_to_device", error);
}

int elk_cuda_copy_to_host(void *dst, const void *src, size_t bytes, void *stream) {
    clear_error();
    cudaError_t error = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, (cudaStream_t)stream);
    if (error == cudaSuccess) error = cudaStreamSynchronize((cudaStream_t)stream);
    return error == cudaSuccess ? ELK_OK : cuda_fail("elk_cuda_copy_to_host", error);
}

int elk_cuda_synchronize(void *stream) {
    clear_error();
    const cudaError_t error = cudaStreamSynchronize((cudaStream_t)stream);
    return error == cudaSuccess ? ELK_OK : cuda_fail("elk_cuda_synchronize", error);
}

}  // extern "C"
