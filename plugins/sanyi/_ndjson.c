/* The plain lines of an NDJSON chunk read straight into Arrow buffers, without the GIL.
 *
 * Why C: Arrow's JSON reader costs about as much CPU as all of Sanyi's checks together, and the checks
 * then scan every line again with a regex for what Arrow would stop at or read inexactly. Most lines of a
 * real file are plain: one flat object of the contract's members, each once, strings whose escapes are
 * JSON's (a lone surrogate and \u0000 are not taken), numbers of at most 15 digits. Such a line is read
 * here in one pass, into exactly the values Arrow gives (a number of at most 15 digits is an exact integer
 * over an exact power of ten, and IEEE division rounds it as a correct decimal parse does). Every other
 * line is declined, and sanyi/fastpath.py gives it to Arrow and the reference as before: declining is
 * always safe, accepting must be exact. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIGITS 15 /* digits a float64 holds exactly, whatever they are */

enum { ABSENT, NUL, VALUE };

/* An output buffer: a bytes object made before the lines are read, as large as the chunk can need (what a
 * buffer holds is bounded by the lines' count and bytes), and cut to its length at the end. No growing,
 * no copy; pages never written are never touched. */
typedef struct {
    PyObject *obj;
    char *p;
    size_t len;
} Buf;

/* 0 with MemoryError set. Needs the GIL. */
static int buf_new(Buf *b, size_t cap, int zeroed) {
    b->obj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
    if (b->obj == NULL)
        return 0;
    b->p = PyBytes_AS_STRING(b->obj);
    b->len = 0;
    if (zeroed)
        memset(b->p, 0, cap);
    return 1;
}

/* The bytes written, as a new reference (the buffer gives its own up); NULL with an exception set. */
static PyObject *buf_take(Buf *b, size_t len) {
    PyObject *obj = b->obj;
    b->obj = NULL;
    if (obj != NULL && _PyBytes_Resize(&obj, (Py_ssize_t)len) < 0)
        return NULL;
    return obj;
}

static void put(Buf *b, const void *src, size_t n) {
    char *dst = b->p + b->len;
    if (n <= 16) { /* most values: a call to memcpy costs more than the copy */
        const char *from = src;
        if (n >= 8) { /* two eight-byte moves, overlapping when n < 16 */
            uint64_t head, tail;
            memcpy(&head, from, 8);
            memcpy(&tail, from + n - 8, 8);
            memcpy(dst, &head, 8);
            memcpy(dst + n - 8, &tail, 8);
        } else {
            for (size_t k = 0; k < n; k++)
                dst[k] = from[k];
        }
    } else {
        memcpy(dst, src, n);
    }
    b->len += n;
}

static int hex4(const unsigned char *p);
static size_t utf8(unsigned cp, char *out);

/* A JSON string's text with its escapes decoded (string_end has checked them). Never longer than the
 * text: each escape is at least as long as what it stands for. */
static void put_string(Buf *b, const unsigned char *p, size_t len, int escaped) {
    if (!escaped) {
        put(b, p, len);
        return;
    }
    const unsigned char *end = p + len;
    char *out = b->p + b->len;
    while (p < end) {
        const unsigned char *slash = memchr(p, '\\', (size_t)(end - p));
        size_t run = (size_t)((slash != NULL ? slash : end) - p);
        memcpy(out, p, run);
        out += run;
        p += run;
        if (slash == NULL)
            break;
        switch (p[1]) {
        case 'b': *out++ = '\b'; p += 2; break;
        case 'f': *out++ = '\f'; p += 2; break;
        case 'n': *out++ = '\n'; p += 2; break;
        case 'r': *out++ = '\r'; p += 2; break;
        case 't': *out++ = '\t'; p += 2; break;
        case 'u': {
            unsigned cp = (unsigned)hex4(p + 2);
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* a pair: string_end checked the low half */
                cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned)hex4(p + 8) - 0xDC00);
                p += 12;
            } else {
                p += 6;
            }
            out += utf8(cp, out);
            break;
        }
        default: /* the quote, the backslash and the slash stand for themselves */
            *out++ = (char)p[1];
            p += 2;
        }
    }
    b->len = (size_t)(out - b->p);
}

static void put_i32(Buf *b, size_t v) {
    int32_t x = (int32_t)v;
    put(b, &x, sizeof x);
}

static void set_bit(Buf *bitmap, size_t i) { bitmap->p[i / 8] |= (char)(1u << (i % 8)); }

/* One field's output over the lines read. 's': offsets + data; 'f': doubles; 'b': a bitmap; 'l': lists
 * (offsets into the items) + items (offsets into data) + data. valid: a bitmap. */
typedef struct {
    Buf valid, values, offsets, data, lists;
} Column;

/* A JSON string of the line: its text between the quotes, and whether that has escapes to decode. */
typedef struct {
    const unsigned char *s;
    size_t len;
    int escaped;
} Span;

/* One field of the line being read: where its value is, until the whole line is known to be plain. */
typedef struct {
    int state;
    Span str;
    double number;
    size_t first_item, items;
} Token;

typedef struct {
    Py_ssize_t n;
    const char **names;
    Py_ssize_t *lengths;
    const char *kinds;
    Token *tokens;
    Span *items;
    size_t items_len, items_cap;
    int hint; /* members usually come in the contract's order: the next one is tried first */
} Spec;

static const double POW10[MAX_DIGITS + 1] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                             1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end) {
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static int hex4(const unsigned char *p) {
    int v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p[k];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* At a backslash: the length of its escape (2 for a letter, 6 for \u and four hex digits, 12 for a
 * surrogate pair), or 0 for one that is not JSON, a lone surrogate or \u0000 (declined: Arrow's and
 * Python's readers may differ on them). */
static size_t escape_length(const unsigned char *p, const unsigned char *end) {
    if (end - p < 2)
        return 0;
    if (strchr("\"\\/bfnrt", p[1]) != NULL && p[1] != '\0')
        return 2;
    if (p[1] != 'u' || end - p < 6)
        return 0;
    int cp = hex4(p + 2);
    if (cp <= 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
        return 0;
    if (cp < 0xD800 || cp > 0xDBFF)
        return 6;
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u')
        return 0;
    int low = hex4(p + 8);
    return low >= 0xDC00 && low <= 0xDFFF ? 12 : 0;
}

/* After the opening quote: the closing quote (``*escaped`` set when escapes came before it), or NULL for
 * a control character, an escape declined by escape_length, or no end. Eight bytes at a time while none of
 * them is a quote, a backslash or below 0x20 (the usual bit tricks: a word has a byte below n iff
 * (v - n*ONES) & ~v & HIGHS is not 0, for n <= 128); the first word that may have one is read byte by
 * byte. */
static const unsigned char *string_end(const unsigned char *p, const unsigned char *end, int *escaped) {
    *escaped = 0;
    for (;;) {
        while (end - p >= 8) {
            uint64_t v, q, b;
            memcpy(&v, p, 8);
            q = v ^ (ONES * '"');
            b = v ^ (ONES * '\\');
            if ((((q - ONES) & ~q) | ((b - ONES) & ~b) | ((v - ONES * 0x20) & ~v)) & HIGHS)
                break;
            p += 8;
        }
        if (p >= end)
            return NULL;
        unsigned char c = *p;
        if (c == '"')
            return p;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            size_t n = escape_length(p, end);
            if (n == 0)
                return NULL;
            *escaped = 1;
            p += n;
        } else {
            p++;
        }
    }
}

/* The UTF-8 of code point ``cp`` (not a surrogate) at ``out``; its length. */
static size_t utf8(unsigned cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* A JSON number of at most MAX_DIGITS digits and no exponent; NULL for anything else. */
static const unsigned char *number(const unsigned char *p, const unsigned char *end, double *out) {
    int negative = 0, digits = 0, places = 0;
    uint64_t m = 0;
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    if (p >= end || !is_digit(*p))
        return NULL;
    if (*p == '0') {
        p++;
        digits = 1;
        if (p < end && is_digit(*p))
            return NULL; /* a leading zero: not JSON */
    } else {
        while (p < end && is_digit(*p)) {
            if (++digits > MAX_DIGITS)
                return NULL;
            m = m * 10 + (uint64_t)(*p++ - '0');
        }
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p)) {
            if (++digits > MAX_DIGITS)
                return NULL;
            m = m * 10 + (uint64_t)(*p++ - '0');
            places++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E'))
        return NULL;
    double v = (double)m / POW10[places];
    *out = negative ? -v : v;
    return p;
}

/* memcmp for names of a few bytes, without the call: eight bytes at a time, then the rest. */
static int same(const unsigned char *a, const char *b, size_t len) {
    size_t k = 0;
    for (; k + 8 <= len; k += 8) {
        uint64_t x, y;
        memcpy(&x, a + k, 8);
        memcpy(&y, b + k, 8);
        if (x != y)
            return 0;
    }
    for (; k < len; k++)
        if (a[k] != (unsigned char)b[k])
            return 0;
    return 1;
}

static int lookup(Spec *spec, const unsigned char *key, size_t len) {
    for (Py_ssize_t j = 0; j < spec->n; j++) {
        Py_ssize_t f = spec->hint + j < spec->n ? spec->hint + j : spec->hint + j - spec->n;
        if ((size_t)spec->lengths[f] == len && same(key, spec->names[f], len)) {
            spec->hint = f + 1 < spec->n ? (int)f + 1 : 0;
            return (int)f;
        }
    }
    return -1;
}

/* -1: out of memory. */
static int push_item(Spec *spec, const unsigned char *s, size_t len, int escaped) {
    if (spec->items_len == spec->items_cap) {
        size_t cap = spec->items_cap ? spec->items_cap * 2 : 64;
        Span *items = realloc(spec->items, cap * sizeof(Span));
        if (items == NULL)
            return -1;
        spec->items = items;
        spec->items_cap = cap;
    }
    spec->items[spec->items_len].s = s;
    spec->items[spec->items_len].len = len;
    spec->items[spec->items_len].escaped = escaped;
    spec->items_len++;
    return 0;
}

/* 1: a plain line, its tokens filled; 0: declined; -1: out of memory. ``end`` is before the line break. */
static int read_line(Spec *spec, const unsigned char *p, const unsigned char *end) {
    Token *tok = spec->tokens;
    for (Py_ssize_t f = 0; f < spec->n; f++)
        tok[f].state = ABSENT;
    spec->items_len = 0;
    spec->hint = 0;
    if (p >= end || *p != '{') /* what a line starts with decides how the reference reads it */
        return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            if (p >= end || *p != '"')
                return 0;
            const unsigned char *key = ++p;
            int f = spec->hint;
            size_t len = (size_t)spec->lengths[f];
            if ((size_t)(end - key) > len && key[len] == '"' && same(key, spec->names[f], len)) {
                spec->hint = f + 1 < spec->n ? (int)f + 1 : 0; /* the member the contract's order expects */
                p = key + len;
            } else {
                while (p < end && *p != '"' && *p != '\\')
                    p++;
                if (p >= end || *p != '"')
                    return 0;
                f = lookup(spec, key, (size_t)(p - key));
            }
            if (f < 0 || tok[f].state != ABSENT) /* not a field of the contract, or a member twice */
                return 0;
            p = skip_ws(p + 1, end);
            if (p >= end || *p != ':')
                return 0;
            p = skip_ws(p + 1, end);
            if (p >= end)
                return 0;
            Token *t = &tok[f];
            if (*p == 'n') {
                if (end - p < 4 || memcmp(p, "null", 4) != 0)
                    return 0;
                t->state = NUL;
                p += 4;
            } else {
                switch (spec->kinds[f]) {
                case 's': {
                    if (*p != '"')
                        return 0;
                    const unsigned char *close = string_end(p + 1, end, &t->str.escaped);
                    if (close == NULL)
                        return 0;
                    t->str.s = p + 1;
                    t->str.len = (size_t)(close - p - 1);
                    p = close + 1;
                    break;
                }
                case 'f':
                    p = number(p, end, &t->number);
                    if (p == NULL)
                        return 0;
                    break;
                case 'b':
                    if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
                        t->number = 1;
                        p += 4;
                    } else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
                        t->number = 0;
                        p += 5;
                    } else {
                        return 0;
                    }
                    break;
                case 'l':
                    if (*p != '[')
                        return 0;
                    t->first_item = spec->items_len;
                    p = skip_ws(p + 1, end);
                    if (p < end && *p == ']') {
                        p++;
                    } else {
                        for (;;) {
                            if (p >= end || *p != '"')
                                return 0;
                            int escaped;
                            const unsigned char *close = string_end(p + 1, end, &escaped);
                            if (close == NULL)
                                return 0;
                            if (push_item(spec, p + 1, (size_t)(close - p - 1), escaped) < 0)
                                return -1;
                            p = skip_ws(close + 1, end);
                            if (p < end && *p == ',') {
                                p = skip_ws(p + 1, end);
                                continue;
                            }
                            if (p < end && *p == ']') {
                                p++;
                                break;
                            }
                            return 0;
                        }
                    }
                    t->items = spec->items_len - t->first_item;
                    break;
                default:
                    return 0;
                }
                t->state = VALUE;
            }
            p = skip_ws(p, end);
            if (p < end && *p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return 0;
        }
    }
    if (p < end && *p == '\r') /* of a CRLF line break; a CR anywhere else is declined */
        p++;
    return p == end;
}

/* Row ``row`` of every column, from the tokens of the line just read. */
static void append_row(const Spec *spec, Column *cols, size_t row) {
    for (Py_ssize_t f = 0; f < spec->n; f++) {
        const Token *t = &spec->tokens[f];
        Column *c = &cols[f];
        int valid = t->state == VALUE;
        if (valid)
            set_bit(&c->valid, row);
        switch (spec->kinds[f]) {
        case 's':
            if (valid)
                put_string(&c->data, t->str.s, t->str.len, t->str.escaped);
            put_i32(&c->offsets, c->data.len);
            break;
        case 'f': {
            double v = valid ? t->number : 0.0;
            put(&c->values, &v, sizeof v);
            break;
        }
        case 'b':
            if (valid && t->number != 0)
                set_bit(&c->values, row);
            break;
        case 'l':
            if (valid) {
                for (size_t k = 0; k < t->items; k++) {
                    const Span *item = &spec->items[t->first_item + k];
                    put_string(&c->data, item->s, item->len, item->escaped);
                    put_i32(&c->offsets, c->data.len);
                }
            }
            put_i32(&c->lists, (c->offsets.len / sizeof(int32_t)) - 1);
            break;
        }
    }
}

/* The buffers of a column as bytes objects, cut to ``rows``. */
static PyObject *column_object(char kind, Column *c, size_t rows) {
    size_t bitmap_len = (rows + 7) / 8;
    switch (kind) {
    case 's':
        return Py_BuildValue("(NNN)", buf_take(&c->valid, bitmap_len), buf_take(&c->offsets, c->offsets.len),
                             buf_take(&c->data, c->data.len));
    case 'f':
        return Py_BuildValue("(NN)", buf_take(&c->valid, bitmap_len), buf_take(&c->values, c->values.len));
    case 'b':
        return Py_BuildValue("(NN)", buf_take(&c->valid, bitmap_len), buf_take(&c->values, bitmap_len));
    default:
        return Py_BuildValue("(NNNN)", buf_take(&c->valid, bitmap_len), buf_take(&c->lists, c->lists.len),
                             buf_take(&c->offsets, c->offsets.len), buf_take(&c->data, c->data.len));
    }
}

/* Every column's buffers, each as large as ``length`` lines of ``bytes`` in all can need. 0 with
 * MemoryError set. */
static int columns_new(const Spec *spec, Column *cols, size_t length, size_t bytes) {
    size_t bitmap_len = (length + 7) / 8;
    for (Py_ssize_t f = 0; f < spec->n; f++) {
        Column *c = &cols[f];
        if (!buf_new(&c->valid, bitmap_len, 1))
            return 0;
        switch (spec->kinds[f]) {
        case 's': /* the values of one field lie apart in the lines: at most their bytes */
            if (!buf_new(&c->offsets, 4 * (length + 1), 0) || !buf_new(&c->data, bytes, 0))
                return 0;
            put_i32(&c->offsets, 0);
            break;
        case 'f':
            if (!buf_new(&c->values, 8 * length, 0))
                return 0;
            break;
        case 'b':
            if (!buf_new(&c->values, bitmap_len, 1))
                return 0;
            break;
        case 'l': /* each item takes two quotes at least */
            if (!buf_new(&c->lists, 4 * (length + 1), 0) || !buf_new(&c->offsets, 4 * (bytes / 2 + 1), 0)
                || !buf_new(&c->data, bytes, 0))
                return 0;
            put_i32(&c->lists, 0);
            put_i32(&c->offsets, 0);
            break;
        }
    }
    return 1;
}

/* The number of lines read, or -1 when memory ran out. Runs without the GIL: touches no Python object. */
static Py_ssize_t read_all(Spec *spec, Column *cols, const int32_t *offsets, const unsigned char *data,
                           Py_ssize_t length, Py_ssize_t max_line, Buf *plain, Buf *declined) {
    size_t rows = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        const unsigned char *p = data + offsets[i], *end = data + offsets[i + 1];
        int64_t line = (int64_t)i;
        int got = 0;
        if (end - p <= max_line + 1) { /* a longer line: the reference says it is too long */
            if (end > p && end[-1] == '\n')
                end--;
            got = read_line(spec, p, end);
            if (got < 0)
                return -1;
        }
        if (got) {
            append_row(spec, cols, rows++);
            put(plain, &line, sizeof line);
        } else {
            put(declined, &line, sizeof line);
        }
    }
    return (Py_ssize_t)rows;
}

PyDoc_STRVAR(read_plain_lines_doc,
"read_plain_lines(names, kinds, offsets, data, offset, length, max_line) -> (plain, declined, columns)\n\n"
"Read the plain lines of an Arrow string array of NDJSON lines (int32 offsets and data buffers, and\n"
"the array's offset and length). ``names``: the contract's fields (a tuple of bytes); ``kinds``: one\n"
"byte each, s (string), f (float64), b (boolean) or l (list of strings). Returns the int64 indices of\n"
"the lines read and of those declined, and per field the buffers of its Arrow array over the lines\n"
"read: s (validity, offsets, data), f (validity, values), b (validity, values), l (validity, list\n"
"offsets, item offsets, item data). A field absent from a line reads as null, as with Arrow.");

static PyObject *read_plain_lines(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *names, *result = NULL, *columns = NULL;
    Py_buffer kinds_buf, offsets_buf, data_buf;
    Py_ssize_t offset, length, max_line, rows = 0;
    Spec spec = {0};
    Column *cols = NULL;
    Buf plain = {0}, declined = {0};

    if (!PyArg_ParseTuple(args, "O!y*y*y*nnn", &PyTuple_Type, &names, &kinds_buf, &offsets_buf, &data_buf,
                          &offset, &length, &max_line))
        return NULL;
    spec.n = PyTuple_GET_SIZE(names);
    if (spec.n == 0 || kinds_buf.len != spec.n) {
        PyErr_SetString(PyExc_ValueError, "one kind for each of at least one field");
        goto done;
    }
    spec.kinds = kinds_buf.buf;
    for (Py_ssize_t f = 0; f < spec.n; f++) {
        if (strchr("sfbl", spec.kinds[f]) == NULL || spec.kinds[f] == '\0') {
            PyErr_SetString(PyExc_ValueError, "a field's kind must be one of s, f, b, l");
            goto done;
        }
    }
    if (offset < 0 || length < 0 || max_line < 0
        || (size_t)offsets_buf.len / sizeof(int32_t) < (size_t)offset + (size_t)length + 1) {
        PyErr_SetString(PyExc_ValueError, "offset and length do not fit the offsets buffer");
        goto done;
    }
    const int32_t *offsets = (const int32_t *)offsets_buf.buf + offset;
    /* Checked before any byte is read: a malformed array is an error, not a read out of bounds. */
    for (Py_ssize_t i = 0; i < length; i++) {
        if (offsets[i] < 0 || offsets[i + 1] < offsets[i] || offsets[i + 1] > data_buf.len) {
            PyErr_SetString(PyExc_ValueError, "line offsets out of order or beyond the data buffer");
            goto done;
        }
    }
    spec.names = PyMem_Calloc((size_t)spec.n, sizeof(char *));
    spec.lengths = PyMem_Calloc((size_t)spec.n, sizeof(Py_ssize_t));
    spec.tokens = PyMem_Calloc((size_t)spec.n, sizeof(Token));
    cols = PyMem_Calloc((size_t)spec.n, sizeof(Column));
    if (spec.names == NULL || spec.lengths == NULL || spec.tokens == NULL || cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t f = 0; f < spec.n; f++) {
        PyObject *name = PyTuple_GET_ITEM(names, f);
        if (!PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "field names must be bytes");
            goto done;
        }
        spec.names[f] = PyBytes_AS_STRING(name);
        spec.lengths[f] = PyBytes_GET_SIZE(name);
    }
    size_t bytes = length ? (size_t)(offsets[length] - offsets[0]) : 0;
    if (!columns_new(&spec, cols, (size_t)length, bytes) || !buf_new(&plain, 8 * (size_t)length, 0)
        || !buf_new(&declined, 8 * (size_t)length, 0))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    rows = read_all(&spec, cols, offsets, data_buf.buf, length, max_line, &plain, &declined);
    Py_END_ALLOW_THREADS
    if (rows < 0) {
        PyErr_NoMemory();
        goto done;
    }
    columns = PyList_New(spec.n);
    if (columns == NULL)
        goto done;
    for (Py_ssize_t f = 0; f < spec.n; f++) {
        PyObject *col = column_object(spec.kinds[f], &cols[f], (size_t)rows);
        if (col == NULL)
            goto done;
        PyList_SET_ITEM(columns, f, col);
    }
    result = Py_BuildValue("(NNO)", buf_take(&plain, plain.len), buf_take(&declined, declined.len), columns);

done:
    Py_XDECREF(columns);
    if (cols != NULL) {
        for (Py_ssize_t f = 0; f < spec.n; f++) {
            Py_XDECREF(cols[f].valid.obj);
            Py_XDECREF(cols[f].values.obj);
            Py_XDECREF(cols[f].offsets.obj);
            Py_XDECREF(cols[f].data.obj);
            Py_XDECREF(cols[f].lists.obj);
        }
    }
    PyMem_Free(cols);
    PyMem_Free(spec.names);
    PyMem_Free(spec.lengths);
    PyMem_Free(spec.tokens);
    free(spec.items);
    Py_XDECREF(plain.obj);
    Py_XDECREF(declined.obj);
    PyBuffer_Release(&kinds_buf);
    PyBuffer_Release(&offsets_buf);
    PyBuffer_Release(&data_buf);
    return result;
}

PyDoc_STRVAR(line_starts_doc,
"line_starts(data) -> bytes\n\n"
"Offsets where each line of ``data`` starts, and the end of the data (a last line may lack its line\n"
"break): [0, after each line break..., len(data)], without a repeated end, as int32 in native byte\n"
"order (an Arrow string array's offsets), found without the GIL.");

static PyObject *line_starts(PyObject *Py_UNUSED(module), PyObject *arg) {
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (data.len > INT32_MAX) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "data beyond int32 offsets (2 GiB)");
        return NULL;
    }
    /* One pass over the data (a second one, to size the result first, cost as much as the first: the chunk
     * is larger than the caches); the offsets grow in a raw buffer, usable without the GIL. */
    const char *base = data.buf, *p = base, *end = base + data.len;
    size_t k = 0, capacity = 1024;
    int32_t *starts = PyMem_RawMalloc(capacity * sizeof(int32_t)), *grown;
    int ok = starts != NULL;
    Py_BEGIN_ALLOW_THREADS
    if (ok)
        starts[k++] = 0;
    while (ok && p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        p++;
        if (k + 2 > capacity) { /* room for this start and a last line's end */
            capacity *= 2;
            grown = PyMem_RawRealloc(starts, capacity * sizeof(int32_t));
            ok = grown != NULL;
            if (!ok)
                break;
            starts = grown;
        }
        starts[k++] = (int32_t)(p - base);
    }
    if (ok && data.len > 0 && base[data.len - 1] != '\n')
        starts[k++] = (int32_t)data.len;
    Py_END_ALLOW_THREADS
    PyObject *out = ok ? PyBytes_FromStringAndSize((const char *)starts, (Py_ssize_t)(k * sizeof(int32_t)))
                       : PyErr_NoMemory();
    PyMem_RawFree(starts);
    PyBuffer_Release(&data);
    return out;
}

PyDoc_STRVAR(joined_doc,
"joined(head, body, length) -> bytes\n\n"
"``head + body[:length]`` as new bytes, copied without the GIL (bytes.join keeps it when a part is a\n"
"memoryview, and a slice of ``body`` would be a copy made with it).");

static PyObject *joined(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer head, body;
    Py_ssize_t length;
    if (!PyArg_ParseTuple(args, "y*y*n", &head, &body, &length))
        return NULL;
    PyObject *out = NULL;
    if (length < 0 || length > body.len)
        PyErr_SetString(PyExc_ValueError, "length beyond the body");
    else if ((out = PyBytes_FromStringAndSize(NULL, head.len + length)) != NULL) {
        char *dst = PyBytes_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, head.buf, (size_t)head.len);
        memcpy(dst + head.len, body.buf, (size_t)length);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&head);
    PyBuffer_Release(&body);
    return out;
}

static PyMethodDef methods[] = {
    {"joined", joined, METH_VARARGS, joined_doc},
    {"line_starts", line_starts, METH_O, line_starts_doc},
    {"read_plain_lines", read_plain_lines, METH_VARARGS, read_plain_lines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sanyi._ndjson",
    .m_doc = "The plain lines of an NDJSON chunk read into Arrow buffers, without the GIL (see sanyi.fastpath).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__ndjson(void) { return PyModule_Create(&module); }
