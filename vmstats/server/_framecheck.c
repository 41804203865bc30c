/*
 * Signed one-record datagrams, read and their HMACs computed for a whole batch in one call.
 *
 * A one-record datagram under --auth-keys is a frame per record, so a frame's fixed
 * cost is the signed ingest's cost.  In Python the frames of a batch take one regex
 * pass (~0.75 us a datagram) and the HMACs ~0.75 us a frame more, almost all of it
 * OpenSSL 3 copying hash contexts through its provider layer and CPython making an
 * object per step.  Here a frame's header is read with a few byte scans and its
 * HMAC-SHA256 computed from each key's padded states with OpenSSL's SHA-256 (SHA-NI
 * where the CPU has it), the contexts copied as plain structs: ~0.13 and ~0.28 us.
 *
 * Both functions only ever answer for the usual case; whatever they do not take
 * (a datagram that is no whole frame, a NUL, a bad length) is signing.py's to read,
 * which names what is wrong.  signing.py is the reference: the tests hold both to
 * the same answers, and the server runs without this module if it was not built.
 */
#define PY_SSIZE_T_CLEAN
/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, whose
 * context copies are what this module exists to avoid; they remain in its API. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <string.h>
#include <openssl/sha.h>

/* What passes between this module and signing.py (its functions, their arguments, what they
 * answer), numbered: raised with every change to it, here and in signing.py's
 * FRAMECHECK_VERSION, so that a build of an older source is refused at import (native.py). */
#define MODULE_VERSION 1

#define SIG_PREFIX "#!sig1 "
#define SIG_PREFIX_LEN 7
#define HEX_MAC_LEN 64
#define BLOCK 64

/* The end of the run of bytes from p that are none of ' ', '\n', NUL (a header part). */
static const char *
part_end(const char *p, const char *end)
{
    while (p < end && *p != ' ' && *p != '\n' && *p != '\0')
        p++;
    return p;
}

static const char *
digits_end(const char *p, const char *end)
{
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p;
}

/* Clear a frame's parts from the columns on the way out of a failed read. */
static void
drop_columns(PyObject **columns)
{
    for (int c = 0; c < 5; c++)
        Py_XDECREF(columns[c]);
}

PyDoc_STRVAR(datagram_frames_doc,
"datagram_frames(batch, max_payload) -> (key_ids, tss, identities, macs, payloads) or None\n\n"
"Each datagram of the list one whole frame with the usual header\n"
"('#!sig1 <key_id> <ts> <nonce> <length> <64-char HMAC>\\n<payload>', no NUL, the\n"
"payload exactly <length> <= max_payload bytes): its parts as five lists of bytes,\n"
"the identity being '<key_id> <ts> <nonce>'.  None if any datagram is not.");

static PyObject *
datagram_frames(PyObject *self, PyObject *args)
{
    PyObject *batch;
    Py_ssize_t max_payload;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &batch, &max_payload))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(batch);
    PyObject *columns[5] = {NULL, NULL, NULL, NULL, NULL};
    for (int c = 0; c < 5; c++) {
        if ((columns[c] = PyList_New(n)) == NULL) {
            drop_columns(columns);
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(batch, i);
        if (!PyBytes_Check(item))
            goto not_usual;
        const char *start = PyBytes_AS_STRING(item);
        Py_ssize_t size = PyBytes_GET_SIZE(item);
        const char *end = start + size;
        if (size < SIG_PREFIX_LEN || memcmp(start, SIG_PREFIX, SIG_PREFIX_LEN) != 0
                || memchr(start, '\0', size) != NULL)
            goto not_usual;
        /* <key_id> <ts> <nonce> <length> <mac>\n, each part non-empty, ts and length digits */
        const char *key = start + SIG_PREFIX_LEN, *p = part_end(key, end);
        if (p == key || p == end || *p != ' ')
            goto not_usual;
        const char *key_end = p, *ts = p + 1;
        p = digits_end(ts, end);
        if (p == ts || p == end || *p != ' ')
            goto not_usual;
        const char *ts_end = p, *nonce = p + 1;
        p = part_end(nonce, end);
        if (p == nonce || p == end || *p != ' ')
            goto not_usual;
        const char *identity_end = p, *length = p + 1;
        p = digits_end(length, end);
        if (p == length || p == end || *p != ' ')
            goto not_usual;
        const char *length_end = p, *mac = p + 1;
        p = part_end(mac, end);
        if (p - mac != HEX_MAC_LEN || p == end || *p != '\n')
            goto not_usual;
        const char *payload = p + 1;
        Py_ssize_t payload_size = end - payload, declared = 0;
        for (const char *digit = length; digit < length_end; digit++) {
            /* Past PY_SSIZE_T_MAX it is past any max_payload: refused before it overflows. */
            if (declared > (PY_SSIZE_T_MAX - (*digit - '0')) / 10)
                goto not_usual;
            declared = declared * 10 + (*digit - '0');
            if (declared > max_payload)
                goto not_usual;
        }
        if (declared != payload_size)
            goto not_usual;
        PyObject *parts[5] = {
            PyBytes_FromStringAndSize(key, key_end - key),
            PyBytes_FromStringAndSize(ts, ts_end - ts),
            PyBytes_FromStringAndSize(key, identity_end - key),
            PyBytes_FromStringAndSize(mac, HEX_MAC_LEN),
            PyBytes_FromStringAndSize(payload, payload_size),
        };
        for (int c = 0; c < 5; c++) {
            if (parts[c] == NULL) {
                for (int k = 0; k < 5; k++)
                    Py_XDECREF(parts[k]);
                drop_columns(columns);
                return NULL;
            }
        }
        for (int c = 0; c < 5; c++)
            PyList_SET_ITEM(columns[c], i, parts[c]);
    }
    return Py_BuildValue("(NNNNN)", columns[0], columns[1], columns[2], columns[3], columns[4]);
not_usual:
    drop_columns(columns);
    Py_RETURN_NONE;
}

static const char HEX[] = "0123456789abcdef";

PyDoc_STRVAR(hex_macs_doc,
"hex_macs(pads, identities, payloads) -> bytes\n\n"
"The lowercase hex HMAC-SHA256 of 'sig1 <identity>\\n<payload>' for each frame, joined\n"
"(64 characters each).  pads[i] is the frame's key padded to SHA-256's block and\n"
"XORed with 0x36, then with 0x5c (128 bytes, signing.Key.pads); frames in a row with\n"
"the same pads object share its hashed states.");

static PyObject *
hex_macs(PyObject *self, PyObject *args)
{
    PyObject *pads, *identities, *payloads;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &pads, &PyList_Type, &identities,
                          &PyList_Type, &payloads))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(pads);
    if (PyList_GET_SIZE(identities) != n || PyList_GET_SIZE(payloads) != n) {
        PyErr_SetString(PyExc_ValueError, "hex_macs: columns of different lengths");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pad = PyList_GET_ITEM(pads, i);
        if (!PyBytes_Check(pad) || PyBytes_GET_SIZE(pad) != 2 * BLOCK
                || !PyBytes_Check(PyList_GET_ITEM(identities, i))
                || !PyBytes_Check(PyList_GET_ITEM(payloads, i))) {
            PyErr_SetString(PyExc_TypeError, "hex_macs: expects 128-byte pads and bytes");
            return NULL;
        }
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * HEX_MAC_LEN);
    if (out == NULL)
        return NULL;
    char *hex = PyBytes_AS_STRING(out);
    SHA256_CTX inner, outer, ctx;
    PyObject *last = NULL;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pad = PyList_GET_ITEM(pads, i);
        PyObject *identity = PyList_GET_ITEM(identities, i);
        PyObject *payload = PyList_GET_ITEM(payloads, i);
        if (pad != last) {  /* RFC 2104: the padded key's block hashed once per key */
            const unsigned char *block = (const unsigned char *)PyBytes_AS_STRING(pad);
            SHA256_Init(&inner);
            SHA256_Update(&inner, block, BLOCK);
            SHA256_Update(&inner, "sig1 ", 5);
            SHA256_Init(&outer);
            SHA256_Update(&outer, block + BLOCK, BLOCK);
            last = pad;
        }
        ctx = inner;
        SHA256_Update(&ctx, PyBytes_AS_STRING(identity), PyBytes_GET_SIZE(identity));
        SHA256_Update(&ctx, "\n", 1);
        SHA256_Update(&ctx, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload));
        SHA256_Final(digest, &ctx);
        ctx = outer;
        SHA256_Update(&ctx, digest, sizeof digest);
        SHA256_Final(digest, &ctx);
        for (int j = 0; j < SHA256_DIGEST_LENGTH; j++) {
            *hex++ = HEX[digest[j] >> 4];
            *hex++ = HEX[digest[j] & 15];
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"datagram_frames", datagram_frames, METH_VARARGS, datagram_frames_doc},
    {"hex_macs", hex_macs, METH_VARARGS, hex_macs_doc},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_framecheck",
    "Signed frames of a batch read and their HMACs computed in C (signing.py's fast path).",
    -1, methods
};

PyMODINIT_FUNC
PyInit__framecheck(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "VERSION", MODULE_VERSION) < 0)
        Py_CLEAR(m);
    return m;
}
