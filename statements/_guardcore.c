/*
 * statements._guardcore: the secret guard's keyword search (secrets.keyword_occurrences),
 * compiled.
 *
 *     occurrences(lowered, starts, table) -> [(position, keyword), ...]
 *
 * Every occurrence of every keyword in ``lowered``, overlapping ones included, sorted by
 * position then keyword: exactly what keyword_occurrences finds by str.find. ``table`` and
 * ``starts`` are built by secrets.py from its one keyword list: ``table`` a list of 128 * 128
 * entries, the entry at 128 * ord(a) + ord(b) the tuple of keywords (sorted) that start with
 * the two ASCII characters a and b, or None; ``starts`` the same as 128 * 128 bits (bytes,
 * bit i % 8 of byte i // 8 set where entry i is not None), small enough to stay in cache.
 * Every keyword is ASCII and at least two characters long (secrets.py builds no table
 * otherwise), so a keyword can only start where two ASCII characters start one of them, and
 * its remaining characters are compared one by one. Entries are checked as they are used:
 * a table that breaks these rules is a ValueError, never a read out of bounds.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#define TABLE_SIZE (128 * 128)

/* Whether keyword (ASCII, checked by the caller) occurs in text at position at. */
static int occurs_at(int kind, const void *data, Py_ssize_t length, Py_ssize_t at,
                     PyObject *keyword) {
    Py_ssize_t size = PyUnicode_GET_LENGTH(keyword);
    if (size > length - at)
        return 0;
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(keyword);
    for (Py_ssize_t j = 2; j < size; j++) {
        if (PyUnicode_READ(kind, data, at + j) != chars[j])
            return 0;
    }
    return 1;
}

#define OK 0
#define FAILED -1    /* a Python exception is set */
#define BAD_TABLE -2 /* the caller sets the ValueError */

/* Append to found each (position, keyword) of text; inlined once per string kind, so the
 * loop over the characters reads them with no switch on the kind. */
static inline int search(int kind, const void *data, Py_ssize_t length, const uint8_t *bits,
                         PyObject *table, PyObject *found) {
    for (Py_ssize_t i = 0; i + 1 < length; i++) {
        Py_UCS4 a = PyUnicode_READ(kind, data, i);
        Py_UCS4 b = PyUnicode_READ(kind, data, i + 1);
        if (a >= 128 || b >= 128)
            continue;
        Py_UCS4 bigram = a * 128 + b;
        if (!(bits[bigram >> 3] & (1u << (bigram & 7))))
            continue;
        PyObject *keywords = PyList_GET_ITEM(table, bigram); /* borrowed */
        if (keywords == Py_None)
            continue;
        if (!PyTuple_Check(keywords))
            return BAD_TABLE;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(keywords); k++) {
            PyObject *keyword = PyTuple_GET_ITEM(keywords, k);
            if (!PyUnicode_Check(keyword) || !PyUnicode_IS_ASCII(keyword) ||
                PyUnicode_GET_LENGTH(keyword) < 2 || PyUnicode_READ_CHAR(keyword, 0) != a ||
                PyUnicode_READ_CHAR(keyword, 1) != b)
                return BAD_TABLE;
            if (!occurs_at(kind, data, length, i, keyword))
                continue;
            PyObject *item = Py_BuildValue("(nO)", i, keyword);
            if (item == NULL)
                return FAILED;
            int failed = PyList_Append(found, item);
            Py_DECREF(item);
            if (failed)
                return FAILED;
        }
    }
    return OK;
}

static PyObject *occurrences(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *text, *table;
    Py_buffer starts;
    if (!PyArg_ParseTuple(args, "Uy*O!:occurrences", &text, &starts, &PyList_Type, &table))
        return NULL;
    PyObject *found = NULL;
    if (PyUnicode_READY(text) < 0)
        goto done;
    if (PyList_GET_SIZE(table) != TABLE_SIZE || starts.len != TABLE_SIZE / 8) {
        PyErr_SetString(PyExc_ValueError,
                        "occurrences(): table must have 128 * 128 entries, starts as many bits");
        goto done;
    }
    found = PyList_New(0);
    if (found == NULL)
        goto done;
    const uint8_t *bits = (const uint8_t *)starts.buf;
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int ok;
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
        ok = search(PyUnicode_1BYTE_KIND, data, length, bits, table, found);
        break;
    case PyUnicode_2BYTE_KIND:
        ok = search(PyUnicode_2BYTE_KIND, data, length, bits, table, found);
        break;
    default:
        ok = search(PyUnicode_4BYTE_KIND, data, length, bits, table, found);
        break;
    }
    if (ok != OK) {
        if (ok == BAD_TABLE)
            PyErr_SetString(PyExc_ValueError,
                            "occurrences(): each table entry must be None or a tuple of ASCII "
                            "keywords starting with its two characters");
        Py_CLEAR(found);
    }
done:
    PyBuffer_Release(&starts);
    return found;
}

static PyMethodDef methods[] = {
    {"occurrences", occurrences, METH_VARARGS,
     "occurrences(lowered, starts, table) -> [(position, keyword)]: every occurrence of every "
     "keyword of table in lowered, by position then keyword (see statements/_guardcore.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_guardcore",
    .m_doc = "The secret guard's keyword search (see statements/_guardcore.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__guardcore(void) { return PyModule_Create(&module); }
