/*
 * edge_ladder_kernels.h -- the one boundary of the kernels/ library (plain C, plain types).
 *
 * GPU pre-processing that writes straight into a TensorRT engine's input buffers, plus the same
 * math on the host (compiled from the same per-element source, elk_math.cuh) so it is tested on
 * machines without a GPU. The math is DEFINED by edge_ladder/frontend.py:
 *
 *   log-mel   PCM (int16 or float32, 16 kHz) -> frames t covering samples [t*hop, t*hop + win),
 *             periodic Hann, |DFT_n_fft|^2 of bins 0..n_fft/2, mel filterbank (n_mels, n_fft/2+1)
 *             given by the caller (frontend.mel_filterbank), log(max(mel, log_floor)).
 *             T = 1 + (n_samples - win) / hop, 0 when n_samples < win.
 *   face      uint8 frame (H, W, 3) BGR or RGB with a row pitch in bytes, boxes (x, y, w, h) in
 *             pixels -> (S, S) luma crops, bilinear with half-pixel centres and edge clamping,
 *             /255, standardised per crop: (crop - mean) / (std + 1e-2).
 *
 * Every function returns ELK_OK (0) or an error code; elk_last_error() then returns a message
 * naming the argument that is wrong (thread-local, valid until the next call on that thread).
 * Python (edge_ladder.kernels) decides shapes and dtypes; this library checks them.
 *
 * Pointers of the *_cuda functions are device pointers except `boxes` and `slots` (host arrays,
 * copied into the launch); `stream` is a cudaStream_t (0 = legacy default stream). The *_cuda
 * functions enqueue work and return without synchronising.
 */
#ifndef EDGE_LADDER_KERNELS_H
#define EDGE_LADDER_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define ELK_API __declspec(dllexport)
#else
#define ELK_API __attribute__((visibility("default")))
#endif

#define ELK_API_VERSION 1

/* status codes */
#define ELK_OK 0
#define ELK_ERROR_INVALID_ARGUMENT 1   /* message names the argument, expected and received */
#define ELK_ERROR_CUDA 2               /* a CUDA runtime call failed; message has cudaGetErrorString */
#define ELK_ERROR_NO_CUDA 3            /* library built without CUDA (nvcc not found at build time) */

/* output element types */
#define ELK_FLOAT32 0
#define ELK_FLOAT16 1                  /* IEEE half, round to nearest even (as numpy astype) */

/* PCM sample formats */
#define ELK_PCM_INT16 0                /* scaled by 1/32768 */
#define ELK_PCM_FLOAT32 1

/* channel order of a 3-channel uint8 frame */
#define ELK_BGR 0
#define ELK_RGB 1

/* limits (checked) */
#define ELK_MAX_N_FFT 2048
#define ELK_MAX_N_MELS 512
#define ELK_MAX_FACE_SIZE 96

ELK_API int elk_api_version(void);
/* 1 when the CUDA implementation was compiled in (says nothing about a GPU being present). */
ELK_API int elk_built_with_cuda(void);
/* One line: compiler, CUDA version and architectures compiled. */
ELK_API const char *elk_build_info(void);
/* Message of the last failed call on this thread ("" if none). */
ELK_API const char *elk_last_error(void);

/* Number of log-mel frames for n_samples: 1 + (n_samples - win) / hop, 0 when n_samples < win. */
ELK_API int64_t elk_log_mel_frame_count(int64_t n_samples, int win, int hop);

/*
 * Log-mel of one mono window, written to rows [out_time_offset, out_time_offset + T) of `out`:
 * element (t, m) goes to out[(out_time_offset + t) * out_row_stride + m] (elements, not bytes).
 * To fill batch slot b of an engine input (B, T_max, n_mels): out = base + b * T_max * n_mels,
 * out_row_stride = n_mels, out_time_capacity = T_max.
 *   pcm             n_samples samples of pcm_format
 *   mel_filterbank  (n_mels, n_fft/2 + 1) float32, row-major
 */
ELK_API int elk_log_mel_host(const void *pcm, int pcm_format, int64_t n_samples,
                             int win, int hop, int n_fft, int n_mels,
                             const float *mel_filterbank, float log_floor,
                             void *out, int out_dtype, int64_t out_row_stride,
                             int64_t out_time_offset, int64_t out_time_capacity);
ELK_API int elk_log_mel_cuda(const void *pcm, int pcm_format, int64_t n_samples,
                             int win, int hop, int n_fft, int n_mels,
                             const float *mel_filterbank, float log_floor,
                             void *out, int out_dtype, int64_t out_row_stride,
                             int64_t out_time_offset, int64_t out_time_capacity, void *stream);

/*
 * Face crops of n_boxes boxes from one frame, written into an engine face input
 * (out_batch, out_time, 1, size, size): box i goes to slot (slots[2i], slots[2i+1]) =
 * (batch index, time index), i.e. out[((b * out_time) + t) * size * size + ...].
 *   frame   height rows of row_pitch bytes, each row width packed 3-byte pixels
 *   boxes   (n_boxes, 4) float32 x, y, w, h in pixels (already squared; may exceed the frame)
 *   slots   (n_boxes, 2) int32
 */
ELK_API int elk_face_crops_host(const uint8_t *frame, int height, int width, int64_t row_pitch,
                                int channel_order, const float *boxes, const int32_t *slots,
                                int n_boxes, int size, void *out, int out_dtype,
                                int out_batch, int out_time);
ELK_API int elk_face_crops_cuda(const uint8_t *frame, int height, int width, int64_t row_pitch,
                                int channel_order, const float *boxes, const int32_t *slots,
                                int n_boxes, int size, void *out, int out_dtype,
                                int out_batch, int out_time, void *stream);

/* The fp32 -> fp16 rounding the kernels use for ELK_FLOAT16 outputs (round to nearest even,
 * subnormals, overflow to inf), on n host values; exposed so it is tested bit-exact. */
ELK_API int elk_float_to_half_host(const float *values, uint16_t *halves, int64_t n);

/* Small CUDA runtime helpers so callers (tests, benchmarks) need no pycuda. ELK_ERROR_NO_CUDA
 * without CUDA. `stream` may be 0; the copies are ordered on it and synchronous w.r.t. the host
 * only for elk_cuda_copy_to_host (which synchronises the stream). */
ELK_API int elk_cuda_device_count(int *count);
ELK_API int elk_cuda_device_name(int device, char *name, int name_size);
ELK_API int elk_cuda_malloc(void **ptr, size_t bytes);
ELK_API int elk_cuda_free(void *ptr);
ELK_API int elk_cuda_copy_to_device(void *dst, const void *src, size_t bytes, void *stream);
ELK_API int elk_cuda_copy_to_host(void *dst, const void *src, size_t bytes, void *stream);
ELK_API int elk_cuda_synchronize(void *stream);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_LADDER_KERNELS_H */
