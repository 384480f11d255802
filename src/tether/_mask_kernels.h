/*
 * Masking kernels shared by tether's two native modules: tether._speedups
 * (the sans-I/O core's hot path) and tether.asyncio._speedups (the asyncio
 * layer's read path, which unmasks frames as they arrive).  Each module is
 * its own translation unit and gets its own copy of these static functions;
 * each calls tether_mask_init() once, from its PyInit function.
 */

#ifndef TETHER_MASK_KERNELS_H
#define TETHER_MASK_KERNELS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

/* -DTETHER_PORTABLE builds only the portable word loops (for testing). */
#if !defined(TETHER_PORTABLE) && \
    (defined(__x86_64__) || defined(_M_X64) || defined(__SSE2__))
#  define TETHER_HAVE_SSE2 1
#  include <emmintrin.h>
#else
#  define TETHER_HAVE_SSE2 0
#endif

/* -DTETHER_NO_AVX2 leaves out the AVX2 kernel (for testing the SSE2 one). */
#if defined(TETHER_NO_AVX2)
#  define TETHER_AVX2_STATIC 0
#  define TETHER_AVX2_DISPATCH 0
#elif TETHER_HAVE_SSE2 && defined(__AVX2__)
   /* The whole module is compiled for AVX2: no dispatch needed. */
#  define TETHER_AVX2_STATIC 1
#  define TETHER_AVX2_DISPATCH 0
#  include <immintrin.h>
#elif TETHER_HAVE_SSE2 && (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 5))
   /* GCC/Clang: compile an AVX2 kernel with a target attribute and choose it
      at import with __builtin_cpu_supports. */
#  define TETHER_AVX2_STATIC 0
#  define TETHER_AVX2_DISPATCH 1
#  include <immintrin.h>
#else
#  define TETHER_AVX2_STATIC 0
#  define TETHER_AVX2_DISPATCH 0
#endif

#if !defined(TETHER_PORTABLE) && (defined(__aarch64__) || defined(_M_ARM64))
#  define TETHER_HAVE_NEON 1
#  include <arm_neon.h>
#else
#  define TETHER_HAVE_NEON 0
#endif

/* Inputs at least this long are processed with the GIL released. */
#define TETHER_NOGIL_THRESHOLD ((Py_ssize_t)64 * 1024)

#if TETHER_AVX2_DISPATCH
static int tether_cpu_has_avx2 = 0;
#endif


/* Choose the kernel for this CPU (call once, when the module is created). */
static void
tether_mask_init(void)
{
#if TETHER_AVX2_DISPATCH
    __builtin_cpu_init();
    tether_cpu_has_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
}

/* ------------------------------------------------------------------------ */
/* Masking kernels                                                          */
/*                                                                          */
/* Each kernel computes dst[i] = src[i] ^ mask[i % 4] for i in [0, n).      */
/* dst may equal src (in-place); partial overlap is not supported.  Every   */
/* vector or word step is a multiple of 4 bytes, so the key phase is the    */
/* same at the start of every step.                                         */
/* ------------------------------------------------------------------------ */

static inline void
mask_portable(unsigned char *dst, const unsigned char *src, size_t n,
              const unsigned char mask[4])
{
    unsigned char pattern[8];
    uint64_t key, w0, w1, w2, w3;
    size_t i = 0;

    memcpy(pattern, mask, 4);
    memcpy(pattern + 4, mask, 4);
    memcpy(&key, pattern, 8);

    for (; i + 32 <= n; i += 32) {
        memcpy(&w0, src + i, 8);
        memcpy(&w1, src + i + 8, 8);
        memcpy(&w2, src + i + 16, 8);
        memcpy(&w3, src + i + 24, 8);
        w0 ^= key;
        w1 ^= key;
        w2 ^= key;
        w3 ^= key;
        memcpy(dst + i, &w0, 8);
        memcpy(dst + i + 8, &w1, 8);
        memcpy(dst + i + 16, &w2, 8);
        memcpy(dst + i + 24, &w3, 8);
    }
    for (; i + 8 <= n; i += 8) {
        memcpy(&w0, src + i, 8);
        w0 ^= key;
        memcpy(dst + i, &w0, 8);
    }
    for (; i < n; i++) {
        dst[i] = src[i] ^ mask[i & 3];
    }
}

#if TETHER_HAVE_SSE2 && !TETHER_AVX2_STATIC
static void
mask_sse2(unsigned char *dst, const unsigned char *src, size_t n,
          const unsigned char mask[4])
{
    unsigned char pattern[16];
    __m128i key;
    size_t i = 0;

    memcpy(pattern, mask, 4);
    memcpy(pattern + 4, mask, 4);
    memcpy(pattern + 8, pattern, 8);
    key = _mm_loadu_si128((const __m128i *)pattern);

    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, key));
        _mm_storeu_si128((__m128i *)(dst + i + 16), _mm_xor_si128(b, key));
        _mm_storeu_si128((__m128i *)(dst + i + 32), _mm_xor_si128(c, key));
        _mm_storeu_si128((__m128i *)(dst + i + 48), _mm_xor_si128(d, key));
    }
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, key));
    }
    mask_portable(dst + i, src + i, n - i, mask);
}
#endif /* TETHER_HAVE_SSE2 && !TETHER_AVX2_STATIC */

#if TETHER_AVX2_STATIC || TETHER_AVX2_DISPATCH
#  if TETHER_AVX2_DISPATCH
__attribute__((target("avx2")))
#  endif
static void
mask_avx2(unsigned char *dst, const unsigned char *src, size_t n,
          const unsigned char mask[4])
{
    unsigned char pattern[32];
    __m256i key;
    size_t i = 0;

    memcpy(pattern, mask, 4);
    memcpy(pattern + 4, mask, 4);
    memcpy(pattern + 8, pattern, 8);
    memcpy(pattern + 16, pattern, 16);
    key = _mm256_loadu_si256((const __m256i *)pattern);

    for (; i + 128 <= n; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, key));
        _mm256_storeu_si256((__m256i *)(dst + i + 32), _mm256_xor_si256(b, key));
        _mm256_storeu_si256((__m256i *)(dst + i + 64), _mm256_xor_si256(c, key));
        _mm256_storeu_si256((__m256i *)(dst + i + 96), _mm256_xor_si256(d, key));
    }
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, key));
    }
    mask_portable(dst + i, src + i, n - i, mask);
}
#endif /* AVX2 */

#if TETHER_HAVE_NEON
static void
mask_neon(unsigned char *dst, const unsigned char *src, size_t n,
          const unsigned char mask[4])
{
    unsigned char pattern[16];
    uint8x16_t key;
    size_t i = 0;

    memcpy(pattern, mask, 4);
    memcpy(pattern + 4, mask, 4);
    memcpy(pattern + 8, pattern, 8);
    key = vld1q_u8(pattern);

    for (; i + 64 <= n; i += 64) {
        uint8x16_t a = vld1q_u8(src + i);
        uint8x16_t b = vld1q_u8(src + i + 16);
        uint8x16_t c = vld1q_u8(src + i + 32);
        uint8x16_t d = vld1q_u8(src + i + 48);
        vst1q_u8(dst + i, veorq_u8(a, key));
        vst1q_u8(dst + i + 16, veorq_u8(b, key));
        vst1q_u8(dst + i + 32, veorq_u8(c, key));
        vst1q_u8(dst + i + 48, veorq_u8(d, key));
    }
    for (; i + 16 <= n; i += 16) {
        vst1q_u8(dst + i, veorq_u8(vld1q_u8(src + i), key));
    }
    mask_portable(dst + i, src + i, n - i, mask);
}
#endif /* TETHER_HAVE_NEON */

static void
mask_bytes(unsigned char *dst, const unsigned char *src, size_t n,
           const unsigned char mask[4])
{
    if (n < 16) {
        mask_portable(dst, src, n, mask);
        return;
    }
#if TETHER_AVX2_STATIC
    mask_avx2(dst, src, n, mask);
#elif TETHER_AVX2_DISPATCH
    if (tether_cpu_has_avx2 && n >= 64) {
        mask_avx2(dst, src, n, mask);
    }
    else {
        mask_sse2(dst, src, n, mask);
    }
#elif TETHER_HAVE_SSE2
    mask_sse2(dst, src, n, mask);
#elif TETHER_HAVE_NEON
    mask_neon(dst, src, n, mask);
#else
    mask_portable(dst, src, n, mask);
#endif
}

static void
mask_bytes_maybe_nogil(unsigned char *dst, const unsigned char *src,
                       Py_ssize_t n, const unsigned char mask[4])
{
    if (n >= TETHER_NOGIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        mask_bytes(dst, src, (size_t)n, mask);
        Py_END_ALLOW_THREADS
    }
    else {
        mask_bytes(dst, src, (size_t)n, mask);
    }
}


#endif /* TETHER_MASK_KERNELS_H */
