/*
 * server._facetcore: the fast path of server.search_index.free_facets for an AgentAction,
 * over the statement's wire bytes instead of its decoded fields.
 *
 *     action_facets(statement, key_id) -> the FreeFacets fields (a tuple) | None
 *
 * It answers only when the bytes are plainly an action it can read with certainty: the
 * statement holds a header and an action and nothing else, no field that is not repeated
 * occurs twice (protobuf would merge or overwrite), every field number is one the schema
 * defines for its message, with the wire type the schema gives it, and every string the
 * facets show (and key_id) is printable ASCII without a quote or a backslash (json writes it
 * as it is), a negative client time (which free_facets refuses) or an undefined phase. Any
 * other statement answers None, and free_facets in Python makes the facets: so the bytes it
 * gives are always those free_facets would give (tests/test_facet_core.py holds the two
 * equal on generated statements, the declined ones included).
 *
 * Field numbers (proto/affidavit.proto): Statement header 1, action 13; Header statement_id 1,
 * issuer 2, session_id 3, sequence 4, client_time_ms 6 (5, 7, 8 skipped); AgentAction phase 1,
 * action_id 2, grant_ids 5 (repeated), approval_id 7, credential 9, operation 10, outcome 11,
 * correlation 12 (3, 4, 6 (repeated), 8 skipped); CredentialRef key_id 3, token_jti 4;
 * Operation tool_name 2, resource 5 (redactions 9 repeated); Outcome result_digest 3,
 * effect_ref 4; Correlation trace_id 1.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include "../statements/_wire.h"
#include <string.h>

#define VARINT 0
#define LEN 2

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} Span; /* a string field's bytes (n = 0: absent or empty, as proto3 reads both) */

typedef struct {
    int number;    /* field number */
    int wire;      /* its wire type */
    int repeated;  /* may occur more than once */
    Span *text;    /* where its string goes (a LEN field read), or NULL */
    uint64_t *num; /* where its varint goes, or NULL */
} Field;

/*
 * Read a message's fields into the places `fields` gives (count of them); a field whose
 * place is NULL is skipped. on_repeated, when not NULL, receives each occurrence of the
 * repeated LEN field `collect` (it returns 1, 0 to decline, -1 with an exception set).
 * Returns 1 when read, 0 to decline or on that exception.
 */
static int read_message(const uint8_t *p, const uint8_t *end, const Field *fields, int count,
                        int collect, int (*on_repeated)(void *, Span), void *ctx) {
    uint32_t seen = 0; /* field numbers here are all below 32 */
    while (p < end) {
        uint64_t tag;
        if (!read_varint(&p, end, &tag))
            return 0;
        if (tag >> 3 > 31)
            return 0; /* a number no message here defines */
        int number = (int)(tag >> 3), wire = (int)(tag & 7);
        const Field *f = NULL;
        for (int i = 0; i < count; i++)
            if (fields[i].number == number) {
                f = &fields[i];
                break;
            }
        if (f == NULL || f->wire != wire)
            return 0;
        if (!f->repeated) {
            if (seen & (1u << number))
                return 0;
            seen |= 1u << number;
        }
        if (wire == VARINT) {
            uint64_t v;
            if (!read_varint(&p, end, &v))
                return 0;
            if (f->num != NULL)
                *f->num = v;
        } else {
            uint64_t size;
            if (!read_varint(&p, end, &size) || size > (uint64_t)(end - p))
                return 0;
            Span s = {p, (Py_ssize_t)size};
            p += size;
            if (f->text != NULL)
                *f->text = s;
            if (number == collect && on_repeated != NULL && on_repeated(ctx, s) <= 0)
                return 0;
        }
    }
    return 1;
}

/* Whether json writes s as it is between quotes: printable ASCII, no quote, no backslash. */
static int plain(Span s) {
    for (Py_ssize_t i = 0; i < s.n; i++) {
        uint8_t c = s.p[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

/* An output buffer growing as needed. */
typedef struct {
    char *data;
    Py_ssize_t len, cap;
    int failed;
} Buf;

static void put(Buf *b, const void *data, Py_ssize_t n) {
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        Py_ssize_t cap = (b->len + n) * 2 + 64;
        char *grown = PyMem_Realloc(b->data, (size_t)cap);
        if (grown == NULL) {
            b->failed = 1;
            PyErr_NoMemory();
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, (size_t)n);
    b->len += n;
}

static void puts_(Buf *b, const char *text) { put(b, text, (Py_ssize_t)strlen(text)); }

static void put_span(Buf *b, Span s) { put(b, s.p, s.n); }

/* A facet's list as json writes it: ["value"], or [] for an empty value. */
static void put_list1(Buf *b, Span s) {
    if (s.n == 0) {
        puts_(b, "[]");
        return;
    }
    puts_(b, "[\"");
    put_span(b, s);
    puts_(b, "\"]");
}

static int compare(Span a, Span b) {
    Py_ssize_t n = a.n < b.n ? a.n : b.n;
    int c = memcmp(a.p, b.p, (size_t)n);
    return c ? c : (a.n > b.n) - (a.n < b.n);
}

/* The distinct non-empty values among three, sorted (all ASCII: byte order is code point
   order, as Python sorts them); how many. */
static int distinct_sorted(const Span in[3], Span out[3]) {
    int n = 0;
    for (int i = 0; i < 3; i++) {
        if (in[i].n == 0)
            continue;
        int at = 0;
        while (at < n && compare(out[at], in[i]) < 0)
            at++;
        if (at < n && compare(out[at], in[i]) == 0)
            continue; /* already there */
        memmove(&out[at + 1], &out[at], sizeof(Span) * (size_t)(n - at));
        out[at] = in[i];
        n++;
    }
    return n;
}

typedef struct {
    PyObject *list; /* grant ids, as str */
} Grants;

static int add_grant(void *ctx, Span s) {
    PyObject *text = PyUnicode_DecodeUTF8((const char *)s.p, s.n, "strict");
    if (text == NULL) {
        PyErr_Clear(); /* not UTF-8: protobuf would have refused it; decline */
        return 0;
    }
    int failed = PyList_Append(((Grants *)ctx)->list, text);
    Py_DECREF(text);
    return failed ? -1 : 1;
}

static PyObject *index_key(const char *field, Span value) {
    /* x/f/<field>\0<value>\0 */
    Py_ssize_t fn = (Py_ssize_t)strlen(field);
    PyObject *out = PyBytes_FromStringAndSize(NULL, 4 + fn + 1 + value.n + 1);
    if (out == NULL)
        return NULL;
    char *d = PyBytes_AS_STRING(out);
    memcpy(d, "x/f/", 4);
    memcpy(d + 4, field, (size_t)fn);
    d[4 + fn] = 0;
    if (value.n)
        memcpy(d + 5 + fn, value.p, (size_t)value.n);
    d[5 + fn + value.n] = 0;
    return out;
}

static PyObject *text_of(Buf *b) {
    if (b->failed)
        return NULL;
    return PyUnicode_DecodeASCII(b->data, b->len, "strict");
}

static PyObject *str_of(Span s) { return PyUnicode_DecodeASCII((const char *)s.p, s.n, "strict"); }

static PyObject *action_facets(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "action_facets(statement: bytes, key_id: str)");
        return NULL;
    }
    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    const uint8_t *end = data + PyBytes_GET_SIZE(args[0]);
    if (!PyUnicode_IS_ASCII(args[1]))
        Py_RETURN_NONE;
    Span signed_key = {PyUnicode_1BYTE_DATA(args[1]), PyUnicode_GET_LENGTH(args[1])};

    Span header = {0}, action = {0};
    Field statement_fields[] = {
        {1, LEN, 0, &header, NULL},
        {13, LEN, 0, &action, NULL},
    };
    if (!read_message(data, end, statement_fields, 2, 0, NULL, NULL) || !header.p || !action.p)
        Py_RETURN_NONE;

    Span statement_id = {0}, issuer = {0}, session_id = {0};
    uint64_t sequence = 0, client_time = 0;
    Field header_fields[] = {
        {1, LEN, 0, &statement_id, NULL}, {2, LEN, 0, &issuer, NULL},
        {3, LEN, 0, &session_id, NULL},   {4, VARINT, 0, NULL, &sequence},
        {5, LEN, 0, NULL, NULL},          {6, VARINT, 0, NULL, &client_time},
        {7, VARINT, 0, NULL, NULL},       {8, LEN, 0, NULL, NULL},
    };
    if (!read_message(header.p, header.p + header.n, header_fields, 8, 0, NULL, NULL))
        Py_RETURN_NONE;

    uint64_t phase = 0;
    Span action_id = {0}, approval_id = {0}, credential = {0}, operation = {0}, outcome = {0},
         correlation = {0};
    Grants grants = {PyList_New(0)};
    if (grants.list == NULL)
        return NULL;
    Field action_fields[] = {
        {1, VARINT, 0, NULL, &phase},   {2, LEN, 0, &action_id, NULL},
        {3, LEN, 0, NULL, NULL},        {4, LEN, 0, NULL, NULL},
        {5, LEN, 1, NULL, NULL},        {6, LEN, 1, NULL, NULL},
        {7, LEN, 0, &approval_id, NULL}, {8, LEN, 0, NULL, NULL},
        {9, LEN, 0, &credential, NULL}, {10, LEN, 0, &operation, NULL},
        {11, LEN, 0, &outcome, NULL},   {12, LEN, 0, &correlation, NULL},
    };
    int ok = read_message(action.p, action.p + action.n, action_fields, 12, 5, add_grant, &grants);
    if (!ok || PyErr_Occurred()) {
        Py_DECREF(grants.list);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }

    Span cred_key = {0}, token_jti = {0}, tool = {0}, resource = {0}, result = {0}, effect = {0},
         trace = {0};
    Field credential_fields[] = {
        {1, LEN, 0, NULL, NULL},      {2, LEN, 0, NULL, NULL}, {3, LEN, 0, &cred_key, NULL},
        {4, LEN, 0, &token_jti, NULL}, {5, LEN, 0, NULL, NULL},
    };
    Field operation_fields[] = {
        {1, LEN, 0, NULL, NULL},     {2, LEN, 0, &tool, NULL},   {3, LEN, 0, NULL, NULL},
        {4, LEN, 0, NULL, NULL},     {5, LEN, 0, &resource, NULL}, {6, VARINT, 0, NULL, NULL},
        {7, LEN, 0, NULL, NULL},     {8, LEN, 0, NULL, NULL},    {9, LEN, 1, NULL, NULL},
    };
    Field outcome_fields[] = {
        {1, VARINT, 0, NULL, NULL},
        {2, LEN, 0, NULL, NULL},
        {3, LEN, 0, &result, NULL},
        {4, LEN, 0, &effect, NULL},
    };
    Field correlation_fields[] = {
        {1, LEN, 0, &trace, NULL},
        {2, LEN, 0, NULL, NULL},
        {3, LEN, 0, NULL, NULL},
    };
    if (!read_message(credential.p, credential.p + credential.n, credential_fields, 5, 0, NULL,
                      NULL) ||
        !read_message(operation.p, operation.p + operation.n, operation_fields, 9, 0, NULL,
                      NULL) ||
        !read_message(outcome.p, outcome.p + outcome.n, outcome_fields, 4, 0, NULL, NULL) ||
        !read_message(correlation.p, correlation.p + correlation.n, correlation_fields, 3, 0,
                      NULL, NULL) ||
        (int64_t)client_time < 0 || phase > 2) {
        Py_DECREF(grants.list);
        Py_RETURN_NONE;
    }
    /* approval_id is shown by no record, but made a str here: plain too, to keep it simple. */
    const Span shown[] = {statement_id, issuer, session_id, action_id, cred_key, token_jti,
                          tool,         resource, result,  effect,    trace,    signed_key,
                          approval_id};
    for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++)
        if (!plain(shown[i])) {
            Py_DECREF(grants.list);
            Py_RETURN_NONE;
        }

    Span candidates[3] = {signed_key, cred_key, token_jti}, key[3];
    int keys_n = distinct_sorted(candidates, key);
    char number[96];
    Buf head = {0}, actor = {0}, middle = {0}, tail = {0};

    puts_(&head, ",\"statement_id\":\"");
    put_span(&head, statement_id);
    puts_(&head, "\",\"kind\":\"action\",\"issuer\":\"");
    put_span(&head, issuer);
    snprintf(number, sizeof number, "\",\"client_time_ms\":%lld,\"session\":\"",
             (long long)(int64_t)client_time);
    puts_(&head, number);
    put_span(&head, session_id);
    puts_(&head, "\"");

    puts_(&actor, ",\"actor\":");
    put_list1(&actor, issuer);

    puts_(&middle, ",\"key\":[");
    for (int i = 0; i < keys_n; i++) {
        puts_(&middle, i ? ",\"" : "\"");
        put_span(&middle, key[i]);
        puts_(&middle, "\"");
    }
    puts_(&middle, "],\"resource\":");
    put_list1(&middle, resource);
    puts_(&middle, ",\"tool\":");
    put_list1(&middle, tool);
    puts_(&middle, ",\"trace\":");
    put_list1(&middle, trace);
    puts_(&middle, ",\"action\":");
    put_list1(&middle, action_id);
    puts_(&middle, ",\"subject\":[]");

    puts_(&tail, ",\"effect\":");
    put_list1(&tail, effect);
    puts_(&tail, ",\"result\":");
    put_list1(&tail, result);
    snprintf(number, sizeof number, ",\"phase\":%d,\"sequence\":", (int)phase);
    puts_(&tail, number);
    snprintf(number, sizeof number, "%llu}", (unsigned long long)sequence);
    puts_(&tail, number);

    PyObject *out = NULL, *keys = NULL, *ticket_chains = NULL;
    PyObject *texts[4] = {text_of(&head), text_of(&actor), text_of(&middle), text_of(&tail)};
    PyMem_Free(head.data), PyMem_Free(actor.data), PyMem_Free(middle.data);
    PyMem_Free(tail.data);
    if (!texts[0] || !texts[1] || !texts[2] || !texts[3])
        goto done;

    /* The index keys, in free_facets' order: actor, key, resource, tool, trace, action,
       (subject: none), effect, result, then session, statement and the time. */
    PyObject *items[16];
    int n = 0;
    struct {
        const char *field;
        Span value;
    } one[] = {{"actor", issuer}, {"resource", resource}, {"tool", tool}, {"trace", trace},
               {"action", action_id}, {"effect", effect}, {"result", result}};
    for (size_t i = 0; i < sizeof one / sizeof one[0]; i++) {
        if (i == 1) /* the keys come after the actor */
            for (int k = 0; k < keys_n; k++)
                if ((items[n++] = index_key("key", key[k])) == NULL)
                    goto items_failed;
        if (one[i].value.n && (items[n++] = index_key(one[i].field, one[i].value)) == NULL)
            goto items_failed;
    }
    if ((items[n++] = index_key("session", session_id)) == NULL ||
        (items[n++] = index_key("statement", statement_id)) == NULL)
        goto items_failed;
    {
        uint8_t time_key[12] = {'x', '/', 't', '/'};
        for (int i = 0; i < 8; i++)
            time_key[4 + i] = (uint8_t)(client_time >> (56 - 8 * i));
        if ((items[n++] = PyBytes_FromStringAndSize((const char *)time_key, 12)) == NULL)
            goto items_failed;
    }
    keys = PyTuple_New(n);
    if (keys == NULL) {
        for (int i = 0; i < n; i++)
            Py_DECREF(items[i]);
        goto done;
    }
    for (int i = 0; i < n; i++)
        PyTuple_SET_ITEM(keys, i, items[i]);
    ticket_chains = PyList_AsTuple(grants.list);
    PyObject *approval = str_of(approval_id);
    if (ticket_chains == NULL || approval == NULL) {
        Py_XDECREF(approval);
        goto done;
    }
    out = Py_BuildValue("(NNNNO()()()O()NN)", texts[0], texts[1], texts[2], texts[3], Py_None,
                        ticket_chains, approval, keys);
    /* Py_BuildValue took texts, approval and keys (N); ticket_chains (O) is released below. */
    texts[0] = texts[1] = texts[2] = texts[3] = NULL;
    keys = NULL;
    goto done;
items_failed:
    n--; /* the slot that failed holds NULL */
    for (int i = 0; i < n; i++)
        Py_DECREF(items[i]);
done:
    for (int i = 0; i < 4; i++)
        Py_XDECREF(texts[i]);
    Py_XDECREF(keys);
    Py_XDECREF(ticket_chains);
    Py_DECREF(grants.list);
    return out;
}

static PyMethodDef methods[] = {
    {"action_facets", (PyCFunction)(void (*)(void))action_facets, METH_FASTCALL,
     "The FreeFacets fields of a plain AgentAction statement, or None (see the module doc)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_facetcore",
    "server.search_index.free_facets' fast path for actions (see server/_facetcore.c).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__facetcore(void) { return PyModule_Create(&module); }
