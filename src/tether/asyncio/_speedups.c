/*
 * tether.asyncio._speedups -- the asyncio layer's native read path.
 *
 *   Receiver
 *       A connection's fast read path for an asyncio BufferedProtocol: hands
 *       out the memory the transport reads into, delivers each whole simple
 *       frame as a message at once, and gives everything else, byte for byte,
 *       to the sans-I/O core.  It calls the connection and the core only
 *       through the public names of the I/O contract (docs/protocol.md):
 *       ReceiverHost and ReceiverCore in tether.asyncio._receiver, which also
 *       holds its pure-Python twin; the test suite runs both.
 *
 * It lives with the asyncio layer because it serves that layer alone: the
 * sans-I/O core (tether.protocol, with tether._speedups) never loads it.
 */

#include "../_mask_kernels.h"

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
/* The names of tether.asyncio._receiver.ReceiverHost and ReceiverCore, the
 * public interface the Receiver calls (docs/protocol.md, "The I/O contract"). */
static PyObject *rx_discard_name = NULL;  /* core.discarding_input */
static PyObject *rx_receive_name = NULL;  /* conn.receive_read */
static PyObject *rx_failed_name = NULL;   /* conn.fast_receive_failed */
static PyObject *rx_cork_name = NULL;     /* conn.cork_writes */
static PyObject *rx_uncork_name = NULL;   /* conn.uncork_writes */

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
    PyObject *conn;            /* deliver's first argument; a ReceiverHost
                                  (see buffer_updated) */
    PyObject *core;            /* the sans-I/O connection; its discarding_input is checked */
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
"``core.discarding_input`` stays false.  Return 0 when only an incomplete\n"
"simple frame (or nothing) is left, 1 when the rest needs the full parser\n"
"(see take()).  ``delivered`` counts the messages passed on.  An exception\n"
"from ``deliver`` propagates; the bytes after that message stay pending.");

/* Account for nbytes read, then deliver; RX_OK, RX_SLOW or -1.  With
 * ``cork``, conn.cork_writes() is called before a read's second message and
 * conn.uncork_writes() at the end. */
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
"left to ``conn.receive_read(data, after_messages)``; an Exception from\n"
"``deliver`` goes to ``conn.fast_receive_failed(exc)``.  See bind().");

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
"``receive_read(data, after_messages)``, ``fast_receive_failed(exc)``,\n"
"``cork_writes()`` and ``uncork_writes()`` (around the messages of a read, from the\n"
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
    .tp_name = "tether.asyncio._speedups.Receiver",
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
/* Module                                                                   */
/* ------------------------------------------------------------------------ */

PyDoc_STRVAR(rx_module_doc,
"The asyncio layer's native read path (Receiver); see tether.asyncio._receiver.");

static struct PyModuleDef rx_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tether.asyncio._speedups",
    .m_doc = rx_module_doc,
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module;

    tether_mask_init();
    if (PyType_Ready(&ReceiverType) < 0) {
        return NULL;
    }
    rx_discard_name = PyUnicode_InternFromString("discarding_input");
    rx_receive_name = PyUnicode_InternFromString("receive_read");
    rx_failed_name = PyUnicode_InternFromString("fast_receive_failed");
    rx_cork_name = PyUnicode_InternFromString("cork_writes");
    rx_uncork_name = PyUnicode_InternFromString("uncork_writes");
    if (rx_discard_name == NULL || rx_receive_name == NULL || rx_failed_name == NULL
        || rx_cork_name == NULL || rx_uncork_name == NULL) {
        return NULL;
    }
    module = PyModule_Create(&rx_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&ReceiverType);
    if (PyModule_AddObject(module, "Receiver", (PyObject *)&ReceiverType) < 0) {
        Py_DECREF(&ReceiverType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
