/*
 * tether._speedups -- optional native hot path for tether.
 *
 *   apply_mask(data, mask) -> bytes
 *       XOR ``data`` with the repeating 4-byte WebSocket masking key
 *       (RFC 6455 section 5.3).
 *   apply_mask_inplace(buf, mask, offset=0, length=-1, mask_offset=0) -> None
 *       The same, in place, over ``buf[offset:offset + length]`` of a writable
 *       buffer; the key phase starts at ``mask_offset % 4``.
 *   utf8_valid(data) -> bool
 *       Strict UTF-8 validation (no overlongs, no surrogates, <= U+10FFFF).
 *   Utf8Validator
 *       Incremental validator: feed(data, final=False) -> bool, reset().
 *       feed() answers False as soon as the bytes seen so far cannot be the
 *       beginning of valid UTF-8 (fail fast, as RFC 6455 section 8.1 asks).
 *
 * Every function has a pure-Python twin (tether._mask, tether._utf8); the test
 * suite runs the same cases against both.
 *
 * Masking runs 8 bytes at a time on uint64 words (memcpy loads, which
 * compilers turn into plain unaligned loads), 16 bytes at a time with SSE2 on
 * x86-64 or NEON on AArch64, and 32 bytes at a time with AVX2, which is either
 * enabled at compile time (-mavx2) or compiled through a target attribute and
 * picked at import when the CPU has it.  Large inputs release the GIL.
 */

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


/* ------------------------------------------------------------------------ */
/* Argument helpers                                                         */
/* ------------------------------------------------------------------------ */

/*
 * Sort the arguments of a METH_FASTCALL | METH_KEYWORDS call into
 * out[0 .. nnames).  Arguments that were not given are left NULL.
 */
static int
collect_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames, const char *const *names, Py_ssize_t nnames,
             Py_ssize_t nrequired, PyObject **out)
{
    Py_ssize_t i, k, nkw;

    for (i = 0; i < nnames; i++) {
        out[i] = NULL;
    }
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most %zd arguments (%zd given)",
                     fname, nnames, nargs);
        return -1;
    }
    for (i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        for (i = 0; i < nnames; i++) {
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                break;
            }
        }
        if (i == nnames) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'",
                         fname, key);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'",
                         fname, names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (i = 0; i < nrequired; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required argument '%s' (pos %zd)",
                         fname, names[i], i + 1);
            return -1;
        }
    }
    return 0;
}

/* Read a 4-byte masking key from any bytes-like object. */
static int
get_mask(PyObject *obj, unsigned char mask[4])
{
    Py_buffer view;

    if (PyBytes_CheckExact(obj)) {
        if (PyBytes_GET_SIZE(obj) != 4) {
            PyErr_Format(PyExc_ValueError,
                         "mask must be exactly 4 bytes, got %zd",
                         PyBytes_GET_SIZE(obj));
            return -1;
        }
        memcpy(mask, PyBytes_AS_STRING(obj), 4);
        return 0;
    }
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view.len != 4) {
        PyErr_Format(PyExc_ValueError,
                     "mask must be exactly 4 bytes, got %zd", view.len);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(mask, view.buf, 4);
    PyBuffer_Release(&view);
    return 0;
}

/*
 * A read-only view of the bytes of any buffer.  Contiguous buffers are used
 * directly; a non-contiguous one (say memoryview(b)[::2]) is copied once.
 */
typedef struct {
    Py_buffer view;
    const unsigned char *buf;
    Py_ssize_t len;
    void *copy;
} ByteSource;

static int
source_open(ByteSource *src, PyObject *obj)
{
    src->copy = NULL;
    if (PyObject_GetBuffer(obj, &src->view, PyBUF_FULL_RO) < 0) {
        return -1;
    }
    src->len = src->view.len;
    if (PyBuffer_IsContiguous(&src->view, 'C')) {
        src->buf = (const unsigned char *)src->view.buf;
        return 0;
    }
    src->copy = PyMem_Malloc(src->len > 0 ? (size_t)src->len : 1);
    if (src->copy == NULL) {
        PyBuffer_Release(&src->view);
        PyErr_NoMemory();
        return -1;
    }
    if (PyBuffer_ToContiguous(src->copy, &src->view, src->len, 'C') < 0) {
        PyMem_Free(src->copy);
        PyBuffer_Release(&src->view);
        return -1;
    }
    src->buf = (const unsigned char *)src->copy;
    return 0;
}

static void
source_close(ByteSource *src)
{
    if (src->copy != NULL) {
        PyMem_Free(src->copy);
        src->copy = NULL;
    }
    PyBuffer_Release(&src->view);
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


/* ------------------------------------------------------------------------ */
/* apply_mask / apply_mask_inplace                                          */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, mask)\n"
"--\n"
"\n"
"Return ``data`` XOR-ed with the repeating 4-byte ``mask`` as bytes.\n"
"\n"
"``data`` may be any bytes-like object; ``mask`` must be exactly 4 bytes\n"
"(ValueError otherwise).  Masking and unmasking are the same operation.");

static PyObject *
apply_mask(PyObject *Py_UNUSED(module), PyObject *const *args,
           Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "mask"};
    PyObject *argv[2];
    unsigned char mask[4];
    PyObject *result;
    ByteSource src;

    if (kwnames == NULL && nargs == 2) {
        argv[0] = args[0];
        argv[1] = args[1];
    }
    else if (collect_args("apply_mask", args, nargs, kwnames, names, 2, 2,
                          argv) < 0) {
        return NULL;
    }
    if (get_mask(argv[1], mask) < 0) {
        return NULL;
    }

    if (PyBytes_CheckExact(argv[0])) {
        /* Fast path: no buffer export needed, bytes are immutable. */
        Py_ssize_t n = PyBytes_GET_SIZE(argv[0]);
        result = PyBytes_FromStringAndSize(NULL, n);
        if (result == NULL) {
            return NULL;
        }
        mask_bytes_maybe_nogil((unsigned char *)PyBytes_AS_STRING(result),
                               (const unsigned char *)PyBytes_AS_STRING(argv[0]),
                               n, mask);
        return result;
    }

    if (source_open(&src, argv[0]) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, src.len);
    if (result != NULL) {
        mask_bytes_maybe_nogil((unsigned char *)PyBytes_AS_STRING(result),
                               src.buf, src.len, mask);
    }
    source_close(&src);
    return result;
}

static int
get_ssize(PyObject *obj, Py_ssize_t default_value, Py_ssize_t *out)
{
    if (obj == NULL) {
        *out = default_value;
        return 0;
    }
    *out = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (*out == -1 && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(apply_mask_inplace_doc,
"apply_mask_inplace(buf, mask, offset=0, length=-1, mask_offset=0)\n"
"--\n"
"\n"
"XOR ``buf[offset:offset + length]`` in place with the repeating 4-byte\n"
"``mask``.\n"
"\n"
"``buf`` must be a writable contiguous buffer (bytearray, writable\n"
"memoryview, ...).  ``length=-1`` means up to the end of ``buf``.  The mask\n"
"phase starts at ``mask_offset % 4``, so a payload that arrives in pieces\n"
"can be unmasked piece by piece.  Returns None.");

static PyObject *
apply_mask_inplace(PyObject *Py_UNUSED(module), PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {
        "buf", "mask", "offset", "length", "mask_offset"};
    PyObject *argv[5];
    unsigned char mask[4], rotated[4];
    Py_ssize_t offset, length, mask_offset, phase, i;
    Py_buffer view;

    if (collect_args("apply_mask_inplace", args, nargs, kwnames, names, 5, 2,
                     argv) < 0) {
        return NULL;
    }
    if (get_mask(argv[1], mask) < 0
        || get_ssize(argv[2], 0, &offset) < 0
        || get_ssize(argv[3], -1, &length) < 0
        || get_ssize(argv[4], 0, &mask_offset) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(argv[0], &view, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "apply_mask_inplace() argument 'buf' must be a "
                         "writable contiguous buffer, not %.200s",
                         Py_TYPE(argv[0])->tp_name);
        }
        return NULL;
    }
    if (offset < 0 || offset > view.len) {
        PyErr_Format(PyExc_ValueError,
                     "offset %zd out of range for a buffer of %zd bytes",
                     offset, view.len);
        goto error;
    }
    if (length == -1) {
        length = view.len - offset;
    }
    else if (length < 0 || length > view.len - offset) {
        PyErr_Format(PyExc_ValueError,
                     "length %zd out of range for offset %zd in a buffer of "
                     "%zd bytes", length, offset, view.len);
        goto error;
    }

    phase = mask_offset % 4;
    if (phase < 0) {
        phase += 4;
    }
    for (i = 0; i < 4; i++) {
        rotated[i] = mask[(phase + i) & 3];
    }
    {
        unsigned char *p = (unsigned char *)view.buf + offset;
        mask_bytes_maybe_nogil(p, p, length, rotated);
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;

error:
    PyBuffer_Release(&view);
    return NULL;
}


/* ------------------------------------------------------------------------ */
/* UTF-8 validation                                                         */
/*                                                                          */
/* A deterministic automaton over byte classes.  REJECT is absorbing, and   */
/* every other state can still be completed into valid UTF-8, so the        */
/* automaton rejects at the first byte that makes the input invalid (which  */
/* is what lets Utf8Validator.feed fail fast).                              */
/*                                                                          */
/* utf8_class and utf8_next below are the readable definition.  The loop    */
/* runs on a "shift DFA" derived from them at import: utf8_rows[byte] packs */
/* the successor of every state as 6-bit fields, state s at bits 6s..6s+5,  */
/* and each field holds 6 * (successor).  A state is kept as its shift      */
/* amount, so one step is   q = utf8_rows[byte] >> (q & 63),                */
/* whose only dependency on the previous byte is a single shift (x86 masks  */
/* shift counts itself, so the "& 63" costs nothing), instead of the        */
/* load-add-load chain of a two-table lookup.                               */
/* ------------------------------------------------------------------------ */

/* Byte classes. */
enum {
    C_ASCII = 0,  /* 00..7F */
    C_CONT_8 = 1, /* 80..8F continuation */
    C_CONT_9 = 2, /* 90..9F continuation */
    C_CONT_AB = 3,/* A0..BF continuation */
    C_BAD = 4,    /* C0, C1, F5..FF: never valid */
    C_L2 = 5,     /* C2..DF: lead of 2 */
    C_E0 = 6,     /* E0: lead of 3, next in A0..BF (no overlongs) */
    C_L3 = 7,     /* E1..EC, EE, EF: lead of 3 */
    C_ED = 8,     /* ED: lead of 3, next in 80..9F (no surrogates) */
    C_F0 = 9,     /* F0: lead of 4, next in 90..BF (no overlongs) */
    C_L4 = 10,    /* F1..F3: lead of 4 */
    C_F4 = 11,    /* F4: lead of 4, next in 80..8F (<= U+10FFFF) */
    N_CLASSES = 12
};

/* States. */
enum {
    S_ACCEPT = 0, /* between characters */
    S_REJECT = 1, /* invalid, absorbing */
    S_NEED1 = 2,  /* one continuation byte left */
    S_NEED2 = 3,  /* two continuation bytes left */
    S_E0 = 4,     /* after E0: A0..BF, then one more */
    S_ED = 5,     /* after ED: 80..9F, then one more */
    S_F0 = 6,     /* after F0: 90..BF, then two more */
    S_NEED3 = 7,  /* three continuation bytes left */
    S_F4 = 8,     /* after F4: 80..8F, then two more */
    N_STATES = 9
};

/* A state of the shift DFA is its shift amount. */
#define SHIFT_STATE(s) ((uint64_t)(s) * 6)
#define Q_ACCEPT SHIFT_STATE(S_ACCEPT)
#define Q_REJECT SHIFT_STATE(S_REJECT)

#define X16(c) c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c

static const unsigned char utf8_class[256] = {
    /* 00..7F */
    X16(C_ASCII), X16(C_ASCII), X16(C_ASCII), X16(C_ASCII),
    X16(C_ASCII), X16(C_ASCII), X16(C_ASCII), X16(C_ASCII),
    /* 80..8F, 90..9F, A0..BF */
    X16(C_CONT_8), X16(C_CONT_9), X16(C_CONT_AB), X16(C_CONT_AB),
    /* C0..CF */
    C_BAD, C_BAD, C_L2, C_L2, C_L2, C_L2, C_L2, C_L2,
    C_L2, C_L2, C_L2, C_L2, C_L2, C_L2, C_L2, C_L2,
    /* D0..DF */
    X16(C_L2),
    /* E0..EF */
    C_E0, C_L3, C_L3, C_L3, C_L3, C_L3, C_L3, C_L3,
    C_L3, C_L3, C_L3, C_L3, C_L3, C_ED, C_L3, C_L3,
    /* F0..FF */
    C_F0, C_L4, C_L4, C_L4, C_F4, C_BAD, C_BAD, C_BAD,
    C_BAD, C_BAD, C_BAD, C_BAD, C_BAD, C_BAD, C_BAD, C_BAD,
};

#undef X16

#define RJ S_REJECT
static const unsigned char utf8_next[N_STATES][N_CLASSES] = {
    /*             ASCII     80..8F    90..9F    A0..BF    bad C2..DF   E0    E1..EF   ED    F0    F1..F3   F4 */
    /* ACCEPT */ {S_ACCEPT, RJ,       RJ,       RJ,       RJ, S_NEED1, S_E0, S_NEED2, S_ED, S_F0, S_NEED3, S_F4},
    /* REJECT */ {RJ,       RJ,       RJ,       RJ,       RJ, RJ,      RJ,   RJ,      RJ,   RJ,   RJ,      RJ},
    /* NEED1  */ {RJ,       S_ACCEPT, S_ACCEPT, S_ACCEPT, RJ, RJ,      RJ,   RJ,      RJ,   RJ,   RJ,      RJ},
    /* NEED2  */ {RJ,       S_NEED1,  S_NEED1,  S_NEED1,  RJ, RJ,      RJ,   RJ,      RJ,   RJ,   RJ,      RJ},
    /* E0     */ {RJ,       RJ,       RJ,       S_NEED1,  RJ, RJ,      RJ,   RJ,      RJ,   RJ,   RJ,      RJ},
    /* ED     */ {RJ,       S_NEED1,  S_NEED1,  RJ,       RJ, RJ,      RJ,   RJ,      RJ,   RJ,   RJ,      RJ},
    /* F0     */ {RJ,       RJ,       S_NEED2,  S_NEED2,  RJ, RJ,      RJ,   RJ,      RJ,   RJ,   RJ,      RJ},
    /* NEED3  */ {RJ,       S_NEED2,  S_NEED2,  S_NEED2,  RJ, RJ,      RJ,   RJ,      RJ,   RJ,   RJ,      RJ},
    /* F4     */ {RJ,       S_NEED2,  RJ,       RJ,       RJ, RJ,      RJ,   RJ,      RJ,   RJ,   RJ,      RJ},
};
#undef RJ

static uint64_t utf8_rows[256];

static void
utf8_build_rows(void)
{
    int byte, state;

    for (byte = 0; byte < 256; byte++) {
        uint64_t row = 0;
        for (state = 0; state < N_STATES; state++) {
            unsigned int next = utf8_next[state][utf8_class[byte]];
            row |= SHIFT_STATE(next) << SHIFT_STATE(state);
        }
        utf8_rows[byte] = row;
    }
}

/* Length of a prefix of p[0 .. n) known to be ASCII (may stop short). */
static inline size_t
ascii_prefix(const unsigned char *p, size_t n)
{
    const uint64_t high = UINT64_C(0x8080808080808080);
    uint64_t w0;
    size_t i = 0;

#if TETHER_HAVE_SSE2
    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(p + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(p + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(p + i + 48));
        if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b),
                                           _mm_or_si128(c, d)))) {
            break;
        }
    }
    for (; i + 16 <= n; i += 16) {
        if (_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(p + i)))) {
            break;
        }
    }
#elif TETHER_HAVE_NEON
    for (; i + 64 <= n; i += 64) {
        uint8x16_t a = vld1q_u8(p + i);
        uint8x16_t b = vld1q_u8(p + i + 16);
        uint8x16_t c = vld1q_u8(p + i + 32);
        uint8x16_t d = vld1q_u8(p + i + 48);
        if (vmaxvq_u8(vorrq_u8(vorrq_u8(a, b), vorrq_u8(c, d))) & 0x80) {
            break;
        }
    }
    for (; i + 16 <= n; i += 16) {
        if (vmaxvq_u8(vld1q_u8(p + i)) & 0x80) {
            break;
        }
    }
#else
    for (; i + 32 <= n; i += 32) {
        uint64_t w1, w2, w3;
        memcpy(&w0, p + i, 8);
        memcpy(&w1, p + i + 8, 8);
        memcpy(&w2, p + i + 16, 8);
        memcpy(&w3, p + i + 24, 8);
        if ((w0 | w1 | w2 | w3) & high) {
            break;
        }
    }
#endif
    for (; i + 8 <= n; i += 8) {
        memcpy(&w0, p + i, 8);
        if (w0 & high) {
            break;
        }
    }
    return i;
}

/*
 * Run the shift DFA from state `q` (Q_ACCEPT, Q_REJECT or another shift
 * amount) over p[0 .. n) and return the final state, reduced to 0..63.
 */
static uint64_t
utf8_run(uint64_t q, const unsigned char *p, size_t n)
{
    size_t i = 0, end;

    while (i < n) {
        if (q == Q_ACCEPT) {
            i += ascii_prefix(p + i, n - i);
            if (i == n) {
                break;
            }
        }
        /* Step byte by byte through a short block, then look for ASCII
           again: text with a few non-ASCII characters stays on the fast
           path, text with many does not pay for a failed probe per byte. */
        end = n - i > 32 ? i + 32 : n;
        for (; i < end; i++) {
            q = utf8_rows[p[i]] >> (q & 63);
        }
        q &= 63;
        if (q == Q_REJECT) {
            break;
        }
    }
    return q;
}

static uint64_t
utf8_run_maybe_nogil(uint64_t q, const unsigned char *p, Py_ssize_t n)
{
    if (n >= TETHER_NOGIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        q = utf8_run(q, p, (size_t)n);
        Py_END_ALLOW_THREADS
    }
    else {
        q = utf8_run(q, p, (size_t)n);
    }
    return q;
}

PyDoc_STRVAR(utf8_valid_doc,
"utf8_valid(data)\n"
"--\n"
"\n"
"Return True if the bytes-like ``data`` is valid UTF-8.\n"
"\n"
"Strict: overlong forms, surrogates (U+D800..U+DFFF) and code points above\n"
"U+10FFFF are invalid, exactly as ``bytes.decode('utf-8')`` decides.");

static PyObject *
utf8_valid(PyObject *Py_UNUSED(module), PyObject *const *args,
           Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data"};
    PyObject *argv[1];
    uint64_t q;
    ByteSource src;

    if (kwnames == NULL && nargs == 1) {
        argv[0] = args[0];
    }
    else if (collect_args("utf8_valid", args, nargs, kwnames, names, 1, 1,
                          argv) < 0) {
        return NULL;
    }
    if (PyBytes_CheckExact(argv[0])) {
        q = utf8_run_maybe_nogil(
            Q_ACCEPT, (const unsigned char *)PyBytes_AS_STRING(argv[0]),
            PyBytes_GET_SIZE(argv[0]));
    }
    else {
        if (source_open(&src, argv[0]) < 0) {
            return NULL;
        }
        q = utf8_run_maybe_nogil(Q_ACCEPT, src.buf, src.len);
        source_close(&src);
    }
    return PyBool_FromLong(q == Q_ACCEPT);
}


/* ------------------------------------------------------------------------ */
/* Utf8Validator                                                            */
/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    uint64_t state;  /* a shift-DFA state: Q_ACCEPT, Q_REJECT, ... */
} Utf8ValidatorObject;

static PyObject *
validator_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Utf8ValidatorObject *self;

    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Utf8Validator() takes no arguments");
        return NULL;
    }
    self = (Utf8ValidatorObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->state = Q_ACCEPT;
    }
    return (PyObject *)self;
}

PyDoc_STRVAR(validator_feed_doc,
"feed($self, /, data, final=False)\n"
"--\n"
"\n"
"Validate the next chunk of a UTF-8 stream.\n"
"\n"
"Return False as soon as the bytes fed so far cannot be the beginning of\n"
"valid UTF-8, and from then on until reset().  A character split across\n"
"chunks is fine, except at ``final=True``, where the stream must end on a\n"
"character boundary.  After a successful final chunk the validator is\n"
"ready for a new stream.");

static PyObject *
validator_feed(Utf8ValidatorObject *self, PyObject *const *args,
               Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "final"};
    PyObject *argv[2];
    uint64_t state;
    int final = 0;
    ByteSource src;

    if (kwnames == NULL && nargs == 1) {
        argv[0] = args[0];
        argv[1] = NULL;
    }
    else if (collect_args("feed", args, nargs, kwnames, names, 2, 1,
                          argv) < 0) {
        return NULL;
    }
    if (argv[1] != NULL) {
        final = PyObject_IsTrue(argv[1]);
        if (final < 0) {
            return NULL;
        }
    }
    if (self->state == Q_REJECT) {
        Py_RETURN_FALSE;
    }
    if (PyBytes_CheckExact(argv[0])) {
        state = utf8_run_maybe_nogil(
            self->state, (const unsigned char *)PyBytes_AS_STRING(argv[0]),
            PyBytes_GET_SIZE(argv[0]));
    }
    else {
        if (source_open(&src, argv[0]) < 0) {
            return NULL;
        }
        state = utf8_run_maybe_nogil(self->state, src.buf, src.len);
        source_close(&src);
    }
    if (final && state != Q_ACCEPT) {
        state = Q_REJECT;
    }
    self->state = state;
    return PyBool_FromLong(state != Q_REJECT);
}

PyDoc_STRVAR(validator_reset_doc,
"reset($self, /)\n"
"--\n"
"\n"
"Forget everything fed so far and start a new stream.");

static PyObject *
validator_reset(Utf8ValidatorObject *self, PyObject *Py_UNUSED(ignored))
{
    self->state = Q_ACCEPT;
    Py_RETURN_NONE;
}

static PyMethodDef validator_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))validator_feed,
     METH_FASTCALL | METH_KEYWORDS, validator_feed_doc},
    {"reset", (PyCFunction)(void (*)(void))validator_reset, METH_NOARGS,
     validator_reset_doc},
    {NULL, NULL, 0, NULL}
};

PyDoc_STRVAR(validator_doc,
"Utf8Validator()\n"
"--\n"
"\n"
"Incremental strict UTF-8 validator that fails fast; see feed().");

static PyTypeObject Utf8ValidatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tether._speedups.Utf8Validator",
    .tp_basicsize = sizeof(Utf8ValidatorObject),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = validator_doc,
    .tp_methods = validator_methods,
    .tp_new = validator_new,
};


/* ------------------------------------------------------------------------ */
/* parse_simple_frames                                                      */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(parse_simple_frames_doc,
"parse_simple_frames(buf, pos, expect_mask, limit, events)\n"
"--\n"
"\n"
"Turn the run of whole, simple frames at ``buf[pos:]`` into messages.\n"
"\n"
"A simple frame is an unfragmented TEXT or BINARY frame (first byte 0x81\n"
"or 0x82: FIN set, no RSV bit), masked exactly when ``expect_mask`` says,\n"
"with a length of at most ``limit``.  Each one is unmasked and appended to\n"
"the list ``events`` as bytes (binary) or str (text, strict UTF-8).  Stops\n"
"at the first frame that is incomplete or not simple, or whose text is not\n"
"valid UTF-8, leaving it for the caller's full parser; returns the new\n"
"position.  The pure-Python twin is the fast path in\n"
"tether.protocol.connection.Connection._parse.");

static PyObject *
parse_simple_frames(PyObject *Py_UNUSED(module), PyObject *const *args,
                    Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, limit;
    int expect_mask;
    PyObject *events;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_simple_frames() takes exactly 5 arguments");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    expect_mask = PyObject_IsTrue(args[2]);
    if (expect_mask < 0) {
        return NULL;
    }
    limit = PyLong_AsSsize_t(args[3]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    events = args[4];
    if (!PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "events must be a list");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    if (pos < 0 || pos > n) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        return NULL;
    }
    const int mask_bit = expect_mask ? 0x80 : 0;

    while (n - pos >= 2) {
        unsigned char b0 = p[pos], b1 = p[pos + 1];
        if ((b0 != 0x81 && b0 != 0x82) || (b1 & 0x80) != mask_bit) {
            break;
        }
        uint64_t length = b1 & 0x7F;
        Py_ssize_t head = 2;
        if (length == 126) {
            if (n - pos < 4) {
                break;
            }
            length = ((uint64_t)p[pos + 2] << 8) | p[pos + 3];
            head = 4;
        }
        else if (length == 127) {
            if (n - pos < 10) {
                break;
            }
            length = 0;
            for (int i = 0; i < 8; i++) {
                length = (length << 8) | p[pos + 2 + i];
            }
            head = 10;
        }
        if (length > (uint64_t)limit) {
            break;  /* the full parser reports the limit (1009) or 2^63 (1002) */
        }
        if (mask_bit) {
            head += 4;
        }
        if (n - pos < head || (uint64_t)(n - pos - head) < length) {
            break;  /* incomplete */
        }
        const unsigned char *payload = p + pos + head;
        Py_ssize_t len = (Py_ssize_t)length;
        PyObject *message;
        if (mask_bit) {
            unsigned char key[4];
            memcpy(key, payload - 4, 4);
            PyObject *raw = PyBytes_FromStringAndSize(NULL, len);
            if (raw == NULL) {
                PyBuffer_Release(&view);
                return NULL;
            }
            mask_bytes_maybe_nogil((unsigned char *)PyBytes_AS_STRING(raw),
                                   payload, len, key);
            if (b0 == 0x81) {
                message = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), len,
                                               "strict");
                Py_DECREF(raw);
            }
            else {
                message = raw;
            }
        }
        else if (b0 == 0x81) {
            message = PyUnicode_DecodeUTF8((const char *)payload, len,
                                           "strict");
        }
        else {
            message = PyBytes_FromStringAndSize((const char *)payload, len);
        }
        if (message == NULL) {
            if (b0 == 0x81 && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                break;  /* the full parser fails the connection with 1007 */
            }
            PyBuffer_Release(&view);
            return NULL;
        }
        int rc = PyList_Append(events, message);
        Py_DECREF(message);
        if (rc < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        pos += head + len;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(pos);
}


/* ------------------------------------------------------------------------ */
/* Receiver                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * The read side of an open connection's fast path, for an asyncio
 * BufferedProtocol: get_buffer() hands out memory for the transport to read
 * into, feed() turns the whole simple frames that arrived into messages and
 * passes each to a callback at once.  Anything else (control frames,
 * fragments, RSV bits, limits, bad UTF-8, a text frame still arriving, whose
 * UTF-8 must be checked as it comes) stops feed() with RX_SLOW and is handed,
 * byte for byte as it was on the wire, to the full parser with take().
 *
 * Memory: an idle connection holds nothing but the bytes it was sent.
 * Reads land in a buffer shared by all connections of the thread; only the
 * bytes of a frame cut by the end of a read are kept by the connection, in
 * a buffer of their size (up to RX_SMALL of them are copied back to the
 * front of the shared buffer for the next read).  A large binary frame is
 * read straight into the bytes object that becomes the message (no copy
 * after the kernel's).  That object grows as the frame arrives, to at most
 * RX_DIRECT_RATIO times what the peer really sent plus RX_DIRECT_SLACK: an
 * announced length alone never makes us allocate.
 */

#define RX_SHARED_SIZE (256 * 1024)
#define RX_MIN_READ (64 * 1024)
#define RX_SMALL 4096
#define RX_DIRECT_MIN (64 * 1024)
#define RX_DIRECT_RATIO 4
#define RX_DIRECT_SLACK (64 * 1024)

enum { RX_OK = 0, RX_SLOW = 1 };

#if defined(_MSC_VER)
#define RX_THREAD_LOCAL __declspec(thread)
#else
#define RX_THREAD_LOCAL _Thread_local
#endif

/* The thread's shared read buffer; freed with the thread's state (see
 * rx_shared_get). */
static RX_THREAD_LOCAL unsigned char *rx_shared = NULL;
static RX_THREAD_LOCAL int rx_shared_busy = 0;
static PyObject *rx_discard_name = NULL;  /* "_discard_input" */
static PyObject *rx_receive_name = NULL;  /* "_receive" */
static PyObject *rx_failed_name = NULL;   /* "_fast_receive_failed" */
static PyObject *rx_cork_name = NULL;     /* "_cork" */
static PyObject *rx_uncork_name = NULL;   /* "_uncork" */

typedef struct {
    PyObject_HEAD
    unsigned char *buf;        /* own buffer: bytes pending in [start, end) */
    Py_ssize_t cap, start, end;
    Py_ssize_t limit;          /* largest payload a simple frame may have */
    int mask_bit;              /* 0x80 when frames must be masked (server) */
    int reading_shared;        /* the last get_buffer() handed out the shared buffer */
    Py_ssize_t shared_prefix;  /* ... after copying this many held bytes to its front */
    int handed_out;            /* a buffer was handed out and not accounted for yet */
    int busy;                  /* inside feed(): no re-entry */
    PyObject *direct;          /* payload (bytes) of a large binary frame being read;
                                  grows up to direct_len */
    Py_ssize_t direct_fill;
    Py_ssize_t direct_len;
    unsigned char direct_head[14];
    Py_ssize_t direct_head_len;
    Py_ssize_t delivered;      /* messages passed on by the last feed() */
    /* For buffer_updated(), set by bind() and enable(): */
    char fast;                 /* feed() may run: the connection is open, the core idle */
    PyObject *conn;            /* deliver's first argument; has _receive and
                                  _fast_receive_failed (see buffer_updated) */
    PyObject *core;            /* the sans-I/O connection; its _discard_input is checked */
    PyObject *deliver;         /* deliver(conn, message) */
} ReceiverObject;

/* Header of a simple frame at p[0:n]: its length, 0 when incomplete, -1 when
 * the frame is not simple (the full parser decides what it is). */
static Py_ssize_t
rx_simple_header(const unsigned char *p, Py_ssize_t n, int mask_bit,
                 Py_ssize_t limit, Py_ssize_t *length)
{
    uint64_t len;
    Py_ssize_t head = 2;

    if (n < 1) {
        return 0;
    }
    if (p[0] != 0x81 && p[0] != 0x82) {
        return -1;
    }
    if (n < 2) {
        return 0;
    }
    if ((p[1] & 0x80) != mask_bit) {
        return -1;
    }
    len = p[1] & 0x7F;
    if (len == 126) {
        if (n < 4) {
            return 0;
        }
        len = ((uint64_t)p[2] << 8) | p[3];
        head = 4;
    }
    else if (len == 127) {
        if (n < 10) {
            return 0;
        }
        len = 0;
        for (int i = 0; i < 8; i++) {
            len = (len << 8) | p[2 + i];
        }
        head = 10;
    }
    if (len > (uint64_t)limit) {
        return -1;  /* the full parser reports the limit (1009) or 2^63 (1002) */
    }
    if (mask_bit) {
        head += 4;
        if (n < head) {
            return 0;
        }
    }
    *length = (Py_ssize_t)len;
    return head;
}

static int
rx_reserve(ReceiverObject *self, Py_ssize_t need_free)
{
    Py_ssize_t pending = self->end - self->start;

    if (self->cap - self->end >= need_free) {
        return 0;
    }
    if (self->start > 0) {
        memmove(self->buf, self->buf + self->start, (size_t)pending);
        self->start = 0;
        self->end = pending;
        if (self->cap - self->end >= need_free) {
            return 0;
        }
    }
    Py_ssize_t cap = pending + need_free;
    unsigned char *buf = PyMem_Realloc(self->buf, (size_t)cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->buf = buf;
    self->cap = cap;
    return 0;
}

static void
rx_release_own(ReceiverObject *self)
{
    PyMem_Free(self->buf);
    self->buf = NULL;
    self->cap = self->start = self->end = 0;
}

/* Room for a direct frame that has ``fill`` payload bytes so far. */
static Py_ssize_t
rx_direct_cap(Py_ssize_t length, Py_ssize_t fill)
{
    if (fill > (PY_SSIZE_T_MAX - RX_DIRECT_SLACK) / RX_DIRECT_RATIO) {
        return length;
    }
    Py_ssize_t cap = RX_DIRECT_RATIO * fill + RX_DIRECT_SLACK;
    return cap < length ? cap : length;
}

/* Start reading the incomplete frame at p[0:n] straight into its message
 * when it is a large binary frame.  1 if so. */
static int
rx_maybe_direct(ReceiverObject *self, const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t length = 0, head;

    if (n < 2 || p[0] != 0x82) {
        return 0;
    }
    head = rx_simple_header(p, n, self->mask_bit, self->limit, &length);
    if (head <= 0 || length < RX_DIRECT_MIN || n - head >= length) {
        return 0;
    }
    PyObject *direct = PyBytes_FromStringAndSize(NULL, rx_direct_cap(length, n - head));
    if (direct == NULL) {
        PyErr_Clear();  /* keep buffering; the full parser copes or fails */
        return 0;
    }
    memcpy(PyBytes_AS_STRING(direct), p + head, (size_t)(n - head));
    memcpy(self->direct_head, p, (size_t)head);
    self->direct_head_len = head;
    self->direct = direct;
    self->direct_fill = n - head;
    self->direct_len = length;
    return 1;
}

/* After parsing the own buffer: keep a small remainder in a buffer of its
 * size, not in one sized for reading. */
static void
rx_shrink(ReceiverObject *self)
{
    Py_ssize_t pending = self->end - self->start;

    if (pending == 0) {
        rx_release_own(self);
        return;
    }
    if (pending > RX_SMALL || self->cap <= RX_SMALL) {
        return;
    }
    memmove(self->buf, self->buf + self->start, (size_t)pending);
    unsigned char *buf = PyMem_Realloc(self->buf, (size_t)pending);
    if (buf != NULL) {  /* else keep the larger one */
        self->buf = buf;
        self->cap = pending;
    }
    self->start = 0;
    self->end = pending;
}

/* Keep p[0:n], the unparsed end of a read of the shared buffer. */
static int
rx_keep(ReceiverObject *self, const unsigned char *p, Py_ssize_t n, int status)
{
    if (n == 0) {
        return 0;
    }
    if (status == RX_OK && rx_maybe_direct(self, p, n)) {
        return 0;
    }
    if (rx_reserve(self, n) < 0) {
        return -1;
    }
    memcpy(self->buf + self->end, p, (size_t)n);
    self->end += n;
    return 0;
}

static PyObject *
rx_message(unsigned char b0, const unsigned char *payload, Py_ssize_t len,
           int mask_bit)
{
    PyObject *raw, *text;

    if (!mask_bit) {
        if (b0 == 0x81) {
            return PyUnicode_DecodeUTF8((const char *)payload, len, "strict");
        }
        return PyBytes_FromStringAndSize((const char *)payload, len);
    }
    raw = PyBytes_FromStringAndSize(NULL, len);
    if (raw == NULL) {
        return NULL;
    }
    mask_bytes_maybe_nogil((unsigned char *)PyBytes_AS_STRING(raw), payload,
                           len, payload - 4);
    if (b0 == 0x82) {
        return raw;
    }
    text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), len, "strict");
    Py_DECREF(raw);
    return text;
}

static int
rx_deliver(ReceiverObject *self, PyObject *deliver, PyObject *conn,
           PyObject *message)
{
    PyObject *args[2] = {conn, message};
    PyObject *result;

    self->delivered++;
    result = PyObject_Vectorcall(deliver, args, 2, NULL);
    Py_DECREF(message);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* Deliver the whole simple frames at p[*pos:n]; *pos moves past each one
 * before its callback runs.  RX_OK, RX_SLOW or -1 (exception set). */
static int
rx_parse(ReceiverObject *self, const unsigned char *p, Py_ssize_t n,
         Py_ssize_t *pos, PyObject *deliver, PyObject *conn, PyObject *core,
         int *corked)
{
    while (*pos < n) {
        Py_ssize_t at = *pos, length = 0;
        Py_ssize_t head = rx_simple_header(p + at, n - at, self->mask_bit,
                                           self->limit, &length);
        if (head < 0) {
            return RX_SLOW;
        }
        if (head == 0 || n - at - head < length) {
            /* Incomplete.  The full parser checks a text frame's UTF-8 as it
             * arrives, failing fast (Autobahn 6.4.*). */
            return head > 0 && p[at] == 0x81 ? RX_SLOW : RX_OK;
        }
        PyObject *message = rx_message(p[at], p + at + head, length,
                                       self->mask_bit);
        if (message == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                return RX_SLOW;  /* the full parser fails with 1007 */
            }
            return -1;
        }
        *pos = at + head + length;
        if (self->delivered == 1 && *corked == 0) {
            /* A second message from the same read: let the connection hold
             * back what the callbacks write until the read is done, so
             * several answers to a socket leave in one system call.  A
             * single message (a round trip) goes out at once. */
            PyObject *r = PyObject_CallMethodNoArgs(conn, rx_cork_name);
            if (r == NULL) {
                Py_DECREF(message);
                return -1;
            }
            Py_DECREF(r);
            *corked = 1;
        }
        if (rx_deliver(self, deliver, conn, message) < 0) {
            return -1;
        }
        if (*pos < n) {
            /* The callback may have failed or closed the connection. */
            PyObject *flag = PyObject_GetAttr(core, rx_discard_name);
            if (flag == NULL) {
                return -1;
            }
            int discard = PyObject_IsTrue(flag);
            Py_DECREF(flag);
            if (discard != 0) {
                return discard < 0 ? -1 : RX_SLOW;
            }
        }
    }
    return RX_OK;
}

static PyObject *
receiver_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"expect_mask", "limit", NULL};
    int expect_mask = 1;
    Py_ssize_t limit = 0;
    ReceiverObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|pn:Receiver", names,
                                     &expect_mask, &limit)) {
        return NULL;
    }
    if (limit < 0) {
        PyErr_SetString(PyExc_ValueError, "limit must be >= 0");
        return NULL;
    }
    self = (ReceiverObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->mask_bit = expect_mask ? 0x80 : 0;
        self->limit = limit;
    }
    return (PyObject *)self;
}

static int receiver_clear(ReceiverObject *self);

static void
receiver_dealloc(ReceiverObject *self)
{
    PyObject_GC_UnTrack(self);
    receiver_clear(self);
    PyMem_Free(self->buf);
    Py_CLEAR(self->direct);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
rx_check_idle(ReceiverObject *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Receiver used from inside its own feed() callback");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(receiver_get_buffer_doc,
"get_buffer($self, sizehint=-1, /)\n"
"--\n"
"\n"
"Return a writable memoryview for the transport to read into; valid until\n"
"the next feed() or take().");

static void
rx_shared_free(PyObject *capsule)
{
    unsigned char *buf = PyCapsule_GetPointer(capsule, "tether.rx_shared");
    if (rx_shared == buf) {
        /* Cleared from its own thread (which may get a new thread state
         * later, e.g. through PyGILState_Ensure): allocate afresh then. */
        rx_shared = NULL;
    }
    PyMem_RawFree(buf);
}

/* The thread's shared read buffer, allocated on first use.  A capsule in
 * the thread state's dict frees it when the thread's state is cleared. */
static unsigned char *
rx_shared_get(void)
{
    if (rx_shared != NULL) {
        return rx_shared;
    }
    PyObject *dict = PyThreadState_GetDict();
    if (dict == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no thread state dict");
        return NULL;
    }
    unsigned char *buf = PyMem_RawMalloc(RX_SHARED_SIZE);
    if (buf == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(buf, "tether.rx_shared", rx_shared_free);
    if (capsule == NULL) {
        PyMem_RawFree(buf);
        return NULL;
    }
    int rc = PyDict_SetItemString(dict, "tether.rx_shared", capsule);
    Py_DECREF(capsule);
    if (rc < 0) {
        return NULL;  /* the capsule freed the buffer */
    }
    rx_shared = buf;
    return buf;
}

static PyObject *
receiver_get_buffer(ReceiverObject *self, PyObject *const *args,
                    Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "get_buffer() takes at most 1 argument");
        return NULL;
    }
    if (rx_check_idle(self) < 0) {
        return NULL;
    }
    self->reading_shared = 0;
    self->shared_prefix = 0;
    self->handed_out = 1;
    if (self->direct != NULL) {
        Py_ssize_t size = PyBytes_GET_SIZE(self->direct);
        if (self->direct_fill == size && size < self->direct_len) {
            /* Grow with what arrived (see rx_direct_cap); a private bytes
             * object may be resized. */
            Py_ssize_t cap = rx_direct_cap(self->direct_len, self->direct_fill);
            if (_PyBytes_Resize(&self->direct, cap) < 0) {
                self->direct = NULL;  /* freed by _PyBytes_Resize */
                self->handed_out = 0;
                return NULL;
            }
            size = cap;
        }
        return PyMemoryView_FromMemory(
            PyBytes_AS_STRING(self->direct) + self->direct_fill,
            size - self->direct_fill, PyBUF_WRITE);
    }
    Py_ssize_t pending = self->end - self->start;
    if (pending <= RX_SMALL && !rx_shared_busy) {
        unsigned char *shared = rx_shared_get();
        if (shared == NULL) {
            self->handed_out = 0;
            return NULL;
        }
        /* A few held bytes (a cut header, a small frame's start) go to the
         * front of the shared buffer; they stay held too until the read. */
        memcpy(shared, self->buf + self->start, (size_t)pending);
        self->reading_shared = 1;
        self->shared_prefix = pending;
        return PyMemoryView_FromMemory((char *)shared + pending,
                                       RX_SHARED_SIZE - pending, PyBUF_WRITE);
    }
    /* Grow geometrically with what arrived: a large frame still costs only
     * about one copy, and memory follows bytes that really came. */
    if (rx_reserve(self, pending > RX_MIN_READ ? pending : RX_MIN_READ) < 0) {
        self->handed_out = 0;
        return NULL;
    }
    return PyMemoryView_FromMemory((char *)self->buf + self->end,
                                   self->cap - self->end, PyBUF_WRITE);
}

/* Account for nbytes read into the memory the last get_buffer() returned. */
static int
rx_commit(ReceiverObject *self, Py_ssize_t nbytes, int *from_shared)
{
    *from_shared = 0;
    if (nbytes < 0) {
        PyErr_SetString(PyExc_ValueError, "nbytes must be >= 0");
        return -1;
    }
    if (!self->handed_out) {
        if (nbytes > 0) {
            goto too_many;
        }
        return 0;
    }
    self->handed_out = 0;
    if (self->direct != NULL) {
        if (nbytes > PyBytes_GET_SIZE(self->direct) - self->direct_fill) {
            goto too_many;
        }
        self->direct_fill += nbytes;
    }
    else if (self->reading_shared) {
        if (nbytes > RX_SHARED_SIZE - self->shared_prefix) {
            goto too_many;
        }
        self->reading_shared = 0;
        *from_shared = 1;
        /* The held bytes are the shared buffer's first shared_prefix now. */
        rx_release_own(self);
    }
    else {
        if (nbytes > self->cap - self->end) {
            goto too_many;
        }
        self->end += nbytes;
    }
    return 0;
too_many:
    PyErr_SetString(PyExc_ValueError, "nbytes is larger than the buffer handed out");
    return -1;
}

PyDoc_STRVAR(receiver_feed_doc,
"feed($self, nbytes, deliver, conn, core, /)\n"
"--\n"
"\n"
"Account for ``nbytes`` read into the last buffer, then call\n"
"``deliver(conn, message)`` for each whole simple frame, in order, while\n"
"``core._discard_input`` stays false.  Return 0 when only an incomplete\n"
"simple frame (or nothing) is left, 1 when the rest needs the full parser\n"
"(see take()).  ``delivered`` counts the messages passed on.  An exception\n"
"from ``deliver`` propagates; the bytes after that message stay pending.");

/* Account for nbytes read, then deliver; RX_OK, RX_SLOW or -1.  With
 * ``cork``, conn._cork() is called before a read's second message and
 * conn._uncork() at the end. */
static int
rx_feed(ReceiverObject *self, Py_ssize_t nbytes, PyObject *deliver,
        PyObject *conn, PyObject *core, int cork)
{
    Py_ssize_t pos = 0;
    int from_shared, status = RX_OK;
    /* -1: never cork; 0: not corked yet; 1: corked */
    int corked = cork ? 0 : -1;

    if (rx_check_idle(self) < 0 || rx_commit(self, nbytes, &from_shared) < 0) {
        return -1;
    }
    self->delivered = 0;
    self->busy = 1;
    if (self->direct != NULL) {
        PyObject *message = self->direct;
        if (self->direct_fill < self->direct_len) {
            self->busy = 0;
            return RX_OK;
        }
        self->direct = NULL;
        if (self->mask_bit) {
            /* The masking key is the header's last 4 bytes. */
            mask_bytes_maybe_nogil(
                (unsigned char *)PyBytes_AS_STRING(message),
                (const unsigned char *)PyBytes_AS_STRING(message),
                PyBytes_GET_SIZE(message),
                self->direct_head + self->direct_head_len - 4);
        }
        status = rx_deliver(self, deliver, conn, message);
    }
    else if (from_shared) {
        /* No other connection may read into the shared buffer while its
         * bytes are being parsed (a callback could, in theory, cause one). */
        Py_ssize_t n = self->shared_prefix + nbytes;
        rx_shared_busy = 1;
        status = rx_parse(self, rx_shared, n, &pos, deliver, conn, core, &corked);
        if (rx_keep(self, rx_shared + pos, n - pos, status) < 0) {
            status = -1;
        }
        rx_shared_busy = 0;
    }
    else {
        status = rx_parse(self, self->buf + self->start,
                          self->end - self->start, &pos, deliver, conn, core,
                          &corked);
        self->start += pos;
        if (status == RX_OK && self->start < self->end
            && rx_maybe_direct(self, self->buf + self->start,
                               self->end - self->start)) {
            rx_release_own(self);
        }
        rx_shrink(self);
    }
    self->busy = 0;
    if (corked == 1) {
        /* Flush what was held back, keeping any exception raised above. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *r = PyObject_CallMethodNoArgs(conn, rx_uncork_name);
        if (r == NULL) {
            if (type != NULL) {
                PyErr_WriteUnraisable(conn);  /* the first error wins */
                PyErr_Restore(type, value, tb);
            }
            return -1;
        }
        Py_DECREF(r);
        PyErr_Restore(type, value, tb);
    }
    return status;
}

static PyObject *
receiver_feed(ReceiverObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t nbytes;
    int status;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "feed() takes exactly 4 arguments");
        return NULL;
    }
    nbytes = PyLong_AsSsize_t(args[0]);
    if (nbytes == -1 && PyErr_Occurred()) {
        return NULL;
    }
    status = rx_feed(self, nbytes, args[1], args[2], args[3], 0);
    if (status < 0) {
        return NULL;
    }
    return PyLong_FromLong(status);
}

static PyObject *rx_take(ReceiverObject *self, Py_ssize_t nbytes);

/* The raised exception, as an object with its traceback (3.11 has no
 * PyErr_GetRaisedException). */
static PyObject *
rx_fetch_exception(void)
{
    PyObject *type, *value, *tb;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

PyDoc_STRVAR(receiver_buffer_updated_doc,
"buffer_updated($self, nbytes, /)\n"
"--\n"
"\n"
"The BufferedProtocol callback, once bound to a connection: feed() while\n"
"``fast`` holds and the core is not discarding input, then hand what is\n"
"left to ``conn._receive(data, after_messages)``; an Exception from\n"
"``deliver`` goes to ``conn._fast_receive_failed(exc)``.  See bind().");

static PyObject *
receiver_buffer_updated(ReceiverObject *self, PyObject *arg)
{
    Py_ssize_t nbytes = PyLong_AsSsize_t(arg);
    PyObject *conn, *data = NULL, *result = NULL;
    int fast, after_messages = 0;

    if (nbytes == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (self->conn == NULL || self->core == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Receiver.bind() was not called");
        return NULL;
    }
    /* The callbacks may drop the last references to us and to the
     * connection (and bind() may replace them): hold our own. */
    Py_INCREF(self);
    conn = self->conn;
    Py_INCREF(conn);
    fast = self->fast && self->deliver != NULL;
    if (fast) {
        PyObject *flag = PyObject_GetAttr(self->core, rx_discard_name);
        if (flag == NULL) {
            goto done;
        }
        fast = PyObject_Not(flag);
        Py_DECREF(flag);
        if (fast < 0) {
            goto done;
        }
    }
    if (fast) {
        PyObject *deliver = self->deliver, *core = self->core;
        Py_INCREF(deliver);
        Py_INCREF(core);
        int status = rx_feed(self, nbytes, deliver, conn, core, 1);
        Py_DECREF(deliver);
        Py_DECREF(core);
        if (status == RX_OK) {
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        if (status < 0) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                goto done;
            }
            PyObject *exc = rx_fetch_exception();
            result = PyObject_CallMethodOneArg(conn, rx_failed_name, exc);
            Py_DECREF(exc);
            if (result == NULL || (self->end == self->start && self->direct == NULL)) {
                goto done;
            }
            /* The rest of the read still counts (say a Close, while the
             * connection was closing anyway): the core takes it, or drops
             * it if the failure failed the connection. */
            Py_CLEAR(result);
        }
        after_messages = self->delivered > 0;
        data = rx_take(self, 0);
    }
    else {
        data = rx_take(self, nbytes);
    }
    if (data != NULL) {
        result = PyObject_CallMethodObjArgs(
            conn, rx_receive_name, data, after_messages ? Py_True : Py_False, NULL);
    }
done:
    Py_XDECREF(data);
    Py_DECREF(conn);
    Py_DECREF(self);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(receiver_bind_doc,
"bind($self, conn, core, expect_mask, limit, /)\n"
"--\n"
"\n"
"Attach to a connection for buffer_updated(): ``conn`` has the methods\n"
"``_receive(data, after_messages)``, ``_fast_receive_failed(exc)``,\n"
"``_cork()`` and ``_uncork()`` (around the messages of a read, from the\n"
"second on: what is written meanwhile may leave in one system call),\n"
"``core`` is its sans-I/O connection, ``expect_mask`` true on a server,\n"
"``limit`` the largest payload for the fast path.  Call enable() once the\n"
"connection is open.");

static PyObject *
receiver_bind(ReceiverObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "bind() takes exactly 4 arguments");
        return NULL;
    }
    int expect_mask = PyObject_IsTrue(args[2]);
    if (expect_mask < 0) {
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (limit < 0) {
        PyErr_SetString(PyExc_ValueError, "limit must be >= 0");
        return NULL;
    }
    self->mask_bit = expect_mask ? 0x80 : 0;
    self->limit = limit;
    Py_INCREF(args[0]);
    Py_XSETREF(self->conn, args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(self->core, args[1]);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(receiver_enable_doc,
"enable($self, deliver, /)\n"
"--\n"
"\n"
"Deliver whole simple frames with ``deliver(conn, message)`` from now on\n"
"(while ``fast`` holds).");

static PyObject *
receiver_enable(ReceiverObject *self, PyObject *deliver)
{
    Py_INCREF(deliver);
    Py_XSETREF(self->deliver, deliver);
    self->fast = 1;
    Py_RETURN_NONE;
}

static int
receiver_traverse(ReceiverObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->conn);
    Py_VISIT(self->core);
    Py_VISIT(self->deliver);
    return 0;
}

static int
receiver_clear(ReceiverObject *self)
{
    Py_CLEAR(self->conn);
    Py_CLEAR(self->core);
    Py_CLEAR(self->deliver);
    return 0;
}

PyDoc_STRVAR(receiver_take_doc,
"take($self, nbytes=0, /)\n"
"--\n"
"\n"
"Account for ``nbytes`` read into the last buffer, then return every byte\n"
"held, exactly as it arrived, and hold nothing.");

static PyObject *
rx_take(ReceiverObject *self, Py_ssize_t nbytes)
{
    int from_shared;
    PyObject *result;

    if (rx_check_idle(self) < 0 || rx_commit(self, nbytes, &from_shared) < 0) {
        return NULL;
    }
    if (from_shared) {
        return PyBytes_FromStringAndSize((const char *)rx_shared,
                                         self->shared_prefix + nbytes);
    }
    if (self->direct != NULL) {
        Py_ssize_t head = self->direct_head_len;
        result = PyBytes_FromStringAndSize(NULL, head + self->direct_fill);
        if (result == NULL) {
            return NULL;
        }
        memcpy(PyBytes_AS_STRING(result), self->direct_head, (size_t)head);
        memcpy(PyBytes_AS_STRING(result) + head,
               PyBytes_AS_STRING(self->direct), (size_t)self->direct_fill);
        Py_CLEAR(self->direct);
        self->direct_fill = 0;
        return result;
    }
    result = PyBytes_FromStringAndSize((const char *)self->buf + self->start,
                                       self->end - self->start);
    if (result != NULL) {
        rx_release_own(self);
    }
    return result;
}

static PyObject *
receiver_take(ReceiverObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t nbytes = 0;

    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "take() takes at most 1 argument");
        return NULL;
    }
    if (nargs == 1) {
        nbytes = PyLong_AsSsize_t(args[0]);
        if (nbytes == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    return rx_take(self, nbytes);
}

static PyObject *
receiver_get_pending(ReceiverObject *self, void *Py_UNUSED(closure))
{
    Py_ssize_t n = self->end - self->start;
    if (self->direct != NULL) {
        n += self->direct_head_len + self->direct_fill;
    }
    return PyLong_FromSsize_t(n);
}

static PyObject *
receiver_get_delivered(ReceiverObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->delivered);
}

static PyGetSetDef receiver_getset[] = {
    {"pending", (getter)receiver_get_pending, NULL,
     "Bytes held: an incomplete frame waiting for the rest.", NULL},
    {"delivered", (getter)receiver_get_delivered, NULL,
     "Messages the last feed() passed on.", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyMemberDef receiver_members[] = {
    {"fast", T_BOOL, offsetof(ReceiverObject, fast), 0,
     "Whether buffer_updated() may deliver whole simple frames itself."},
    {NULL, 0, 0, 0, NULL}
};

static PyMethodDef receiver_methods[] = {
    {"get_buffer", (PyCFunction)(void (*)(void))receiver_get_buffer,
     METH_FASTCALL, receiver_get_buffer_doc},
    {"feed", (PyCFunction)(void (*)(void))receiver_feed, METH_FASTCALL,
     receiver_feed_doc},
    {"take", (PyCFunction)(void (*)(void))receiver_take, METH_FASTCALL,
     receiver_take_doc},
    {"buffer_updated", (PyCFunction)receiver_buffer_updated, METH_O,
     receiver_buffer_updated_doc},
    {"bind", (PyCFunction)(void (*)(void))receiver_bind, METH_FASTCALL,
     receiver_bind_doc},
    {"enable", (PyCFunction)receiver_enable, METH_O, receiver_enable_doc},
    {NULL, NULL, 0, NULL}
};

PyDoc_STRVAR(receiver_doc,
"Receiver(expect_mask=True, limit=0)\n"
"--\n"
"\n"
"The read side of a connection's fast path: see get_buffer(), feed() and\n"
"take().  ``expect_mask`` is true on a server (clients mask their frames);\n"
"``limit`` is the largest payload a frame may have on the fast path.");

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tether._speedups.Receiver",
    .tp_basicsize = sizeof(ReceiverObject),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = receiver_doc,
    .tp_traverse = (traverseproc)receiver_traverse,
    .tp_clear = (inquiry)receiver_clear,
    .tp_members = receiver_members,
    .tp_methods = receiver_methods,
    .tp_getset = receiver_getset,
    .tp_new = receiver_new,
    .tp_dealloc = (destructor)receiver_dealloc,
};


/* ------------------------------------------------------------------------ */
/* frame_unmasked                                                           */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(frame_unmasked_doc,
"frame_unmasked(opcode, data)\n"
"--\n"
"\n"
"Return one whole unmasked frame (FIN set, no RSV bit), header and\n"
"payload in one bytes object: what a server sends.  ``data`` must be bytes.");

static PyObject *
frame_unmasked(PyObject *Py_UNUSED(module), PyObject *const *args,
               Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "frame_unmasked() takes exactly 2 arguments");
        return NULL;
    }
    long opcode = PyLong_AsLong(args[0]);
    if (opcode == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (opcode < 0 || opcode > 15) {
        PyErr_SetString(PyExc_ValueError, "opcode must be 0..15");
        return NULL;
    }
    if (!PyBytes_CheckExact(args[1])) {
        PyErr_Format(PyExc_TypeError, "data must be bytes, not %.200s",
                     Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(args[1]);
    /* RFC 6455 §5.2: 7-bit length, or 126 + 16 bits, or 127 + 64 bits. */
    Py_ssize_t head = n < 126 ? 2 : (n < 65536 ? 4 : 10);
    PyObject *result = PyBytes_FromStringAndSize(NULL, head + n);
    if (result == NULL) {
        return NULL;
    }
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(result);
    p[0] = (unsigned char)(0x80 | opcode);
    if (head == 2) {
        p[1] = (unsigned char)n;
    }
    else if (head == 4) {
        p[1] = 126;
        p[2] = (unsigned char)(n >> 8);
        p[3] = (unsigned char)n;
    }
    else {
        p[1] = 127;
        for (int i = 0; i < 8; i++) {
            p[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        }
    }
    memcpy(p + head, PyBytes_AS_STRING(args[1]), (size_t)n);
    return result;
}


/* ------------------------------------------------------------------------ */
/* Module                                                                   */
/* ------------------------------------------------------------------------ */

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask,
     METH_FASTCALL | METH_KEYWORDS, apply_mask_doc},
    {"apply_mask_inplace", (PyCFunction)(void (*)(void))apply_mask_inplace,
     METH_FASTCALL | METH_KEYWORDS, apply_mask_inplace_doc},
    {"utf8_valid", (PyCFunction)(void (*)(void))utf8_valid,
     METH_FASTCALL | METH_KEYWORDS, utf8_valid_doc},
    {"parse_simple_frames", (PyCFunction)(void (*)(void))parse_simple_frames,
     METH_FASTCALL, parse_simple_frames_doc},
    {"frame_unmasked", (PyCFunction)(void (*)(void))frame_unmasked,
     METH_FASTCALL, frame_unmasked_doc},
    {NULL, NULL, 0, NULL}
};

PyDoc_STRVAR(speedups_doc,
"Optional native hot path for tether: masking and UTF-8 validation.");

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tether._speedups",
    .m_doc = speedups_doc,
    .m_size = -1,
    .m_methods = speedups_methods,
};

static const char *
kernel_name(void)
{
#if TETHER_AVX2_STATIC
    return "avx2";
#elif TETHER_AVX2_DISPATCH
    return tether_cpu_has_avx2 ? "avx2" : "sse2";
#elif TETHER_HAVE_SSE2
    return "sse2";
#elif TETHER_HAVE_NEON
    return "neon";
#else
    return "portable";
#endif
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module;

#if TETHER_AVX2_DISPATCH
    __builtin_cpu_init();
    tether_cpu_has_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
#endif

    utf8_build_rows();
    if (PyType_Ready(&Utf8ValidatorType) < 0 || PyType_Ready(&ReceiverType) < 0) {
        return NULL;
    }
    rx_discard_name = PyUnicode_InternFromString("_discard_input");
    rx_receive_name = PyUnicode_InternFromString("_receive");
    rx_failed_name = PyUnicode_InternFromString("_fast_receive_failed");
    rx_cork_name = PyUnicode_InternFromString("_cork");
    rx_uncork_name = PyUnicode_InternFromString("_uncork");
    if (rx_discard_name == NULL || rx_receive_name == NULL || rx_failed_name == NULL
        || rx_cork_name == NULL || rx_uncork_name == NULL) {
        return NULL;
    }
    module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&Utf8ValidatorType);
    if (PyModule_AddObject(module, "Utf8Validator",
                           (PyObject *)&Utf8ValidatorType) < 0) {
        Py_DECREF(&Utf8ValidatorType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&ReceiverType);
    if (PyModule_AddObject(module, "Receiver", (PyObject *)&ReceiverType) < 0) {
        Py_DECREF(&ReceiverType);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddStringConstant(module, "KERNEL", kernel_name()) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
