/* HMAC-SHA256 of every string of an Arrow string array, as 64 lower-case hex characters each, hashed by
 * OpenSSL (which uses the CPU's SHA instructions where it has them) without holding the GIL.
 *
 * Why C: the loader pseudonymises every chunk's ids while the validator threads check the next chunks.
 * Hashing in Python holds the GIL; DuckDB's sha256() lets go of it but is a software SHA-256 and costs
 * 1.0 us an id (a tenth of the whole ingest's CPU); this costs 0.2 us. The Python wrapper, and the
 * reference it must agree with, are in sanyi/privacy.py (pseudonymise_array, pseudonymise). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>

#define BLOCK 64 /* SHA-256 block: the length of each HMAC pad */
#define HEX_LEN 64

static const char HEX[] = "0123456789abcdef";

/* One context per pad, each already fed its pad: a copy of it per id saves hashing the pad again. */
static int pad_context(EVP_MD_CTX *ctx, const EVP_MD *md, const void *pad) {
    return EVP_DigestInit_ex(ctx, md, NULL) && EVP_DigestUpdate(ctx, pad, BLOCK);
}

/* 1 on success; 0 on an OpenSSL failure. Runs without the GIL: touches no Python object. */
static int hash_all(EVP_MD_CTX *inner, EVP_MD_CTX *outer, EVP_MD_CTX *work, const int32_t *offsets,
                    const unsigned char *data, Py_ssize_t length, char *hex) {
    unsigned char digest[32];
    for (Py_ssize_t i = 0; i < length; i++) {
        if (!EVP_MD_CTX_copy_ex(work, inner)
            || !EVP_DigestUpdate(work, data + offsets[i], (size_t)(offsets[i + 1] - offsets[i]))
            || !EVP_DigestFinal_ex(work, digest, NULL)
            || !EVP_MD_CTX_copy_ex(work, outer)
            || !EVP_DigestUpdate(work, digest, sizeof digest)
            || !EVP_DigestFinal_ex(work, digest, NULL))
            return 0;
        for (size_t k = 0; k < sizeof digest; k++) {
            hex[2 * k] = HEX[digest[k] >> 4];
            hex[2 * k + 1] = HEX[digest[k] & 15];
        }
        hex += HEX_LEN;
    }
    return 1;
}

PyDoc_STRVAR(hmac_sha256_hex_doc,
"hmac_sha256_hex(inner_pad, outer_pad, offsets, data, offset, length) -> (offsets, hex)\n\n"
"HMAC-SHA256 (RFC 2104, the pads from sanyi.privacy.hmac_pads) of the ``length`` strings of an Arrow\n"
"string array given by its int32 offsets and data buffers and its offset. Returns the buffers of the\n"
"string array of their 64-character lower-case hex digests: int32 offsets and the characters.");

static PyObject *hmac_sha256_hex(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer inner_pad, outer_pad, offsets_buf, data_buf;
    Py_ssize_t offset, length;
    PyObject *out_offsets = NULL, *out_hex = NULL, *result = NULL;
    EVP_MD_CTX *inner = NULL, *outer = NULL, *work = NULL;
    EVP_MD *md = NULL;
    int hashed = 0;

    if (!PyArg_ParseTuple(args, "y*y*y*y*nn", &inner_pad, &outer_pad, &offsets_buf, &data_buf, &offset,
                          &length))
        return NULL;
    const int32_t *offsets = NULL;
    if (inner_pad.len != BLOCK || outer_pad.len != BLOCK) {
        PyErr_SetString(PyExc_ValueError, "each HMAC pad must be 64 bytes");
        goto done;
    }
    if (offset < 0 || length < 0
        || (size_t)offsets_buf.len / sizeof(int32_t) < (size_t)offset + (size_t)length + 1) {
        PyErr_SetString(PyExc_ValueError, "offset and length do not fit the offsets buffer");
        goto done;
    }
    if (length > INT32_MAX / HEX_LEN - 1) { /* the digests' own int32 offsets must hold 64 * length */
        PyErr_SetString(PyExc_ValueError, "too many strings for one array of 64-character digests");
        goto done;
    }
    offsets = (const int32_t *)offsets_buf.buf + offset;
    /* Checked before any byte is read: a malformed array is an error, not a read out of bounds. */
    for (Py_ssize_t i = 0; i < length; i++) {
        if (offsets[i] < 0 || offsets[i + 1] < offsets[i] || offsets[i + 1] > data_buf.len) {
            PyErr_SetString(PyExc_ValueError, "string offsets out of order or beyond the data buffer");
            goto done;
        }
    }
    out_offsets = PyBytes_FromStringAndSize(NULL, (length + 1) * (Py_ssize_t)sizeof(int32_t));
    out_hex = PyBytes_FromStringAndSize(NULL, length * HEX_LEN);
    if (out_offsets == NULL || out_hex == NULL)
        goto done;
    int32_t *new_offsets = (int32_t *)PyBytes_AS_STRING(out_offsets);
    for (Py_ssize_t i = 0; i <= length; i++)
        new_offsets[i] = (int32_t)(i * HEX_LEN);

    md = EVP_MD_fetch(NULL, "SHA256", NULL);
    inner = EVP_MD_CTX_new();
    outer = EVP_MD_CTX_new();
    work = EVP_MD_CTX_new();
    if (md != NULL && inner != NULL && outer != NULL && work != NULL && pad_context(inner, md, inner_pad.buf)
        && pad_context(outer, md, outer_pad.buf)) {
        char *hex = PyBytes_AS_STRING(out_hex);
        Py_BEGIN_ALLOW_THREADS
        hashed = hash_all(inner, outer, work, offsets, data_buf.buf, length, hex);
        Py_END_ALLOW_THREADS
    }
    if (!hashed) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
        goto done;
    }
    result = PyTuple_Pack(2, out_offsets, out_hex);

done:
    EVP_MD_CTX_free(work);
    EVP_MD_CTX_free(outer);
    EVP_MD_CTX_free(inner);
    EVP_MD_free(md);
    Py_XDECREF(out_offsets);
    Py_XDECREF(out_hex);
    PyBuffer_Release(&inner_pad);
    PyBuffer_Release(&outer_pad);
    PyBuffer_Release(&offsets_buf);
    PyBuffer_Release(&data_buf);
    return result;
}

static PyMethodDef methods[] = {
    {"hmac_sha256_hex", hmac_sha256_hex, METH_VARARGS, hmac_sha256_hex_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sanyi._hmac",
    .m_doc = "HMAC-SHA256 of a whole Arrow string array by OpenSSL, without the GIL (see sanyi.privacy).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__hmac(void) { return PyModule_Create(&module); }
