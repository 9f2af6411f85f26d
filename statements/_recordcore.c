/*
 * statements._recordcore: the fast path of state._encode, a flat state record as stored.
 *
 *     encode(record, layout) -> bytes | None
 *
 * layout is state._layout(type(record)): for each field, in declaration order, its name,
 * what precedes its value in the stored JSON ('{"name":' or ',"name":'), and whether it holds
 * bytes. It answers exactly the bytes state._encode's Python loop writes when every field is
 * a str (json's own C string encoder, ensure_ascii, writes it), an int (exactly int: its
 * repr), None ("null") or, in a bytes field, bytes (lowercase hex, quoted); and None for
 * anything else (a bool, a float, an int subclass, ...), so that Python encodes that record.
 * Every piece written is ASCII, so the result is built as bytes directly.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

static PyObject *string_encoder; /* json's encode_basestring_ascii (the _json module's) */

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
    char inline_data[512]; /* every record of statements.state fits (an intent: about 330) */
} Buffer;

static int append(Buffer *b, const char *text, Py_ssize_t n) {
    if (b->size + n > b->capacity) {
        Py_ssize_t capacity = (b->size + n) * 2;
        char *grown = PyMem_Malloc(capacity);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(grown, b->data, b->size);
        if (b->data != b->inline_data)
            PyMem_Free(b->data);
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->size, text, n);
    b->size += n;
    return 0;
}

/* Append an ASCII str's characters. */
static int append_ascii(Buffer *b, PyObject *text) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    return s == NULL ? -1 : append(b, s, n);
}

static int append_hex(Buffer *b, PyObject *value) {
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(value);
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    char pair[2];
    if (append(b, "\"", 1) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        pair[0] = digits[p[i] >> 4];
        pair[1] = digits[p[i] & 0xf];
        if (append(b, pair, 2) < 0)
            return -1;
    }
    return append(b, "\"", 1);
}

/* Whether json's encoder writes this str as itself between quotes: printable ASCII (space to
 * '~') without '"' or '\\' (it escapes everything else). */
static int plain(PyObject *text) {
    if (!PyUnicode_IS_ASCII(text))
        return 0;
    const unsigned char *p = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] > 0x7e || p[i] == '"' || p[i] == '\\')
            return 0;
    }
    return 1;
}

/* Append one field's value: 1 when written, 0 to decline the record, -1 on an error. */
static int append_value(Buffer *b, PyObject *value, int is_bytes) {
    if (PyUnicode_CheckExact(value) && plain(value)) {
        int failed = append(b, "\"", 1) < 0 ||
                      append(b, (const char *)PyUnicode_1BYTE_DATA(value),
                             PyUnicode_GET_LENGTH(value)) < 0 ||
                      append(b, "\"", 1) < 0;
        return failed ? -1 : 1;
    }
    if (PyUnicode_CheckExact(value)) {
        PyObject *quoted = PyObject_CallOneArg(string_encoder, value);
        if (quoted == NULL)
            return -1;
        int written = append_ascii(b, quoted);
        Py_DECREF(quoted);
        return written < 0 ? -1 : 1;
    }
    if (PyLong_CheckExact(value)) {
        PyObject *digits = PyLong_Type.tp_repr(value);
        if (digits == NULL)
            return -1;
        int written = append_ascii(b, digits);
        Py_DECREF(digits);
        return written < 0 ? -1 : 1;
    }
    if (value == Py_None)
        return append(b, "null", 4) < 0 ? -1 : 1;
    if (is_bytes && PyBytes_CheckExact(value))
        return append_hex(b, value) < 0 ? -1 : 1;
    return 0;
}

static PyObject *encode(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "encode(record, layout: tuple)");
        return NULL;
    }
    PyObject *record = args[0], *layout = args[1];
    Buffer b = {.size = 0, .capacity = sizeof b.inline_data};
    b.data = b.inline_data;
    PyObject *result = NULL;
    int state = 1;
    for (Py_ssize_t i = 0; state == 1 && i < PyTuple_GET_SIZE(layout); i++) {
        PyObject *field = PyTuple_GET_ITEM(layout, i);
        if (!PyTuple_Check(field) || PyTuple_GET_SIZE(field) != 3) {
            PyErr_SetString(PyExc_TypeError, "a layout field is (name, label, is_bytes)");
            state = -1;
            break;
        }
        PyObject *value = PyObject_GetAttr(record, PyTuple_GET_ITEM(field, 0));
        if (value == NULL || append_ascii(&b, PyTuple_GET_ITEM(field, 1)) < 0) {
            Py_XDECREF(value);
            state = -1;
            break;
        }
        state = append_value(&b, value, PyTuple_GET_ITEM(field, 2) == Py_True);
        Py_DECREF(value);
    }
    if (state == 1 && append(&b, "}", 1) == 0)
        result = PyBytes_FromStringAndSize(b.data, b.size);
    else if (state == 0) {
        result = Py_None;
        Py_INCREF(result);
    }
    if (b.data != b.inline_data)
        PyMem_Free(b.data);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL,
     "encode(record, layout) -> bytes or None: the record as state._encode stores it, or None "
     "to leave it to state.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_recordcore",
    .m_doc = "The fast path of state._encode (statements/_recordcore.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__recordcore(void) {
    PyObject *json = PyImport_ImportModule("_json");
    if (json == NULL)
        return NULL;
    string_encoder = PyObject_GetAttrString(json, "encode_basestring_ascii");
    Py_DECREF(json);
    if (string_encoder == NULL)
        return NULL;
    return PyModule_Create(&module);
}
