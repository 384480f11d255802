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

#include "_mask_kernels.h"


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

tether_mask_init();
    utf8_build_rows();
    if (PyType_Ready(&Utf8ValidatorType) < 0) {
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
    if (PyModule_AddStringConstant(module, "KERNEL", kernel_name()) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
