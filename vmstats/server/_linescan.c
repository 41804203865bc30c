/*
 * Record lines of any spelling read into held rows in C, a payload at a time.
 *
 * The agent's spelling is matched for a whole payload by one regex (parse.py), but every
 * other spelling the protocol allows -- tags and fields in any order, extra tags, i/u
 * typed values, ms/us/ns stamps, as InfluxDB clients and Telegraf write them -- needs a
 * regex with a group per field and a reordering of those groups per line: ~1.6 us a
 * record in Python against the agent's ~1.15.  Here each line is read once, left to
 * right, and its held row written straight into a bytes object.
 *
 * The grammar is exactly the one parse.py's spelling regexes (build_shape) admit, with
 * the field table's limits handed over by parse.py (line_spec), so the facts stay in
 * protocol.FIELDS.  scan() reads the lines that are records it can prove valid, of a
 * known VM id, stamped inside the window, skips comments, and hands the others back, whole,
 * for parse.py's regexes and decoder, which name every reject: one bad line among a
 * payload's hundreds (a parser joins many senders' datagrams) costs the regexes that line,
 * not the payload.  A payload with more such lines than proven ones it leaves to them
 * entirely (None), as the first payload of new VM ids is.
 * parse.py is the reference: the tests hold both to the same rows on every spelling
 * and on arbitrary damage, and the server runs without this module if it was not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* What passes between this module and parse.py (its functions, their arguments, what they
 * answer), numbered: raised with every change to it, here and in parse.py's
 * LINESCAN_VERSION, so that a build of an older source is refused at import (native.py). */
#define MODULE_VERSION 1

/* Room in the fixed arrays; the limits themselves come from parse.line_spec. */
#define MAX_FIELDS 32
#define MAX_EXTRA_TAGS 32
#define TAGS_SEPARATOR ';'
#define SPEC_NAME "vmstats.server._linescan.spec"
/* scan()'s answer: vms, tss, rows, seqs, and the lines left to parse.py. */
#define COLUMNS 5
/* Lines scan() leaves beyond those it reads before it leaves the whole payload (None): a
 * payload of new VM ids is judged by parse.py at once, not after a pass that copies it. */
#define LEFT_MARGIN 8

/* One field's name and the values parse.py's regexes admit for it (parse.line_spec). */
typedef struct {
    char name[32];
    Py_ssize_t name_len;
    int zero_ok;              /* 0 is in range (the lower limit is 0); else a value needs a
                               * nonzero digit (a decimal range then starts at its step) */
    int typed_digits;         /* i/u typed: [1-9] then at most this many digits in all */
    char typed_top[24];       /* ...or exactly this ("" none): a top that is a power of 10 */
    int untyped_int;          /* untyped values are integers (else decimals) */
    int untyped_digits;       /* untyped: at most this many digits before any point */
    char float_top[24];       /* untyped decimals: this, with a fraction of zeros only */
    int required;
    Py_ssize_t fraction;      /* untyped decimals: at most this many digits after the point */
} Field;

typedef struct {
    Py_ssize_t count;
    Py_ssize_t seq;           /* the seq field's index, -1 if none */
    unsigned long required;   /* a bit per required field */
    Field fields[MAX_FIELDS];
    /* protocol's limits: the longest VM id, host, tag key and value; extra tags; fraction */
    Py_ssize_t vm_id, host, extra_tags, tag_key, tag_value, fraction;
} Spec;

typedef struct {
    const char *p;
    Py_ssize_t n;
} Span;

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int
is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* [A-Za-z0-9._:%-]{1,limit} */
static int
vm_ok(Span v, Py_ssize_t limit)
{
    if (v.n < 1 || v.n > limit)
        return 0;
    for (Py_ssize_t i = 0; i < v.n; i++) {
        char c = v.p[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != ':' && c != '%' && c != '-')
            return 0;
    }
    return 1;
}

/* [A-Za-z0-9][A-Za-z0-9._-]{0,limit-1}: the host's and the extra tags' values */
static int
name_ok(Span v, Py_ssize_t limit)
{
    if (v.n < 1 || v.n > limit || !is_alnum(v.p[0]))
        return 0;
    for (Py_ssize_t i = 1; i < v.n; i++) {
        char c = v.p[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-')
            return 0;
    }
    return 1;
}

/* [a-z][a-z0-9_]{0,limit-1}, and neither vm nor host (protocol.check_tags) */
static int
tag_key_ok(Span k, Py_ssize_t limit)
{
    if (k.n < 1 || k.n > limit || !(k.p[0] >= 'a' && k.p[0] <= 'z'))
        return 0;
    for (Py_ssize_t i = 1; i < k.n; i++) {
        char c = k.p[i];
        if (!((c >= 'a' && c <= 'z') || is_digit(c) || c == '_'))
            return 0;
    }
    return 1;
}

static int
span_is(Span s, const char *text)
{
    Py_ssize_t n = (Py_ssize_t)strlen(text);
    return s.n == n && memcmp(s.p, text, n) == 0;
}

static int
all_digits(const char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (!is_digit(p[i]))
            return 0;
    return 1;
}

/* An integer without leading zeros, at most `digits` long, "0" if zero_ok, or `top`. */
static int
integer_ok(Span v, int zero_ok, int digits, const char *top)
{
    if (v.n < 1 || !all_digits(v.p, v.n))
        return 0;
    if (v.n == 1 && v.p[0] == '0')
        return zero_ok;
    if (v.p[0] != '0' && v.n <= digits)
        return 1;
    return top[0] != '\0' && span_is(v, top);
}

/* \d{1,digits}(\.\d{0,fraction})? or top(\.0{0,fraction})?, with a nonzero digit in it
 * unless zero_ok (parse._float_pattern's lookahead) */
static int
decimal_ok(Span v, const Field *f, Py_ssize_t most)
{
    const char *point = memchr(v.p, '.', v.n);
    Py_ssize_t whole = point ? point - v.p : v.n;
    Py_ssize_t fraction = point ? v.n - whole - 1 : 0;
    if (f->fraction < most)
        most = f->fraction;
    if (whole < 1 || fraction > most || !all_digits(v.p, whole))
        return 0;
    if (!f->zero_ok) {
        Py_ssize_t i = 0;
        while (i < v.n && (v.p[i] == '0' || v.p[i] == '.'))
            i++;
        if (i == v.n)
            return 0;
    }
    if (whole <= f->untyped_digits)
        return all_digits(v.p + whole + 1, fraction);
    if (f->float_top[0] == '\0' || !span_is((Span){v.p, whole}, f->float_top))
        return 0;
    for (Py_ssize_t i = 0; i < fraction; i++)
        if (point[1 + i] != '0')
            return 0;
    return 1;
}

/* A field's value as sent, checked; *digits gets what the row holds (no i/u suffix). */
static int
value_ok(Span v, const Field *f, Py_ssize_t fraction, Span *digits)
{
    if (v.n < 1)
        return 0;
    char last = v.p[v.n - 1];
    if (last == 'i' || last == 'u') {
        *digits = (Span){v.p, v.n - 1};
        return integer_ok(*digits, f->zero_ok, f->typed_digits, f->typed_top);
    }
    *digits = v;
    if (f->untyped_int)
        return integer_ok(v, f->zero_ok, f->untyped_digits, "");
    return decimal_ok(v, f, fraction);
}

/* The end of a tag or a field from p: the next ',' or ' ' (a line holds no '\n'). */
static const char *
token_end(const char *p, const char *end)
{
    while (p < end && *p != ',' && *p != ' ')
        p++;
    return p;
}

typedef struct {
    Span vm, host, extra_keys[MAX_EXTRA_TAGS], extra_values[MAX_EXTRA_TAGS];
    int extras, has_vm, has_host;
    Span values[MAX_FIELDS];
    unsigned long sent;
    long long ts;
} Line;

static int
span_less(Span a, Span b)
{
    int c = memcmp(a.p, b.p, a.n < b.n ? a.n : b.n);
    return c < 0 || (c == 0 && a.n < b.n);
}

/* Read one line (no '\n' in it) into *out; 0 if it is not a record parse.py's regexes admit. */
static int
read_line(const char *p, const char *end, const Spec *spec, Line *out)
{
    static const char head[] = "vmstats,";
    if (end > p && end[-1] == '\r')
        end--;
    if (end - p < (Py_ssize_t)sizeof head - 1 || memcmp(p, head, sizeof head - 1) != 0)
        return 0;
    p += sizeof head - 1;
    out->extras = out->has_vm = out->has_host = 0;
    for (;;) {  /* tags: key=value, up to the space */
        const char *stop = token_end(p, end);
        const char *eq = memchr(p, '=', stop - p);
        if (eq == NULL || stop == end)
            return 0;
        Span key = {p, eq - p}, value = {eq + 1, stop - eq - 1};
        if (span_is(key, "vm")) {
            if (out->has_vm || !vm_ok(value, spec->vm_id))
                return 0;
            out->vm = value;
            out->has_vm = 1;
        } else if (span_is(key, "host")) {
            if (out->has_host || !name_ok(value, spec->host))
                return 0;
            out->host = value;
            out->has_host = 1;
        } else {
            if (out->extras == spec->extra_tags || !tag_key_ok(key, spec->tag_key)
                    || !name_ok(value, spec->tag_value))
                return 0;
            for (int i = 0; i < out->extras; i++)
                if (out->extra_keys[i].n == key.n && memcmp(out->extra_keys[i].p, key.p, key.n) == 0)
                    return 0;
            out->extra_keys[out->extras] = key;
            out->extra_values[out->extras++] = value;
        }
        p = stop + 1;
        if (*stop == ' ')
            break;
    }
    if (!out->has_vm)
        return 0;
    out->sent = 0;
    for (;;) {  /* fields: name=value, up to the space before the stamp */
        const char *stop = token_end(p, end);
        const char *eq = memchr(p, '=', stop - p);
        if (eq == NULL || stop == end)
            return 0;
        Span name = {p, eq - p}, value = {eq + 1, stop - eq - 1};
        Py_ssize_t i = 0;
        while (i < spec->count && !(spec->fields[i].name_len == name.n
                                    && memcmp(spec->fields[i].name, name.p, name.n) == 0))
            i++;
        if (i == spec->count || (out->sent >> i & 1)
                || !value_ok(value, &spec->fields[i], spec->fraction, &out->values[i]))
            return 0;
        out->sent |= 1UL << i;
        p = stop + 1;
        if (*stop == ' ')
            break;
    }
    if ((out->sent & spec->required) != spec->required)
        return 0;
    /* [1-9]\d{9} and 0, 3, 6 or 9 digits more: seconds to nanoseconds */
    Py_ssize_t stamp = end - p;
    if ((stamp != 10 && stamp != 13 && stamp != 16 && stamp != 19) || p[0] == '0'
            || !all_digits(p, stamp))
        return 0;
    out->ts = 0;
    for (int i = 0; i < 10; i++)
        out->ts = out->ts * 10 + (p[i] - '0');
    return 1;
}

/* The held row: the fields in the log's order (empty if not sent), the host, and the
 * extra tags sorted by key and joined with ';' (logstore.format_tail). */
static PyObject *
held_row(const Line *line, const Spec *spec)
{
    int order[MAX_EXTRA_TAGS];
    Py_ssize_t size = spec->count + (line->has_host ? line->host.n : 0);
    for (Py_ssize_t i = 0; i < spec->count; i++)
        if (line->sent >> i & 1)
            size += line->values[i].n;
    for (int i = 0; i < line->extras; i++) {
        int j = i;
        for (; j > 0 && span_less(line->extra_keys[i], line->extra_keys[order[j - 1]]); j--)
            order[j] = order[j - 1];
        order[j] = i;
        size += line->extra_keys[i].n + line->extra_values[i].n + 1 + (i > 0);
    }
    if (line->extras)
        size++;
    PyObject *row = PyBytes_FromStringAndSize(NULL, size);
    if (row == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(row);
    for (Py_ssize_t i = 0; i < spec->count; i++) {
        if (line->sent >> i & 1) {
            memcpy(w, line->values[i].p, line->values[i].n);
            w += line->values[i].n;
        }
        *w++ = ',';
    }
    if (line->has_host) {
        memcpy(w, line->host.p, line->host.n);
        w += line->host.n;
    }
    for (int k = 0; k < line->extras; k++) {
        int i = order[k];
        *w++ = k ? TAGS_SEPARATOR : ',';
        memcpy(w, line->extra_keys[i].p, line->extra_keys[i].n);
        w += line->extra_keys[i].n;
        *w++ = '=';
        memcpy(w, line->extra_values[i].p, line->extra_values[i].n);
        w += line->extra_values[i].n;
    }
    return row;
}

static long long
integer_of(Span v)
{
    long long n = 0;
    for (Py_ssize_t i = 0; i < v.n; i++)
        n = n * 10 + (v.p[i] - '0');
    return n;
}

/* Append a new reference to `list`, stealing it; 0 on failure. */
static int
append(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return 0;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed == 0;
}

PyDoc_STRVAR(scan_doc,
"scan(payload, spec, vm_ids, lo, hi) -> (vms, tss, rows, seqs, rest) or None\n\n"
"The lines of the payload that are records of any spelling parse.py's regexes\n"
"admit, their raw VM id a key of vm_ids and their stamp's seconds within [lo, hi]:\n"
"the columns of parse.Parsed, VM ids being vm_ids' values and seqs None where none\n"
"was sent; rest: every other line but blank ones and comments ('#'), in order.\n"
"None once more lines are left than read, plus LEFT_MARGIN.");

static PyObject *
scan(PyObject *self, PyObject *args)
{
    const char *data;
    Py_ssize_t size;
    PyObject *capsule, *vm_ids;
    long long lo, hi;
    if (!PyArg_ParseTuple(args, "y#O!O!LL", &data, &size, &PyCapsule_Type, &capsule,
                          &PyDict_Type, &vm_ids, &lo, &hi))
        return NULL;
    const Spec *spec = PyCapsule_GetPointer(capsule, SPEC_NAME);
    if (spec == NULL)
        return NULL;
    PyObject *columns[COLUMNS] = {PyList_New(0), PyList_New(0), PyList_New(0), PyList_New(0),
                                  PyList_New(0)};
    PyObject *result = NULL;
    for (int c = 0; c < COLUMNS; c++)
        if (columns[c] == NULL)
            goto done;
    PyObject *rest = columns[COLUMNS - 1];
    const char *p = data, *end = data + size;
    Py_ssize_t read = 0;
    Line line;
    while (p < end) {
        const char *eol = memchr(p, '\n', end - p);
        if (eol == NULL)
            eol = end;
        if (eol == p || *p == '#') {  /* blank (datagrams that end with a newline, joined), or a
                                        * comment: parse.py skips both */
            p = eol + 1;
            continue;
        }
        PyObject *vm = NULL;
        if (read_line(p, eol, spec, &line) && line.ts >= lo && line.ts <= hi) {
            PyObject *key = PyBytes_FromStringAndSize(line.vm.p, line.vm.n);
            if (key == NULL)
                goto done;
            vm = PyDict_GetItemWithError(vm_ids, key);
            Py_DECREF(key);
            if (vm == NULL && PyErr_Occurred())
                goto done;
        }
        if (vm == NULL) {  /* not provably valid, or a VM id met for the first time */
            if (!append(rest, PyBytes_FromStringAndSize(p, eol - p)))
                goto done;
            if (PyList_GET_SIZE(rest) > read + LEFT_MARGIN) {
                result = Py_None;
                goto done;
            }
            p = eol + 1;
            continue;
        }
        read++;
        Py_INCREF(vm);
        PyObject *seq = Py_None;
        if (spec->seq >= 0 && (line.sent >> spec->seq & 1))
            seq = PyLong_FromLongLong(integer_of(line.values[spec->seq]));
        else
            Py_INCREF(seq);
        if (!append(columns[0], vm) || !append(columns[1], PyLong_FromLongLong(line.ts))
                || !append(columns[2], held_row(&line, spec)) || !append(columns[3], seq))
            goto done;
        p = eol + 1;
    }
    result = PyTuple_Pack(COLUMNS, columns[0], columns[1], columns[2], columns[3], rest);
    if (result == NULL)
        goto done;
    for (int c = 0; c < COLUMNS; c++)
        Py_DECREF(columns[c]);
    return result;
done:
    for (int c = 0; c < COLUMNS; c++)
        Py_XDECREF(columns[c]);
    if (result == Py_None)
        Py_RETURN_NONE;
    return NULL;
}

static void
free_spec(PyObject *capsule)
{
    PyMem_Free(PyCapsule_GetPointer(capsule, SPEC_NAME));
}

/* Copy a bytes object into a fixed buffer of a Field; 0 (with an error) if it is too long. */
static int
copy_text(PyObject *text, char *into, size_t room, Py_ssize_t *length)
{
    if (!PyBytes_Check(text) || (size_t)PyBytes_GET_SIZE(text) >= room) {
        PyErr_SetString(PyExc_ValueError, "a field's name or top is not bytes, or too long");
        return 0;
    }
    memcpy(into, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text) + 1);
    if (length != NULL)
        *length = PyBytes_GET_SIZE(text);
    return 1;
}

PyDoc_STRVAR(spec_doc,
"spec(fields, limits) -> the capsule scan() reads lines with\n\n"
"fields: in the log's order, each (name, zero_ok, typed_digits, typed_top,\n"
"untyped_int, untyped_digits, float_top, required, fraction); limits: the longest VM id,\n"
"host, extra tags, tag key, tag value and fraction; as parse.line_spec makes them.");

static PyObject *
make_spec(PyObject *self, PyObject *args)
{
    PyObject *fields;
    Py_ssize_t vm_id, host, extra_tags, tag_key, tag_value, fraction;
    if (!PyArg_ParseTuple(args, "O!(nnnnnn)", &PyTuple_Type, &fields, &vm_id, &host,
                          &extra_tags, &tag_key, &tag_value, &fraction))
        return NULL;
    if (PyTuple_GET_SIZE(fields) > MAX_FIELDS || extra_tags > MAX_EXTRA_TAGS || extra_tags < 0) {
        PyErr_SetString(PyExc_ValueError, "more fields or extra tags than this reader has room for");
        return NULL;
    }
    Spec *spec = PyMem_Calloc(1, sizeof *spec);
    if (spec == NULL)
        return PyErr_NoMemory();
    spec->vm_id = vm_id;
    spec->host = host;
    spec->extra_tags = extra_tags;
    spec->tag_key = tag_key;
    spec->tag_value = tag_value;
    spec->fraction = fraction;
    spec->count = PyTuple_GET_SIZE(fields);
    spec->seq = -1;
    for (Py_ssize_t i = 0; i < spec->count; i++) {
        Field *f = &spec->fields[i];
        PyObject *name, *typed_top, *float_top;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "SpiSpiSpn", &name, &f->zero_ok,
                              &f->typed_digits, &typed_top, &f->untyped_int, &f->untyped_digits,
                              &float_top, &f->required, &f->fraction)
                || !copy_text(name, f->name, sizeof f->name, &f->name_len)
                || !copy_text(typed_top, f->typed_top, sizeof f->typed_top, NULL)
                || !copy_text(float_top, f->float_top, sizeof f->float_top, NULL)) {
            PyMem_Free(spec);
            return NULL;
        }
        if (f->required)
            spec->required |= 1UL << i;
        if (strcmp(f->name, "seq") == 0)
            spec->seq = i;
    }
    PyObject *capsule = PyCapsule_New(spec, SPEC_NAME, free_spec);
    if (capsule == NULL)
        PyMem_Free(spec);
    return capsule;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {"spec", make_spec, METH_VARARGS, spec_doc},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_linescan",
    "Record lines of any spelling read into held rows in C (parse.py's fast path).",
    -1, methods
};

PyMODINIT_FUNC
PyInit__linescan(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "VERSION", MODULE_VERSION) < 0)
        Py_CLEAR(m);
    return m;
}
