// elk_internal.h -- shared by elk_host.cpp and elk_cuda.cu (C++ only, not installed).
#ifndef ELK_INTERNAL_H
#define ELK_INTERNAL_H

#include <stdint.h>

namespace elk {

// Records the message for elk_last_error() (printf-style) and returns `code`.
int fail(int code, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void clear_error();

// Argument checks shared by the host and CUDA entry points. They return ELK_OK or
// ELK_ERROR_INVALID_ARGUMENT with a message naming the argument. n_frames and log2_n are outputs.
int check_log_mel(const void *pcm, int pcm_format, int64_t n_samples, int win, int hop, int n_fft,
                  int n_mels, const float *mel_filterbank, float log_floor, const void *out,
                  int out_dtype, int64_t out_row_stride, int64_t out_time_offset,
                  int64_t out_time_capacity, int64_t *n_frames, int *log2_n);
int check_face_crops(const uint8_t *frame, int height, int width, int64_t row_pitch,
                     int channel_order, const float *boxes, const int32_t *slots, int n_boxes,
                     int size, const void *out, int out_dtype, int out_batch, int out_time);

}  // namespace elk

#endif  // ELK_INTERNAL_H
