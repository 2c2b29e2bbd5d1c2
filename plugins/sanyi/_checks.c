/* Per-value checks of the validator and of the masking over a whole Arrow string array, without the GIL.
 *
 * Why C: done with Arrow's kernels, an RFC 3339 timestamp took a regex, a strptime and a dozen slices and
 * casts (15 ms of a 16 MiB chunk's 100), a resident id's check character seven lookups and casts (10 ms),
 * and the search for ids in other fields regexes and a dictionary (7 ms), and RE2 spent about 65 ns a value
 * on each pattern keyword (15 ms); Python's regex spent 5 us a quarantined record's JSON looking for ids to
 * mask. Here each is one pass over the bytes. The rules are those of sanyi.contracts.parse_date and
 * parse_timestamp, of sanyi.privacy.is_valid_resident_id, find_resident_ids and mask_resident_ids, and of
 * the DFAs sanyi.patterns compiles; tests/test_checks.py and tests/test_patterns.py compare them on every
 * kind of input. Null slots are read like any other (the caller masks them). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define US 1000000LL
#define CST_SECONDS (8 * 3600LL)
#define MIN_SECONDS (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define MAX_SECONDS 253402300799LL   /* 9999-12-31T23:59:59Z */

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* The value of ``n`` ASCII digits at ``s``, or -1 when one is not a digit. */
static int64_t digits(const unsigned char *s, int n) {
    int64_t v = 0;
    for (int k = 0; k < n; k++) {
        if (!is_digit(s[k]))
            return -1;
        v = v * 10 + (s[k] - '0');
    }
    return v;
}

static int leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* 1 and its days since 1970-01-01 when ``s`` starts with a real date of years 1-9999 as YYYY-MM-DD. */
static int calendar_date(const unsigned char *s, size_t len, int64_t *days) {
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (len < 10 || s[4] != '-' || s[7] != '-')
        return 0;
    int64_t year = digits(s, 4), month = digits(s + 5, 2), day = digits(s + 8, 2);
    if (year < 1 || month < 1 || month > 12 || day < 1)
        return 0;
    if (day > month_days[month - 1] + (month == 2 && leap(year)))
        return 0;
    *days = days_from_civil(year, month, day);
    return 1;
}

/* 1 and the days when ``s`` is a date sanyi.contracts.parse_date accepts; else 0. */
static int date_only(const unsigned char *s, size_t len, int64_t *out) {
    return len == 10 && calendar_date(s, len, out);
}

/* 1 and the UTC microseconds when ``s`` is a timestamp sanyi.contracts.parse_timestamp accepts; else 0. */
static int timestamp(const unsigned char *s, size_t len, int64_t *out) {
    int64_t days;
    if (len < 20 || s[10] != 'T' || s[13] != ':' || s[16] != ':' || !calendar_date(s, len, &days))
        return 0;
    int64_t hour = digits(s + 11, 2), minute = digits(s + 14, 2), second = digits(s + 17, 2);
    if (hour < 0 || minute < 0 || second < 0 || hour > 23 || minute > 59 || second > 59)
        return 0;
    size_t p = 19;
    int64_t micro = 0;
    if (s[p] == '.') {
        size_t first = ++p;
        while (p < len && is_digit(s[p])) {
            if (p - first < 6)
                micro = micro * 10 + (s[p] - '0');
            p++;
        }
        if (p == first)
            return 0;
        for (size_t k = p - first; k < 6; k++) /* fewer than six digits: as if padded with zeros */
            micro *= 10;
    }
    int64_t offset = 0;
    if (p + 1 == len && s[p] == 'Z') {
        offset = 0;
    } else if (p + 6 == len && (s[p] == '+' || s[p] == '-') && s[p + 3] == ':') {
        int64_t oh = digits(s + p + 1, 2), om = digits(s + p + 4, 2);
        if (oh < 0 || om < 0 || oh > 23 || om > 59)
            return 0;
        offset = (s[p] == '-' ? -1 : 1) * (oh * 3600 + om * 60);
    } else {
        return 0;
    }
    int64_t utc = days * 86400 + hour * 3600 + minute * 60 + second - offset;
    /* Its UTC date, and its UTC+08:00 date (the derived one), must both lie in years 1-9999. */
    if (utc < MIN_SECONDS || utc > MAX_SECONDS - CST_SECONDS)
        return 0;
    *out = utc * US + micro;
    return 1;
}

/* The weights of GB 11643's 17 digits (2^(17-i) mod 11) and the check character of each sum mod 11. */
static const int WEIGHTS[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
static const char CHECK[11] = {'1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'};

/* 1 when the first 18 bytes are 17 ASCII digits and their check character (``X`` upper-case). */
static int leading_id(const unsigned char *s, size_t len) {
    if (len < 18)
        return 0;
    int sum = 0;
    for (int k = 0; k < 17; k++) {
        if (!is_digit(s[k]))
            return 0;
        sum += (s[k] - '0') * WEIGHTS[k];
    }
    return s[17] == CHECK[sum % 11];
}

/* 1 when sanyi.privacy.find_resident_ids finds an id in ``s``: a run of 17 ASCII digits and a check
 * character (a digit, X or x) between non-digits, whose check character is right (and X upper-case);
 * with ``lower_x``, an x counts as an X, as sanyi.privacy.mask_resident_ids counts it. */
static int find_id(const unsigned char *s, size_t len, int lower_x) {
    size_t i = 0;
    while (i < len) {
        if (!is_digit(s[i])) {
            i++;
            continue;
        }
        size_t start = i;
        while (i < len && is_digit(s[i]))
            i++;
        size_t run = i - start;
        if (run == 18 && leading_id(s + start, 18))
            return 1;
        /* 17 digits and an X: the candidate ends there, and must not run on into a digit */
        if (run == 17 && i < len && (s[i] == 'X' || s[i] == 'x') && (i + 1 == len || !is_digit(s[i + 1]))) {
            unsigned char id[18];
            memcpy(id, s + start, 18);
            if (lower_x && id[17] == 'x')
                id[17] = 'X';
            if (leading_id(id, 18))
                return 1;
        }
    }
    return 0;
}

static int holds_id(const unsigned char *s, size_t len) { return find_id(s, len, 0); }

static int maskable_id(const unsigned char *s, size_t len) { return find_id(s, len, 1); }

/* Arrow bitmap of ``n`` bits, all 0. */
static PyObject *zero_bitmap(Py_ssize_t n) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, (n + 7) / 8);
    if (out != NULL)
        memset(PyBytes_AS_STRING(out), 0, (size_t)(n + 7) / 8);
    return out;
}

/* Checks the offsets of a string array (``offset``, ``length``) against its buffers before any byte is read:
 * a malformed array is an error, not a read out of bounds. 0 with an exception set (and the buffers
 * released) when they do not describe a string array. */
static int check_offsets(Py_buffer *offsets_buf, Py_buffer *data_buf, Py_ssize_t offset, Py_ssize_t length,
                         const int32_t **offsets) {
    if (offset < 0 || length < 0
        || (size_t)offsets_buf->len / sizeof(int32_t) < (size_t)offset + (size_t)length + 1) {
        PyErr_SetString(PyExc_ValueError, "offset and length do not fit the offsets buffer");
        goto fail;
    }
    *offsets = (const int32_t *)offsets_buf->buf + offset;
    for (Py_ssize_t i = 0; i < length; i++) {
        if ((*offsets)[i] < 0 || (*offsets)[i + 1] < (*offsets)[i] || (*offsets)[i + 1] > data_buf->len) {
            PyErr_SetString(PyExc_ValueError, "string offsets out of order or beyond the data buffer");
            goto fail;
        }
    }
    return 1;
fail:
    PyBuffer_Release(offsets_buf);
    PyBuffer_Release(data_buf);
    return 0;
}

/* Parses the common arguments; 0 with an exception set when they do not describe a string array. */
static int string_array(PyObject *args, Py_buffer *offsets_buf, Py_buffer *data_buf, const int32_t **offsets,
                        Py_ssize_t *length) {
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*y*nn", offsets_buf, data_buf, &offset, length))
        return 0;
    return check_offsets(offsets_buf, data_buf, offset, *length, offsets);
}

/* A bitmap of ``parse`` on every string of the array the arguments describe, and the int64 it gives
 * (0 where it fails), computed without the GIL. */
static PyObject *values_of(PyObject *args, int (*parse)(const unsigned char *, size_t, int64_t *)) {
    Py_buffer offsets_buf, data_buf;
    const int32_t *offsets;
    Py_ssize_t length;
    if (!string_array(args, &offsets_buf, &data_buf, &offsets, &length))
        return NULL;
    PyObject *valid = zero_bitmap(length);
    PyObject *values = PyBytes_FromStringAndSize(NULL, length * (Py_ssize_t)sizeof(int64_t));
    PyObject *result = NULL;
    if (valid != NULL && values != NULL) {
        unsigned char *bits = (unsigned char *)PyBytes_AS_STRING(valid);
        int64_t *out = (int64_t *)PyBytes_AS_STRING(values);
        const unsigned char *data = data_buf.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < length; i++) {
            int64_t v = 0;
            if (parse(data + offsets[i], (size_t)(offsets[i + 1] - offsets[i]), &v))
                bits[i / 8] |= (unsigned char)(1u << (i % 8));
            else
                v = 0;
            out[i] = v;
        }
        Py_END_ALLOW_THREADS
        result = PyTuple_Pack(2, valid, values);
    }
    Py_XDECREF(valid);
    Py_XDECREF(values);
    PyBuffer_Release(&offsets_buf);
    PyBuffer_Release(&data_buf);
    return result;
}

PyDoc_STRVAR(timestamps_doc,
"timestamps(offsets, data, offset, length) -> (valid, micros)\n\n"
"Per string of an Arrow string array (int32 offsets and data buffers, offset, length): whether it is a\n"
"timestamp sanyi.contracts.parse_timestamp accepts (an Arrow bitmap) and its UTC microseconds since\n"
"1970 (int64 values; 0 where it is not).");

static PyObject *timestamps(PyObject *Py_UNUSED(module), PyObject *args) { return values_of(args, timestamp); }

PyDoc_STRVAR(dates_doc,
"dates(offsets, data, offset, length) -> (valid, days)\n\n"
"Per string of an Arrow string array: whether it is a date sanyi.contracts.parse_date accepts (an Arrow\n"
"bitmap) and its days since 1970-01-01 (int64 values; 0 where it is not).");

static PyObject *dates(PyObject *Py_UNUSED(module), PyObject *args) { return values_of(args, date_only); }

/* A bitmap of ``test`` on every string of the array the arguments describe, computed without the GIL. */
static PyObject *bitmap_of(PyObject *args, int (*test)(const unsigned char *, size_t)) {
    Py_buffer offsets_buf, data_buf;
    const int32_t *offsets;
    Py_ssize_t length;
    if (!string_array(args, &offsets_buf, &data_buf, &offsets, &length))
        return NULL;
    PyObject *valid = zero_bitmap(length);
    if (valid != NULL) {
        unsigned char *bits = (unsigned char *)PyBytes_AS_STRING(valid);
        const unsigned char *data = data_buf.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < length; i++)
            if (test(data + offsets[i], (size_t)(offsets[i + 1] - offsets[i])))
                bits[i / 8] |= (unsigned char)(1u << (i % 8));
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&offsets_buf);
    PyBuffer_Release(&data_buf);
    return valid;
}

PyDoc_STRVAR(leading_ids_doc,
"leading_ids(offsets, data, offset, length) -> valid\n\n"
"Per string of an Arrow string array: whether its first 18 characters are 17 ASCII digits and the right\n"
"check character (GB 11643, ISO 7064 MOD 11-2; X upper-case), as an Arrow bitmap.");

static PyObject *leading_ids(PyObject *Py_UNUSED(module), PyObject *args) { return bitmap_of(args, leading_id); }

PyDoc_STRVAR(holding_ids_doc,
"holding_ids(offsets, data, offset, length) -> valid\n\n"
"Per string of an Arrow string array: whether sanyi.privacy.find_resident_ids finds a resident id in it,\n"
"as an Arrow bitmap.");

static PyObject *holding_ids(PyObject *Py_UNUSED(module), PyObject *args) { return bitmap_of(args, holds_id); }

PyDoc_STRVAR(maskable_ids_doc,
"maskable_ids(offsets, data, offset, length) -> valid\n\n"
"Per string of an Arrow string array: whether sanyi.privacy.mask_resident_ids would change it (an id as\n"
"find_resident_ids finds them, or one whose check character is a lower-case x), as an Arrow bitmap.");

static PyObject *maskable_ids(PyObject *Py_UNUSED(module), PyObject *args) { return bitmap_of(args, maskable_id); }

PyDoc_STRVAR(matches_doc,
"matches(offsets, data, offset, length, tables, states, classes) -> valid\n\n"
"Per string of an Arrow string array: whether the DFA ``tables`` (sanyi.patterns.dfa: 256 byte classes,\n"
"``states`` accepting flags, ``states`` x ``classes`` transitions; 0 the dead state, 1 the start) ends in\n"
"an accepting state on its bytes, as an Arrow bitmap.");

static PyObject *matches(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer offsets_buf, data_buf, tables_buf;
    const int32_t *offsets;
    Py_ssize_t offset, length, states, classes;
    if (!PyArg_ParseTuple(args, "y*y*nny*nn", &offsets_buf, &data_buf, &offset, &length, &tables_buf, &states,
                          &classes))
        return NULL;
    const unsigned char *tables = tables_buf.buf;
    int ok = states >= 2 && states <= 256 && classes >= 1 && classes <= 256
             && tables_buf.len == 256 + states + states * classes;
    for (Py_ssize_t i = 0; ok && i < 256; i++)
        ok = tables[i] < classes;
    for (Py_ssize_t i = 256 + states; ok && i < tables_buf.len; i++)
        ok = tables[i] < states;
    if (!ok) {
        PyBuffer_Release(&tables_buf);
        PyBuffer_Release(&offsets_buf);
        PyBuffer_Release(&data_buf);
        PyErr_SetString(PyExc_ValueError, "tables do not describe a DFA of that many states and classes");
        return NULL;
    }
    if (!check_offsets(&offsets_buf, &data_buf, offset, length, &offsets)) {
        PyBuffer_Release(&tables_buf);
        return NULL;
    }
    PyObject *valid = zero_bitmap(length);
    if (valid != NULL) {
        unsigned char *bits = (unsigned char *)PyBytes_AS_STRING(valid);
        const unsigned char *data = data_buf.buf, *cls = tables, *accept = tables + 256;
        const unsigned char *next = accept + states;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < length; i++) {
            const unsigned char *p = data + offsets[i], *end = data + offsets[i + 1];
            unsigned s = 1;
            while (p < end && s != 0)
                s = next[s * (size_t)classes + cls[*p++]];
            if (accept[s])
                bits[i / 8] |= (unsigned char)(1u << (i % 8));
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&tables_buf);
    PyBuffer_Release(&offsets_buf);
    PyBuffer_Release(&data_buf);
    return valid;
}

PyDoc_STRVAR(grid_doc,
"grid(validity, values, offset, length, places) -> (multiple, exact, scaled)\n\n"
"Per number of an Arrow float64 array (its validity bitmap, b'' when it has no nulls, and values buffer,\n"
"offset, length), with s = 10^places (0 <= places <= 15) and r = x * s rounded half to even:\n"
"``multiple``, r / s == x (an Arrow bitmap); ``exact``, that and |x| < 1e15 / s; ``scaled``, r as int64\n"
"where exact, else 0. A null is neither (and 0). The arithmetic is Arrow's multiply, round\n"
"and divide on doubles, in one pass (see sanyi.fastpath._Grid).");

static PyObject *grid(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer validity_buf, values_buf;
    Py_ssize_t offset, length;
    int places;
    if (!PyArg_ParseTuple(args, "y*y*nni", &validity_buf, &values_buf, &offset, &length, &places))
        return NULL;
    const char *problem = NULL;
    if (places < 0 || places > 15)
        problem = "places must be between 0 and 15";
    else if (offset < 0 || length < 0 || (size_t)values_buf.len / sizeof(double) < (size_t)offset + (size_t)length)
        problem = "offset and length do not fit the values buffer";
    else if (validity_buf.len != 0 && (size_t)validity_buf.len < ((size_t)offset + (size_t)length + 7) / 8)
        problem = "offset and length do not fit the validity bitmap";
    if (problem != NULL) {
        PyBuffer_Release(&validity_buf);
        PyBuffer_Release(&values_buf);
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    PyObject *multiple = zero_bitmap(length), *exact = zero_bitmap(length);
    PyObject *scaled = PyBytes_FromStringAndSize(NULL, length * (Py_ssize_t)sizeof(int64_t));
    PyObject *result = NULL;
    if (multiple != NULL && exact != NULL && scaled != NULL) {
        unsigned char *mult_bits = (unsigned char *)PyBytes_AS_STRING(multiple);
        unsigned char *exact_bits = (unsigned char *)PyBytes_AS_STRING(exact);
        int64_t *out = (int64_t *)PyBytes_AS_STRING(scaled);
        const double *x = (const double *)values_buf.buf + offset;
        const unsigned char *valid = validity_buf.len ? validity_buf.buf : NULL;
        double s = 1.0;
        for (int k = 0; k < places; k++)
            s *= 10.0; /* exact: 10^15 < 2^53 */
        const double limit = 1e15 / s;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < length; i++) {
            size_t bit = (size_t)(offset + i);
            out[i] = 0;
            if (valid != NULL && !(valid[bit / 8] & (1u << (bit % 8))))
                continue;
            double r = nearbyint(x[i] * s); /* the default rounding mode: to nearest, ties to even */
            if (r / s != x[i])
                continue;
            mult_bits[i / 8] |= (unsigned char)(1u << (i % 8));
            if (fabs(x[i]) < limit) {
                exact_bits[i / 8] |= (unsigned char)(1u << (i % 8));
                out[i] = (int64_t)r;
            }
        }
        Py_END_ALLOW_THREADS
        result = PyTuple_Pack(3, multiple, exact, scaled);
    }
    Py_XDECREF(multiple);
    Py_XDECREF(exact);
    Py_XDECREF(scaled);
    PyBuffer_Release(&validity_buf);
    PyBuffer_Release(&values_buf);
    return result;
}

PyDoc_STRVAR(widened_doc,
"widened(values, length) -> bytes\n\n"
"The first ``length`` int64 of ``values`` as Arrow decimal128 values (16 bytes each, little-endian, the\n"
"sign extended): the unscaled integers of the decimals, whatever the scale.");

static PyObject *widened(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer values_buf;
    Py_ssize_t length;
    if (!PyArg_ParseTuple(args, "y*n", &values_buf, &length))
        return NULL;
    if (length < 0 || (size_t)values_buf.len / sizeof(int64_t) < (size_t)length) {
        PyBuffer_Release(&values_buf);
        PyErr_SetString(PyExc_ValueError, "length does not fit the values buffer");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, length * 2 * (Py_ssize_t)sizeof(int64_t));
    if (out != NULL) {
        const int64_t *v = values_buf.buf;
        int64_t *w = (int64_t *)PyBytes_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < length; i++) {
            w[2 * i] = v[i];
            w[2 * i + 1] = v[i] < 0 ? -1 : 0;
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&values_buf);
    return out;
}

static PyMethodDef methods[] = {
    {"timestamps", timestamps, METH_VARARGS, timestamps_doc},
    {"dates", dates, METH_VARARGS, dates_doc},
    {"leading_ids", leading_ids, METH_VARARGS, leading_ids_doc},
    {"holding_ids", holding_ids, METH_VARARGS, holding_ids_doc},
    {"maskable_ids", maskable_ids, METH_VARARGS, maskable_ids_doc},
    {"matches", matches, METH_VARARGS, matches_doc},
    {"grid", grid, METH_VARARGS, grid_doc},
    {"widened", widened, METH_VARARGS, widened_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sanyi._checks",
    .m_doc = "Dates, timestamps, resident ids and patterns checked over a whole Arrow string array, and decimal places over a float64 array (see sanyi.fastpath).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__checks(void) { return PyModule_Create(&module); }
