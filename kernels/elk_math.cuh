// elk_math.cuh -- the math of the kernels, written once for the host and the device.
//
// Included by elk_host.cpp (C++ compiler, ELK_HD = inline) and elk_cuda.cu (nvcc,
// ELK_HD = __host__ __device__). Every stage is a function of (tid, n_threads): the CUDA kernels
// call it with (threadIdx.x, blockDim.x) and __syncthreads() between stages; the host calls it
// with (0, 1), which runs the same loop sequentially. edge_ladder/frontend.py defines the math.
#ifndef ELK_MATH_CUH
#define ELK_MATH_CUH

#include <stdint.h>
#include <string.h>
#include <math.h>

#ifdef __CUDACC__
#define ELK_HD __host__ __device__ __forceinline__
#else
#define ELK_HD inline
#endif

namespace elk {

constexpr double kPi = 3.14159265358979323846;
constexpr float kFaceStdEps = 1e-2f;   // frontend.FACE_STD_EPS

// ---------------------------------------------------------------------------------------------
// Output stores: fp32, or fp16 rounded to nearest even (bit-identical to numpy's astype).

ELK_HD uint32_t float_bits(float value) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(value);
#else
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
#endif
}

ELK_HD uint16_t float_to_half_bits(float value) {
    const uint32_t bits = float_bits(value);
    const uint32_t sign = (bits >> 16) & 0x8000u;
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude >= 0x7f800000u)                         // inf, nan (quiet)
        return (uint16_t)(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x0200u : 0u));
    if (magnitude >= 0x477ff000u)                         // >= 65520 rounds to inf
        return (uint16_t)(sign | 0x7c00u);
    if (magnitude >= 0x38800000u) {                       // normal half: >= 2^-14
        uint32_t half = (magnitude - (112u << 23)) >> 13;
        const uint32_t rest = magnitude & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) half += 1u;
        return (uint16_t)(sign | half);
    }
    if (magnitude < 0x33000000u) return (uint16_t)sign;   // < 2^-25 rounds to zero
    // subnormal half: count of 2^-24 units = mantissa (with hidden bit) >> (126 - exponent)
    const uint32_t exponent = magnitude >> 23;            // 102 .. 112
    const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exponent;               // 14 .. 24
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t tie = 1u << (shift - 1u);
    if (rest > tie || (rest == tie && (half & 1u))) half += 1u;
    return (uint16_t)(sign | half);
}

// out[index] = value as fp32 (dtype 0) or fp16 (dtype 1)
ELK_HD void store(void *out, int dtype, int64_t index, float value) {
    if (dtype == 0) ((float *)out)[index] = value;
    else ((uint16_t *)out)[index] = float_to_half_bits(value);
}

// ---------------------------------------------------------------------------------------------
// Log-mel. Work arrays of one frame (n_fft = 2^log2_n): re[n_fft], im[n_fft],
// twiddle_re/im[n_fft/2], mel_lo/hi[n_mels] (first/last non-zero bin of each filter).

ELK_HD float pcm_sample(const void *pcm, int format, int64_t index) {
    if (format == 0) return (float)((const int16_t *)pcm)[index] / 32768.0f;   // as pcm_to_float
    return ((const float *)pcm)[index];
}

// Periodic Hann, computed in double and rounded once (as frontend.hann_window).
ELK_HD float hann(int n, int win) {
    return (float)(0.5 - 0.5 * cos(2.0 * kPi * (double)n / (double)win));
}

ELK_HD int bit_reverse(int value, int log2_n) {
    int reversed = 0;
    for (int bit = 0; bit < log2_n; ++bit) {
        reversed = (reversed << 1) | (value & 1);
        value >>= 1;
    }
    return reversed;
}

// twiddle[k] = exp(-2 pi i k / n_fft), k < n_fft / 2, double then rounded.
ELK_HD void stage_twiddles(int tid, int n_threads, int n_fft, float *twiddle_re, float *twiddle_im) {
    for (int k = tid; k < n_fft / 2; k += n_threads) {
        const double angle = 2.0 * kPi * (double)k / (double)n_fft;
        twiddle_re[k] = (float)cos(angle);
        twiddle_im[k] = (float)-sin(angle);
    }
}

// *slot = min(*slot, value) / max: atomic on the device (threads share the slot), plain on the host.
ELK_HD void min_into(int *slot, int value) {
#ifdef __CUDA_ARCH__
    atomicMin(slot, value);
#else
    if (value < *slot) *slot = value;
#endif
}

ELK_HD void max_into(int *slot, int value) {
#ifdef __CUDA_ARCH__
    atomicMax(slot, value);
#else
    if (value > *slot) *slot = value;
#endif
}

// First and last non-zero bin of each mel filter, in two stages (reset, then one pass over all
// (n_mels, n_bins) weights, coalesced on the device). An all-zero filter keeps lo > hi.
ELK_HD void stage_mel_ranges_reset(int tid, int n_threads, int n_mels, int n_bins, int *mel_lo, int *mel_hi) {
    for (int m = tid; m < n_mels; m += n_threads) {
        mel_lo[m] = n_bins;
        mel_hi[m] = -1;
    }
}

ELK_HD void stage_mel_ranges(int tid, int n_threads, const float *filterbank, int n_mels, int n_bins,
                             int *mel_lo, int *mel_hi) {
    for (int i = tid; i < n_mels * n_bins; i += n_threads) {
        if (filterbank[i] == 0.0f) continue;
        min_into(&mel_lo[i / n_bins], i % n_bins);
        max_into(&mel_hi[i / n_bins], i % n_bins);
    }
}

// Windowed frame starting at sample `start`, zero-padded to n_fft, in bit-reversed order.
ELK_HD void stage_load_frame(int tid, int n_threads, const void *pcm, int pcm_format, int64_t start,
                             int win, int n_fft, int log2_n, float *re, float *im) {
    for (int n = tid; n < n_fft; n += n_threads) {
        const float value = n < win ? pcm_sample(pcm, pcm_format, start + n) * hann(n, win) : 0.0f;
        const int slot = bit_reverse(n, log2_n);
        re[slot] = value;
        im[slot] = 0.0f;
    }
}

// One radix-2 decimation-in-time stage: butterflies of span 2 * half (half = 1, 2, 4, ...).
ELK_HD void stage_butterflies(int tid, int n_threads, int n_fft, int half, const float *twiddle_re,
                              const float *twiddle_im, float *re, float *im) {
    const int twiddle_step = n_fft / (2 * half);
    for (int b = tid; b < n_fft / 2; b += n_threads) {
        const int position = b % half;
        const int top = (b / half) * 2 * half + position;
        const int bottom = top + half;
        const float w_re = twiddle_re[position * twiddle_step];
        const float w_im = twiddle_im[position * twiddle_step];
        const float t_re = w_re * re[bottom] - w_im * im[bottom];
        const float t_im = w_re * im[bottom] + w_im * re[bottom];
        re[bottom] = re[top] - t_re;
        im[bottom] = im[top] - t_im;
        re[top] += t_re;
        im[top] += t_im;
    }
}

// Power |X_k|^2 of bins 0 .. n_fft/2, written over re[k].
ELK_HD void stage_power(int tid, int n_threads, int n_fft, float *re, const float *im) {
    for (int k = tid; k <= n_fft / 2; k += n_threads) re[k] = re[k] * re[k] + im[k] * im[k];
}

// out[row + m] = log(max(sum_k filterbank[m, k] * power[k], log_floor))
ELK_HD void stage_mel_log(int tid, int n_threads, const float *power, const float *filterbank,
                          int n_mels, int n_bins, const int *mel_lo, const int *mel_hi,
                          float log_floor, void *out, int out_dtype, int64_t row) {
    for (int m = tid; m < n_mels; m += n_threads) {
        const float *weights = filterbank + (int64_t)m * n_bins;
        float mel = 0.0f;
        for (int k = mel_lo[m]; k <= mel_hi[m]; ++k) mel += weights[k] * power[k];
        store(out, out_dtype, row + m, logf(fmaxf(mel, log_floor)));
    }
}

// ---------------------------------------------------------------------------------------------
// Face crops.

struct LumaWeights { float c0, c1, c2; };   // weight of byte 0, 1, 2 of a pixel

ELK_HD LumaWeights luma_weights(int channel_order) {
    // float32 weights, as numpy applies the Python-float weights to a float32 array
    if (channel_order == 0) return LumaWeights{0.114f, 0.587f, 0.299f};   // BGR
    return LumaWeights{0.299f, 0.587f, 0.114f};                            // RGB
}

ELK_HD float luma(const uint8_t *frame, int64_t row_pitch, int64_t y, int64_t x, LumaWeights w) {
    const uint8_t *pixel = frame + y * row_pitch + x * 3;
    return (float)pixel[0] * w.c0 + (float)pixel[1] * w.c1 + (float)pixel[2] * w.c2;
}

// Sample position of output index i along an axis: half-pixel centres, clamped to [0, extent - 1].
// Double precision and the numpy evaluation order, so floor() and the fraction agree with numpy.
struct Tap { int64_t i0, i1; float frac; };

ELK_HD Tap sample_tap(double origin, double length, int size, int index, int extent) {
    double position = origin + ((double)index + 0.5) * (length / (double)size) - 0.5;
    position = fmin(fmax(position, 0.0), (double)extent - 1.0);
    const double floor_position = floor(position);
    Tap tap;
    tap.i0 = (int64_t)floor_position;
    tap.i1 = tap.i0 + 1 < extent ? tap.i0 + 1 : extent - 1;
    tap.frac = (float)(position - floor_position);
    return tap;
}

// Crop pixel (row, col) of box (x, y, w, h) in [0, 1], before standardisation.
ELK_HD float crop_pixel(const uint8_t *frame, int height, int width, int64_t row_pitch, LumaWeights w,
                        const float *box, int size, int row, int col) {
    const Tap tx = sample_tap((double)box[0], (double)box[2], size, col, width);
    const Tap ty = sample_tap((double)box[1], (double)box[3], size, row, height);
    const float top = luma(frame, row_pitch, ty.i0, tx.i0, w) * (1.0f - tx.frac)
                    + luma(frame, row_pitch, ty.i0, tx.i1, w) * tx.frac;
    const float bottom = luma(frame, row_pitch, ty.i1, tx.i0, w) * (1.0f - tx.frac)
                       + luma(frame, row_pitch, ty.i1, tx.i1, w) * tx.frac;
    return (top * (1.0f - ty.frac) + bottom * ty.frac) / 255.0f;
}

ELK_HD float standardise(float value, float mean, float std) {
    return (value - mean) / (std + kFaceStdEps);
}

// Crop pixels into `crop` (size * size floats).
ELK_HD void stage_crop(int tid, int n_threads, const uint8_t *frame, int height, int width,
                       int64_t row_pitch, LumaWeights w, const float *box, int size, float *crop) {
    for (int i = tid; i < size * size; i += n_threads)
        crop[i] = crop_pixel(frame, height, width, row_pitch, w, box, size, i / size, i % size);
}

ELK_HD void stage_standardise_store(int tid, int n_threads, const float *crop, int size, float mean,
                                    float std, void *out, int out_dtype, int64_t offset) {
    for (int i = tid; i < size * size; i += n_threads)
        store(out, out_dtype, offset + i, standardise(crop[i], mean, std));
}

}  // namespace elk

#endif  // ELK_MATH_CUH
