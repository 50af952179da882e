// elk_host.cpp -- argument checks, error messages and the host implementation of the kernels.
// The per-element math is elk_math.cuh, the same source the CUDA kernels run.
#include "edge_ladder_kernels.h"
#include "elk_internal.h"
#include "elk_math.cuh"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include <vector>

namespace elk {

namespace {
thread_local char g_last_error[1024] = "";
}

int fail(int code, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(g_last_error, sizeof g_last_error, format, args);
    va_end(args);
    return code;
}

void clear_error() { g_last_error[0] = '\0'; }

static const char *dtype_help = "ELK_FLOAT32 (0) or ELK_FLOAT16 (1)";

int check_log_mel(const void *pcm, int pcm_format, int64_t n_samples, int win, int hop, int n_fft,
                  int n_mels, const float *mel_filterbank, float log_floor, const void *out,
                  int out_dtype, int64_t out_row_stride, int64_t out_time_offset,
                  int64_t out_time_capacity, int64_t *n_frames, int *log2_n) {
    const int bad = ELK_ERROR_INVALID_ARGUMENT;
    if (pcm_format != ELK_PCM_INT16 && pcm_format != ELK_PCM_FLOAT32)
        return fail(bad, "pcm_format must be ELK_PCM_INT16 (0) or ELK_PCM_FLOAT32 (1); got %d",
                    pcm_format);
    if (n_samples < 0)
        return fail(bad, "n_samples must be >= 0; got %lld", (long long)n_samples);
    if (n_fft < 2 || n_fft > ELK_MAX_N_FFT || (n_fft & (n_fft - 1)) != 0)
        return fail(bad, "n_fft must be a power of two in [2, %d]; got %d", ELK_MAX_N_FFT, n_fft);
    if (win < 1 || win > n_fft)
        return fail(bad, "win must be in [1, n_fft=%d]; got %d", n_fft, win);
    if (hop < 1)
        return fail(bad, "hop must be >= 1; got %d", hop);
    if (n_mels < 1 || n_mels > ELK_MAX_N_MELS)
        return fail(bad, "n_mels must be in [1, %d]; got %d", ELK_MAX_N_MELS, n_mels);
    if (mel_filterbank == nullptr)
        return fail(bad, "mel_filterbank is NULL; pass the (n_mels=%d, n_fft/2+1=%d) float32 matrix "
                    "of frontend.mel_filterbank", n_mels, n_fft / 2 + 1);
    if (!(log_floor > 0.0f) || !isfinite(log_floor))
        return fail(bad, "log_floor must be a positive finite number (frontend.LOG_FLOOR = 1e-10); "
                    "got %g", (double)log_floor);
    if (out_dtype != ELK_FLOAT32 && out_dtype != ELK_FLOAT16)
        return fail(bad, "out_dtype must be %s; got %d", dtype_help, out_dtype);
    if (out_row_stride < n_mels)
        return fail(bad, "out_row_stride must be >= n_mels=%d (elements between frames); got %lld",
                    n_mels, (long long)out_row_stride);
    if (out_time_offset < 0)
        return fail(bad, "out_time_offset must be >= 0; got %lld", (long long)out_time_offset);
    const int64_t frames = elk_log_mel_frame_count(n_samples, win, hop);
    if (out_time_offset + frames > out_time_capacity)
        return fail(bad, "out_time_capacity=%lld is too small: %lld samples give %lld frames written "
                    "from out_time_offset=%lld (needs >= %lld); use a longer buffer or a shorter window",
                    (long long)out_time_capacity, (long long)n_samples, (long long)frames,
                    (long long)out_time_offset, (long long)(out_time_offset + frames));
    if (frames > 0 && pcm == nullptr)
        return fail(bad, "pcm is NULL but n_samples=%lld", (long long)n_samples);
    if (frames > 0 && out == nullptr)
        return fail(bad, "out is NULL but %lld frames are to be written", (long long)frames);
    int bits = 0;
    while ((1 << bits) < n_fft) ++bits;
    *n_frames = frames;
    *log2_n = bits;
    return ELK_OK;
}

int check_face_crops(const uint8_t *frame, int height, int width, int64_t row_pitch,
                     int channel_order, const float *boxes, const int32_t *slots, int n_boxes,
                     int size, const void *out, int out_dtype, int out_batch, int out_time) {
    const int bad = ELK_ERROR_INVALID_ARGUMENT;
    if (height < 1 || width < 1)
        return fail(bad, "frame size must be positive; got height=%d width=%d", height, width);
    if (row_pitch < (int64_t)width * 3)
        return fail(bad, "row_pitch must be >= width*3 = %lld bytes (packed 3-byte pixels); got %lld",
                    (long long)width * 3, (long long)row_pitch);
    if (channel_order != ELK_BGR && channel_order != ELK_RGB)
        return fail(bad, "channel_order must be ELK_BGR (0) or ELK_RGB (1); got %d", channel_order);
    if (n_boxes < 0)
        return fail(bad, "n_boxes must be >= 0; got %d", n_boxes);
    if (size < 1 || size > ELK_MAX_FACE_SIZE)
        return fail(bad, "size must be in [1, %d]; got %d", ELK_MAX_FACE_SIZE, size);
    if (out_dtype != ELK_FLOAT32 && out_dtype != ELK_FLOAT16)
        return fail(bad, "out_dtype must be %s; got %d", dtype_help, out_dtype);
    if (out_batch < 1 || out_time < 1)
        return fail(bad, "out_batch and out_time must be >= 1 (the face input is "
                    "(out_batch, out_time, 1, size, size)); got out_batch=%d out_time=%d",
                    out_batch, out_time);
    if (n_boxes == 0) return ELK_OK;
    if (frame == nullptr) return fail(bad, "frame is NULL");
    if (boxes == nullptr) return fail(bad, "boxes is NULL but n_boxes=%d", n_boxes);
    if (slots == nullptr) return fail(bad, "slots is NULL but n_boxes=%d", n_boxes);
    if (out == nullptr) return fail(bad, "out is NULL");
    static const char *names[4] = {"x", "y", "w", "h"};
    for (int i = 0; i < n_boxes; ++i) {
        const float *box = boxes + 4 * i;
        for (int c = 0; c < 4; ++c)
            if (!isfinite(box[c]))
                return fail(bad, "boxes[%d].%s must be finite; got %g", i, names[c], (double)box[c]);
        if (!(box[2] > 0.0f) || !(box[3] > 0.0f))
            return fail(bad, "boxes[%d] must have positive w and h; got (x=%g, y=%g, w=%g, h=%g)", i,
                        (double)box[0], (double)box[1], (double)box[2], (double)box[3]);
        const int32_t b = slots[2 * i], t = slots[2 * i + 1];
        if (b < 0 || b >= out_batch)
            return fail(bad, "slots[%d] batch index must be in [0, out_batch=%d); got %d", i, out_batch, b);
        if (t < 0 || t >= out_time)
            return fail(bad, "slots[%d] time index must be in [0, out_time=%d); got %d", i, out_time, t);
    }
    return ELK_OK;
}

}  // namespace elk

using namespace elk;

extern "C" {

int elk_api_version(void) { return ELK_API_VERSION; }

const char *elk_last_error(void) { return g_last_error; }

int64_t elk_log_mel_frame_count(int64_t n_samples, int win, int hop) {
    if (win < 1 || hop < 1 || n_samples < win) return 0;
    return 1 + (n_samples - win) / hop;
}

int elk_log_mel_host(const void *pcm, int pcm_format, int64_t n_samples, int win, int hop, int n_fft,
                     int n_mels, const float *mel_filterbank, float log_floor, void *out,
                     int out_dtype, int64_t out_row_stride, int64_t out_time_offset,
                     int64_t out_time_capacity) {
    clear_error();
    int64_t n_frames = 0;
    int log2_n = 0;
    const int status = check_log_mel(pcm, pcm_format, n_samples, win, hop, n_fft, n_mels,
                                     mel_filterbank, log_floor, out, out_dtype, out_row_stride,
                                     out_time_offset, out_time_capacity, &n_frames, &log2_n);
    if (status != ELK_OK || n_frames == 0) return status;
    const int n_bins = n_fft / 2 + 1;
    std::vector<float> re(n_fft), im(n_fft), twiddle_re(n_fft / 2), twiddle_im(n_fft / 2);
    std::vector<int> mel_lo(n_mels), mel_hi(n_mels);
    // The CUDA kernel runs these stages with (threadIdx.x, blockDim.x); here one "thread" runs all.
    stage_twiddles(0, 1, n_fft, twiddle_re.data(), twiddle_im.data());
    stage_mel_ranges_reset(0, 1, n_mels, n_bins, mel_lo.data(), mel_hi.data());
    stage_mel_ranges(0, 1, mel_filterbank, n_mels, n_bins, mel_lo.data(), mel_hi.data());
    for (int64_t t = 0; t < n_frames; ++t) {
        stage_load_frame(0, 1, pcm, pcm_format, t * hop, win, n_fft, log2_n, re.data(), im.data());
        for (int half = 1; half < n_fft; half *= 2)
            stage_butterflies(0, 1, n_fft, half, twiddle_re.data(), twiddle_im.data(), re.data(), im.data());
        stage_power(0, 1, n_fft, re.data(), im.data());
        stage_mel_log(0, 1, re.data(), mel_filterbank, n_mels, n_bins, mel_lo.data(), mel_hi.data(),
                      log_floor, out, out_dtype, (out_time_offset + t) * out_row_stride);
    }
    return ELK_OK;
}

int elk_face_crops_host(const uint8_t *frame, int height, int width, int64_t row_pitch,
                        int channel_order, const float *boxes, const int32_t *slots, int n_boxes,
                        int size, void *out, int out_dtype, int out_batch, int out_time) {
    clear_error();
    const int status = check_face_crops(frame, height, width, row_pitch, channel_order, boxes, slots,
                                        n_boxes, size, out, out_dtype, out_batch, out_time);
    if (status != ELK_OK) return status;
    const LumaWeights weights = luma_weights(channel_order);
    const int n_pixels = size * size;
    std::vector<float> crop(n_pixels);
    for (int i = 0; i < n_boxes; ++i) {
        stage_crop(0, 1, frame, height, width, row_pitch, weights, boxes + 4 * i, size, crop.data());
        double sum = 0.0;
        for (int p = 0; p < n_pixels; ++p) sum += crop[p];
        const float mean = (float)(sum / n_pixels);
        double squares = 0.0;
        for (int p = 0; p < n_pixels; ++p) {
            const float deviation = crop[p] - mean;
            squares += (double)deviation * deviation;
        }
        const float std = (float)sqrt(squares / n_pixels);
        const int64_t slot = (int64_t)slots[2 * i] * out_time + slots[2 * i + 1];
        stage_standardise_store(0, 1, crop.data(), size, mean, std, out, out_dtype, slot * n_pixels);
    }
    return ELK_OK;
}

int elk_float_to_half_host(const float *values, uint16_t *halves, int64_t n) {
    clear_error();
    if (n < 0) return fail(ELK_ERROR_INVALID_ARGUMENT, "n must be >= 0; got %lld", (long long)n);
    if (n > 0 && values == nullptr) return fail(ELK_ERROR_INVALID_ARGUMENT, "values is NULL");
    if (n > 0 && halves == nullptr) return fail(ELK_ERROR_INVALID_ARGUMENT, "halves is NULL");
    for (int64_t i = 0; i < n; ++i) halves[i] = float_to_half_bits(values[i]);
    return ELK_OK;
}

#ifndef ELK_WITH_CUDA
// Built without nvcc: the CUDA entry points exist and say why they cannot run.
static int no_cuda(const char *function) {
    return fail(ELK_ERROR_NO_CUDA,
                "%s: this edge_ladder_kernels library was built without CUDA (CMake found no nvcc); "
                "install the CUDA toolkit and rebuild: cmake -S . -B build && cmake --build build",
                function);
}
int elk_built_with_cuda(void) { return 0; }
const char *elk_build_info(void) { return "host only (built without CUDA), " ELK_HOST_COMPILER; }
int elk_log_mel_cuda(const void *, int, int64_t, int, int, int, int, const float *, float, void *, int,
                     int64_t, int64_t, int64_t, void *) { return no_cuda("elk_log_mel_cuda"); }
int elk_face_crops_cuda(const uint8_t *, int, int, int64_t, int, const float *, const int32_t *, int,
                        int, void *, int, int, int, void *) { return no_cuda("elk_face_crops_cuda"); }
int elk_cuda_device_count(int *count) {
    if (count) *count = 0;
    return no_cuda("elk_cuda_device_count");
}
int elk_cuda_device_name(int, char *, int) { return no_cuda("elk_cuda_device_name"); }
int elk_cuda_malloc(void **, size_t) { return no_cuda("elk_cuda_malloc"); }
int elk_cuda_free(void *) { return no_cuda("elk_cuda_free"); }
int elk_cuda_copy_to_device(void *, const void *, size_t, void *) { return no_cuda("elk_cuda_copy_to_device"); }
int elk_cuda_copy_to_host(void *, const void *, size_t, void *) { return no_cuda("elk_cuda_copy_to_host"); }
int elk_cuda_synchronize(void *) { return no_cuda("elk_cuda_synchronize"); }
#endif

}  // extern "C"
