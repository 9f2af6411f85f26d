/*
 * statements._guardcore: the secret guard's compiled pieces: the keyword search
 * (secrets.keyword_occurrences) and the strings of a parameters value (secret_values.pieces).
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
 *
 *     pieces(value, name_keys, piece_max) -> (texts, names) | None
 *
 * What secret_values.pieces reads of a parsed JSON value, found without its walk's paths,
 * in its walk's order: ``texts`` every string and object key, then each run of two or more
 * adjacent short strings of one object or array joined, in the order the runs close (a
 * piece: 1 to piece_max characters, one run of non-space);
 * ``names`` every key, and every string stored under a key that is one of ``name_keys``
 * once lowercased (those a sibling could take its name from): a superset of the names the
 * walk gives strings, for pieces to test. None (declined) for anything but dicts with str
 * keys, lists, tuples, str and scalars, or nesting deeper than MAX_DEPTH; and for a key
 * that is not ASCII (its lowercase is Python's to say).
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
#if PY_VERSION_HEX < 0x030C0000 /* a legacy string made by a C extension; always ready since */
    if (PyUnicode_READY(text) < 0)
        goto done;
#endif
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

#define MAX_DEPTH 64
#define DECLINE 1

typedef struct {
    PyObject *texts;     /* list */
    PyObject *joins;     /* list: the runs joined, in the order they close */
    PyObject *names;     /* list */
    PyObject *name_keys; /* tuple of lowercase ASCII str */
    Py_ssize_t piece_max;
} Pieces;

/* Whether text is a piece: 1 to piece_max characters, exactly one run of non-space (the
 * walk's 0 < len(v) <= SPLIT_PIECE_MAX and len(v.split()) == 1; split() splits on
 * Py_UNICODE_ISSPACE, as here). */
static int is_piece(PyObject *text, Py_ssize_t piece_max) {
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    if (length == 0 || length > piece_max)
        return 0;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    int runs = 0, in_run = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        int space = Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i));
        if (!space && !in_run && ++runs > 1)
            return 0;
        in_run = !space;
    }
    return runs == 1;
}

/* Whether an ASCII key, lowercased, is one of name_keys. */
static int is_name_key(PyObject *key, PyObject *name_keys) {
    Py_ssize_t length = PyUnicode_GET_LENGTH(key);
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(key);
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(name_keys); k++) {
        PyObject *name = PyTuple_GET_ITEM(name_keys, k);
        if (PyUnicode_GET_LENGTH(name) != length)
            continue;
        const Py_UCS1 *want = PyUnicode_1BYTE_DATA(name);
        Py_ssize_t i = 0;
        while (i < length && Py_TOLOWER(chars[i]) == want[i])
            i++;
        if (i == length)
            return 1;
    }
    return 0;
}

static int append(PyObject *list, PyObject *item) { return PyList_Append(list, item) ? FAILED : OK; }

/* Close a run: joined into texts when it has two or more pieces; emptied either way. */
static int close_run(Pieces *p, PyObject *run) {
    Py_ssize_t size = PyList_GET_SIZE(run);
    if (size > 1) {
        PyObject *empty = PyUnicode_New(0, 0);
        if (empty == NULL)
            return FAILED;
        PyObject *joined = PyUnicode_Join(empty, run);
        Py_DECREF(empty);
        if (joined == NULL)
            return FAILED;
        int ok = append(p->joins, joined);
        Py_DECREF(joined);
        if (ok != OK)
            return ok;
    }
    return size ? PyList_SetSlice(run, 0, size, NULL) ? FAILED : OK : OK;
}

static int pieces_of(Pieces *p, PyObject *value, int depth);

/* Whether a str may be read by kind and data (a legacy string made by an old C API is made
 * ready first; every string is ready from Python 3.12). */
static int ready(PyObject *text) {
#if PY_VERSION_HEX < 0x030C0000
    return PyUnicode_READY(text) < 0 ? FAILED : OK;
#else
    (void)text;
    return OK;
#endif
}

/* One item of a dict (key not NULL) or of a list or tuple (key NULL), as _Walk.value. */
static int item(Pieces *p, PyObject *run, PyObject *key, PyObject *v, int name_key, int depth) {
    if (key != NULL && append(p->texts, key) != OK)
        return FAILED;
    if (PyUnicode_CheckExact(v)) {
        if (ready(v) != OK || append(p->texts, v) != OK)
            return FAILED;
        if (name_key && append(p->names, v) != OK)
            return FAILED;
        if (is_piece(v, p->piece_max))
            return append(run, v);
    }
    int ok = close_run(p, run);
    if (ok != OK || PyUnicode_CheckExact(v))
        return ok;
    return pieces_of(p, v, depth + 1);
}

static int pieces_of(Pieces *p, PyObject *value, int depth) {
    if (PyUnicode_CheckExact(value))
        return append(p->texts, value);
    int container = PyDict_CheckExact(value) || PyList_CheckExact(value) ||
                    PyTuple_CheckExact(value);
    if (!container) {
        if (PyUnicode_Check(value) || PyDict_Check(value) || PyList_Check(value) ||
            PyTuple_Check(value))
            return DECLINE; /* a subclass: its own str(), items() are Python's to call */
        return OK;          /* a scalar: nothing to read */
    }
    if (depth > MAX_DEPTH)
        return DECLINE;
    PyObject *run = PyList_New(0);
    if (run == NULL)
        return FAILED;
    int ok = OK;
    if (PyDict_CheckExact(value)) {
        Py_ssize_t at = 0;
        PyObject *key, *v;
        while (ok == OK && PyDict_Next(value, &at, &key, &v)) {
            if (!PyUnicode_CheckExact(key) || ready(key) != OK) {
                ok = PyErr_Occurred() ? FAILED : DECLINE;
                break;
            }
            if (!PyUnicode_IS_ASCII(key)) {
                ok = DECLINE;
                break;
            }
            if (append(p->names, key) != OK) {
                ok = FAILED;
                break;
            }
            Py_INCREF(key); /* held across the walk below, which runs no Python code, but */
            Py_INCREF(v);   /* a borrowed reference is cheap to make safe */
            ok = item(p, run, key, v, is_name_key(key, p->name_keys), depth);
            Py_DECREF(key);
            Py_DECREF(v);
        }
    } else {
        PyObject *seq = value;
        for (Py_ssize_t i = 0; ok == OK && i < PySequence_Fast_GET_SIZE(seq); i++) {
            PyObject *v = PySequence_Fast_GET_ITEM(seq, i);
            Py_INCREF(v);
            ok = item(p, run, NULL, v, 0, depth);
            Py_DECREF(v);
        }
    }
    if (ok == OK)
        ok = close_run(p, run);
    Py_DECREF(run);
    return ok;
}

static PyObject *pieces(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *value, *name_keys;
    Py_ssize_t piece_max;
    if (!PyArg_ParseTuple(args, "OO!n:pieces", &value, &PyTuple_Type, &name_keys, &piece_max))
        return NULL;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(name_keys); k++) {
        PyObject *name = PyTuple_GET_ITEM(name_keys, k);
        if (PyUnicode_Check(name) && ready(name) != OK)
            return NULL;
        if (!PyUnicode_Check(name) || !PyUnicode_IS_ASCII(name)) {
            PyErr_SetString(PyExc_ValueError, "pieces(): name_keys must be ASCII str");
            return NULL;
        }
    }
    Pieces p = {PyList_New(0), PyList_New(0), PyList_New(0), name_keys, piece_max};
    int ok = p.texts == NULL || p.joins == NULL || p.names == NULL ? FAILED
                                                                   : pieces_of(&p, value, 0);
    if (ok == OK) {
        Py_ssize_t end = PyList_GET_SIZE(p.texts);
        ok = PyList_SetSlice(p.texts, end, end, p.joins) ? FAILED : OK; /* the runs last */
    }
    Py_XDECREF(p.joins);
    if (ok == OK)
        return Py_BuildValue("(NN)", p.texts, p.names);
    Py_XDECREF(p.texts);
    Py_XDECREF(p.names);
    if (ok == FAILED)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"occurrences", occurrences, METH_VARARGS,
     "occurrences(lowered, starts, table) -> [(position, keyword)]: every occurrence of every "
     "keyword of table in lowered, by position then keyword (see statements/_guardcore.c)."},
    {"pieces", pieces, METH_VARARGS,
     "pieces(value, name_keys, piece_max) -> (texts, names) or None: what "
     "secret_values.pieces reads of a parsed JSON value (see statements/_guardcore.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_guardcore",
    .m_doc = "The secret guard's compiled pieces (see statements/_guardcore.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__guardcore(void) { return PyModule_Create(&module); }
