/*
 * statements._walkcore: the fast path of statements.schema_walk.walk, over a statement's
 * wire bytes instead of its decoded fields.
 *
 *     strings(data, plan) -> (texts, parameters_at) | None
 *
 * It reads what the walk would hand the secret guard, in the walk's order, when the bytes
 * are plainly clean; and answers None whenever it is not certain of that — an unknown field,
 * a bound broken, a field out of field-number order or seen twice, a map, a wire type the
 * schema does not give the field — so that the walk in Python runs and names the problem.
 * So it never decides a verdict of its own: it only ever says "exactly what the Python walk
 * would find, found faster", and the rules (bounds, kinds, enum values) come from the plan,
 * which schema_walk builds from the same steps as its own walk.
 *
 * plan: a list indexed by field number, of (kind, wire type, repeated, limit, child plan,
 * enum numbers, oneof) for each field of the message type and None for numbers it lacks;
 * kind numbered as schema_walk's step kinds, limit the most characters of a string (or
 * bytes of a bytes field, or item), child plan the message field's own plan (or None),
 * enum numbers a frozenset (or None), oneof the index of the field's oneof in its message
 * (or -1). Field-number order is the walk's order (schema_walk
 * plans steps so), and a clean encoder writes fields so.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include "_wire.h"

/* schema_walk's step kinds */
#define K_STRING 0
#define K_PARAMETERS 1
#define K_BYTES 2
#define K_ENUM 3
#define K_MESSAGE 4
#define K_MAP 5
#define K_SCALARS 7

#define MAX_REPEATED 64 /* schema_walk.MAX_REPEATED (exported; a test holds them equal) */
#define MAX_DEPTH 64    /* deeper: leave it to Python */

#define FALLBACK 0
#define CLEAN 1
#define FAILED -1 /* a Python exception is set */

/* The element count of a packed run of scalars of wire type `wire`, or -1 if malformed. */
static Py_ssize_t packed_count(const uint8_t *p, const uint8_t *end, int wire) {
    Py_ssize_t n = end - p;
    if (wire == 5)
        return n % 4 ? -1 : n / 4;
    if (wire == 1)
        return n % 8 ? -1 : n / 8;
    Py_ssize_t count = 0;
    uint64_t v;
    while (p < end) {
        if (!read_varint(&p, end, &v))
            return -1;
        count++;
    }
    return count;
}

/* Whether an enum value (a varint, read as protobuf reads int32) is one the schema defines. */
static int enum_defined(uint64_t raw, PyObject *numbers) {
    if (numbers == Py_None)
        return FALLBACK;
    PyObject *value = PyLong_FromLong((long)(int32_t)(uint32_t)raw);
    if (value == NULL)
        return FAILED;
    int found = PySet_Contains(numbers, value);
    Py_DECREF(value);
    return found < 0 ? FAILED : found ? CLEAN : FALLBACK;
}

static int walk(const uint8_t *p, const uint8_t *end, PyObject *plan, PyObject *texts,
                Py_ssize_t *parameters_at, int depth) {
    if (!PyList_Check(plan) || depth > MAX_DEPTH)
        return FALLBACK;
    uint64_t last = 0, oneofs = 0;
    Py_ssize_t count = 0;
    while (p < end) {
        uint64_t key, n = 0; /* each path that reads n sets it first; -Wall cannot tell */
        if (!read_varint(&p, end, &key))
            return FALLBACK;
        uint64_t number = key >> 3;
        int wire = (int)(key & 7);
        if (number == 0 || number > 536870911 || number < last)
            return FALLBACK;
        if (number >= (uint64_t)PyList_GET_SIZE(plan))
            return FALLBACK; /* a field the schema lacks */
        /* borrowed: no Python code runs during the walk, so nothing changes the plan */
        PyObject *spec = PyList_GET_ITEM(plan, (Py_ssize_t)number);
        if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 7)
            return FALLBACK; /* None: a field the schema lacks */
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
        long want = PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
        PyObject *flag = PyTuple_GET_ITEM(spec, 2);
        int repeated = flag == Py_True ? 1 : flag == Py_False ? 0 : PyObject_IsTrue(flag);
        /* the limit bounds strings and bytes only: read for those (below) */
        long limit = kind == K_STRING || kind == K_PARAMETERS || kind == K_BYTES
                         ? PyLong_AsLong(PyTuple_GET_ITEM(spec, 3))
                         : 0;
        PyObject *child = PyTuple_GET_ITEM(spec, 4);
        PyObject *numbers = PyTuple_GET_ITEM(spec, 5);
        long oneof = PyLong_AsLong(PyTuple_GET_ITEM(spec, 6));
        if (repeated < 0 || ((kind == -1 || want == -1 || limit == -1 || oneof == -1) &&
                             PyErr_Occurred()))
            return FAILED;
        if (number == last) {
            if (!repeated)
                return FALLBACK; /* seen twice: the decoder keeps the last, or merges */
        } else {
            count = 0;
            last = number;
        }
        if (oneof >= 0) {
            if (oneof >= 64 || (oneofs >> oneof) & 1)
                return FALLBACK; /* a second member: the decoder keeps the last */
            oneofs |= (uint64_t)1 << oneof;
        }
        if (kind == K_MAP)
            return FALLBACK;
        const uint8_t *value = NULL, *value_end = NULL;
        if (wire == 2) {
            if (!read_varint(&p, end, &n) || n > (uint64_t)(end - p))
                return FALLBACK;
            value = p;
            value_end = p + n;
            p = value_end;
        } else if (wire == 0) {
            if (!read_varint(&p, end, &n))
                return FALLBACK;
        } else if (wire == 1 || wire == 5) {
            size_t size = wire == 1 ? 8 : 4;
            if ((size_t)(end - p) < size)
                return FALLBACK;
            p += size;
        } else {
            return FALLBACK; /* groups: nothing here uses them */
        }
        int packed = repeated && (kind == K_ENUM || kind == K_SCALARS) && wire == 2 && want != 2;
        if (wire != want && !packed)
            return FALLBACK; /* a decoder keeps it as an unknown field */
        if (packed) {
            Py_ssize_t items = packed_count(value, value_end, (int)want);
            if (items < 0)
                return FALLBACK;
            count += items;
        } else {
            count++;
        }
        if (repeated && count > MAX_REPEATED)
            return FALLBACK;
        switch (kind) {
        case K_STRING: {
            Py_ssize_t size = value_end - value;
            if (size == 0 && !repeated)
                break; /* the walk skips an empty string (a repeated one's items are kept) */
            PyObject *text = PyUnicode_DecodeUTF8((const char *)value, size, NULL);
            if (text == NULL) {
                PyErr_Clear();
                return FALLBACK;
            }
            if (PyUnicode_GET_LENGTH(text) > limit) {
                Py_DECREF(text);
                return FALLBACK;
            }
            int failed = PyList_Append(texts, text);
            Py_DECREF(text);
            if (failed)
                return FAILED;
            break;
        }
        case K_PARAMETERS: {
            if (value == value_end)
                break;
            PyObject *text = PyUnicode_DecodeUTF8((const char *)value, value_end - value, NULL);
            if (text == NULL) {
                PyErr_Clear();
                return FALLBACK;
            }
            Py_ssize_t characters = PyUnicode_GET_LENGTH(text);
            Py_DECREF(text);
            if (characters > limit)
                return FALLBACK;
            *parameters_at = PyList_GET_SIZE(texts);
            break;
        }
        case K_BYTES:
            if (value_end - value > limit)
                return FALLBACK;
            break;
        case K_ENUM: {
            if (packed) {
                const uint8_t *q = value;
                while (q < value_end) {
                    if (!read_varint(&q, value_end, &n))
                        return FALLBACK;
                    int ok = enum_defined(n, numbers);
                    if (ok != CLEAN)
                        return ok;
                }
            } else {
                /* zero too: a proto2 (closed) enum need not define it, and its decoder keeps
                 * an undefined value as an unknown field, which the walk refuses */
                int ok = enum_defined(n, numbers);
                if (ok != CLEAN)
                    return ok;
            }
            break;
        }
        case K_MESSAGE: {
            int ok = walk(value, value_end, child, texts, parameters_at, depth + 1);
            if (ok != CLEAN)
                return ok;
            break;
        }
        case K_SCALARS:
            break;
        default:
            return FALLBACK;
        }
    }
    return CLEAN;
}

static PyObject *strings(PyObject *self, PyObject *args) {
    Py_buffer data;
    PyObject *plan;
    if (!PyArg_ParseTuple(args, "y*O:strings", &data, &plan))
        return NULL;
    PyObject *texts = PyList_New(0);
    if (texts == NULL) {
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_ssize_t parameters_at = -1;
    const uint8_t *start = (const uint8_t *)data.buf;
    int ok = walk(start, start + data.len, plan, texts, &parameters_at, 0);
    PyBuffer_Release(&data);
    if (ok != CLEAN) {
        Py_DECREF(texts);
        if (ok == FAILED)
            return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(Nn)", texts, parameters_at);
}

static PyMethodDef methods[] = {
    {"strings", strings, METH_VARARGS,
     "strings(data, plan) -> (texts, parameters_at) or None: what schema_walk.walk finds in a "
     "statement's wire bytes when they are plainly clean; None to leave it to the walk."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_walkcore",
    "The fast path of statements.schema_walk.walk (see statements/_walkcore.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__walkcore(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "MAX_REPEATED", MAX_REPEATED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
