/*
 * statements._canonicalcore: the fast path of canonical.loads and canonical.is_canonical,
 * for text that is plainly canonical JSON (RFC 8785).
 *
 *     parse(text) -> (value,) | None
 *
 * It answers (value,) only when ``text`` is, byte for byte, the RFC 8785 text of ``value``
 * and ``value`` is what json.loads(text) gives; and None whenever it is not certain of both,
 * so that canonical.py decides (and names the problem) in Python. It accepts a narrow subset:
 * no white space; objects whose keys are printable ASCII without escapes, in strictly rising
 * order (ASCII sorts alike in UTF-16 code units, so that is RFC 8785's order, and no key
 * repeats); strings without escapes or control characters (RFC 8785 writes every other
 * character as itself); integers of at most 15 digits, without a leading zero or "-0"
 * (within +-(2**53 - 1), where ECMAScript prints them as written); true, false, null; nesting
 * no deeper than canonical.MAX_DEPTH. Anything else (a float, an escape, a non-ASCII key,
 * nesting too deep, text that is not JSON at all) is declined, never judged.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 32  /* canonical.MAX_DEPTH (exported; a test holds them equal) */
#define MAX_DIGITS 15 /* 10**15 - 1 < 2**53 - 1 */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Cursor;

/* Each parse_* returns a new reference, or NULL: with a Python exception set when one
 * occurred (the call fails), else to decline (the caller answers None). */
static PyObject *parse_value(Cursor *c, int depth);

static int at(const Cursor *c, uint8_t byte) { return c->p < c->end && *c->p == byte; }

/* The bytes of a string's content, the cursor past its closing quote; 0 to decline. Keys
 * (ascii_only) must be printable ASCII; any string declines an escape or a control byte. */
static int string_span(Cursor *c, int ascii_only, const uint8_t **start, Py_ssize_t *size) {
    if (!at(c, '"'))
        return 0;
    const uint8_t *q = ++c->p;
    while (q < c->end && *q != '"') {
        uint8_t b = *q;
        if (b < 0x20 || b == '\\' || (ascii_only && b > 0x7e))
            return 0;
        q++;
    }
    if (q >= c->end)
        return 0;
    *start = c->p;
    *size = q - c->p;
    c->p = q + 1;
    return 1;
}

static PyObject *parse_string(Cursor *c) {
    const uint8_t *start;
    Py_ssize_t size;
    if (!string_span(c, 0, &start, &size))
        return NULL;
    PyObject *text = PyUnicode_DecodeUTF8((const char *)start, size, NULL);
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        PyErr_Clear(); /* cannot happen for text that came from a str; decline if it does */
    return text;
}

static PyObject *parse_integer(Cursor *c) {
    int negative = at(c, '-');
    if (negative)
        c->p++;
    const uint8_t *digits = c->p;
    long long value = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (c->p - digits >= MAX_DIGITS)
            return NULL;
        value = value * 10 + (*c->p - '0');
        c->p++;
    }
    Py_ssize_t count = c->p - digits;
    if (count == 0 || (digits[0] == '0' && (count > 1 || negative)))
        return NULL; /* no digits, a leading zero, or -0 (RFC 8785 writes 0) */
    if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))
        return NULL; /* a number json.loads reads as a float */
    return PyLong_FromLongLong(negative ? -value : value);
}

static PyObject *parse_literal(Cursor *c, const char *word, PyObject *value) {
    size_t size = strlen(word);
    if ((size_t)(c->end - c->p) < size || memcmp(c->p, word, size) != 0)
        return NULL;
    c->p += size;
    return Py_NewRef(value);
}

static PyObject *parse_array(Cursor *c, int depth) {
    c->p++; /* '[' */
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    if (at(c, ']')) {
        c->p++;
        return list;
    }
    for (;;) {
        PyObject *item = parse_value(c, depth);
        if (item == NULL)
            goto fail;
        int failed = PyList_Append(list, item);
        Py_DECREF(item);
        if (failed)
            goto fail;
        if (at(c, ',')) {
            c->p++;
        } else if (at(c, ']')) {
            c->p++;
            return list;
        } else {
            goto fail; /* decline: not JSON, or white space */
        }
    }
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *parse_object(Cursor *c, int depth) {
    c->p++; /* '{' */
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    if (at(c, '}')) {
        c->p++;
        return dict;
    }
    const uint8_t *last = NULL;
    Py_ssize_t last_size = 0;
    for (;;) {
        const uint8_t *start;
        Py_ssize_t size;
        if (!string_span(c, 1, &start, &size))
            goto fail;
        if (last != NULL) {
            Py_ssize_t common = size < last_size ? size : last_size;
            int order = memcmp(last, start, (size_t)common);
            if (order > 0 || (order == 0 && last_size >= size))
                goto fail; /* out of order, or repeated: json.loads keeps the last */
        }
        last = start;
        last_size = size;
        if (!at(c, ':'))
            goto fail;
        c->p++;
        PyObject *key = PyUnicode_FromStringAndSize((const char *)start, size);
        if (key == NULL)
            goto fail;
        PyObject *value = parse_value(c, depth);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        int failed = PyDict_SetItem(dict, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (failed)
            goto fail;
        if (at(c, ',')) {
            c->p++;
        } else if (at(c, '}')) {
            c->p++;
            return dict;
        } else {
            goto fail;
        }
    }
fail:
    Py_DECREF(dict);
    return NULL;
}

static PyObject *parse_value(Cursor *c, int depth) {
    if (c->p >= c->end)
        return NULL;
    switch (*c->p) {
    case '{':
        return depth < MAX_DEPTH ? parse_object(c, depth + 1) : NULL;
    case '[':
        return depth < MAX_DEPTH ? parse_array(c, depth + 1) : NULL;
    case '"':
        return parse_string(c);
    case 't':
        return parse_literal(c, "true", Py_True);
    case 'f':
        return parse_literal(c, "false", Py_False);
    case 'n':
        return parse_literal(c, "null", Py_None);
    default:
        if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
            return parse_integer(c);
        return NULL;
    }
}

static PyObject *parse(PyObject *self, PyObject *text) {
    (void)self;
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "parse() takes a str");
        return NULL;
    }
    Py_ssize_t size;
    const char *data = PyUnicode_AsUTF8AndSize(text, &size);
    if (data == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return NULL;
        PyErr_Clear(); /* a lone surrogate: not UTF-8, so not canonical; Python says why */
        Py_RETURN_NONE;
    }
    Cursor c = {(const uint8_t *)data, (const uint8_t *)data + size};
    PyObject *value = parse_value(&c, 0);
    if (value == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (c.p != c.end) {
        Py_DECREF(value);
        Py_RETURN_NONE; /* something after the value */
    }
    return Py_BuildValue("(N)", value);
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_O,
     "parse(text) -> (value,) or None: json.loads(text) when text is plainly the RFC 8785 text "
     "of that value; None to leave it to canonical.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_canonicalcore",
    .m_doc = "The fast path of canonical.loads and is_canonical (statements/_canonicalcore.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__canonicalcore(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
