/*
 * Telegraf's line-protocol lines read into the edge's samples in C, a payload at a time.
 *
 * influx.py reads a payload of plain lines (no escapes, no strings: what Telegraf sends)
 * with one regex pass and a Python loop over the matches: ~4.7 us a line, where the C
 * reader of native records (_linescan.c) spends ~0.4 us a record.  Here each line is read
 * once, left to right, and only the tags and fields the mapping needs become objects.
 *
 * The grammar is exactly influx.py's PLAIN_LINE, and the mapping that of its handlers
 * (_cpu, _mem, _diskio, _net, _system), with the names, kinds and bounds handed over by
 * influx.py (scan_spec), so the facts stay there.  scan() reads the lines that are plain
 * and either used or ignored, each VM tag a VM id the decoder knows or accepts (its
 * `known`), each value one it can convert exactly as Python does.  Any other line (a
 * reject, an escape, a boolean where a number is needed, a 20-digit integer, a value to
 * clamp) it leaves to influx.py, which reads it and names every reject (a tag or field it
 * reads given twice among them) -- the whole payload, as it used to, or (given `deferred`)
 * that line alone, told why where the reason is plain: the words of its VM tag value's
 * refusal, or the fault lineprotocol.parse_line finds first in a line without escapes
 * (syntax_fault, its grammar).  A sender of malformed lines made every payload of theirs
 * be read again in Python, several times the cost of a line taken.
 * influx.py is the reference: the tests hold both to the same samples, tallies and lines
 * on Telegraf's lines and on arbitrary damage, and the server runs without this module
 * if it was not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* What passes between this module and influx.py (its functions, their arguments, what they
 * answer), numbered: raised with every change to it, here and in influx.py's
 * INFLUXSCAN_VERSION, so that a build of an older source is refused at import (native.py). */
#define MODULE_VERSION 1

#define SPEC_NAME "vmstats.server._influxscan.spec"
#define MAX_TAGS 2
#define MAX_FIELDS 4
/* The longest number text converted here; longer ones are left to Python. */
#define MAX_NUMBER 64
/* Typed integers of at most this many digits fit a long long whatever they are. */
#define MAX_INT_DIGITS 18

enum { CPU, MEM, DISKIO, NET, SYSTEM, MEASUREMENTS };
/* The kinds, in the order scan_spec hands them over. */
enum { K_CPU, K_MEM, K_MEM_MB, K_DISK_R, K_DISK_W, K_NET_RX, K_NET_TX, K_VCPUS, KINDS };

typedef struct {
    const char *p;
    Py_ssize_t n;
} Span;

typedef struct {
    PyObject *name;                 /* bytes */
    Py_ssize_t tags, fields;
    PyObject *tag[MAX_TAGS];        /* bytes, the keys looked up */
    PyObject *field[MAX_FIELDS];
} Measurement;

typedef struct {
    Measurement m[MEASUREMENTS];
    PyObject *kind[KINDS];          /* str */
    PyObject *empty;                /* "" */
    PyObject *vm_tag;               /* bytes */
    PyObject *cpu_total;            /* bytes: the cpu tag of the total line */
    PyObject *all;                  /* bytes: the net interface that sums the others */
    PyObject *loopback;             /* frozenset of bytes */
    PyTypeObject *sample;           /* a tuple subclass of five, without a dict */
    double low, high;               /* a percentage's bounds */
    long long mib;
    Py_ssize_t max_line;
} Spec;

/* [^,\s\\"] and [^=,\s\\"] of PLAIN_LINE, as bytes. */
static int
plain_byte(unsigned char c)
{
    return !(c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
             || c == '\v' || c == '\\' || c == '"');
}

static int
key_byte(unsigned char c)
{
    return c != '=' && plain_byte(c);
}

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int
span_is(Span s, PyObject *bytes)
{
    return s.n == PyBytes_GET_SIZE(bytes) && memcmp(s.p, PyBytes_AS_STRING(bytes), s.n) == 0;
}

enum { V_BAD, V_FLOAT, V_INT, V_UINT, V_BOOL };

/* [eE][-+]?\d+ at s[*i], moving *i past it; 0 if it is not one. */
static int
exponent(Span s, Py_ssize_t *i)
{
    Py_ssize_t j = *i + 1;
    if (j < s.n && (s.p[j] == '-' || s.p[j] == '+'))
        j++;
    if (j >= s.n || !is_digit(s.p[j]))
        return 0;
    while (j < s.n && is_digit(s.p[j]))
        j++;
    *i = j;
    return 1;
}

static int
word_is(Span s, const char *word)
{
    return (size_t)s.n == strlen(word) && memcmp(s.p, word, s.n) == 0;
}

/* What the whole of `s` is in PLAIN_LINE's _VALUE, or V_BAD. */
static int
value_type(Span s)
{
    if (s.n == 0)
        return V_BAD;
    switch (s.p[0]) {
    case 't':
        return word_is(s, "t") || word_is(s, "true") ? V_BOOL : V_BAD;
    case 'T':
        return word_is(s, "T") || word_is(s, "True") || word_is(s, "TRUE") ? V_BOOL : V_BAD;
    case 'f':
        return word_is(s, "f") || word_is(s, "false") ? V_BOOL : V_BAD;
    case 'F':
        return word_is(s, "F") || word_is(s, "False") || word_is(s, "FALSE") ? V_BOOL : V_BAD;
    }
    Py_ssize_t i = s.p[0] == '-';
    if (i < s.n && s.p[i] == '.') {  /* -?\.\d+(EXP)? */
        i++;
        if (i >= s.n || !is_digit(s.p[i]))
            return V_BAD;
        while (i < s.n && is_digit(s.p[i]))
            i++;
        if (i < s.n && (s.p[i] == 'e' || s.p[i] == 'E') && !exponent(s, &i))
            return V_BAD;
        return i == s.n ? V_FLOAT : V_BAD;
    }
    if (i >= s.n || !is_digit(s.p[i]))
        return V_BAD;
    while (i < s.n && is_digit(s.p[i]))
        i++;
    if (i == s.n)
        return V_FLOAT;
    if (s.p[i] == 'i')
        return i + 1 == s.n ? V_INT : V_BAD;
    if (s.p[i] == 'u')
        return i + 1 == s.n && s.p[0] != '-' ? V_UINT : V_BAD;
    if (s.p[i] == '.') {
        i++;
        while (i < s.n && is_digit(s.p[i]))
            i++;
    }
    else if (!(s.p[i] == 'e' || s.p[i] == 'E'))
        return V_BAD;
    if (i < s.n && (s.p[i] == 'e' || s.p[i] == 'E') && !exponent(s, &i))
        return V_BAD;
    return i == s.n ? V_FLOAT : V_BAD;
}

/* A mapped field's value, as lineprotocol.number gives it. */
typedef struct {
    int is_int;
    long long i;
    double f;
} Number;

/* lineprotocol.number of `s` (of type `type`); 0 when Python would refuse it (a boolean, a
 * value not finite) or might convert it otherwise than here (too many digits). */
static int
number(Span s, int type, Number *out)
{
    if (type == V_INT || type == V_UINT) {
        Py_ssize_t i = s.p[0] == '-', last = s.n - 1;
        if (last - i > MAX_INT_DIGITS)
            return 0;
        long long n = 0;
        for (; i < last; i++)
            n = n * 10 + (s.p[i] - '0');
        out->is_int = 1;
        out->i = s.p[0] == '-' ? -n : n;
        return 1;
    }
    if (type != V_FLOAT || s.n >= MAX_NUMBER)
        return 0;
    char text[MAX_NUMBER];
    memcpy(text, s.p, s.n);
    text[s.n] = '\0';
    char *end;
    double value = PyOS_string_to_double(text, &end, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (end != text + s.n || !isfinite(value))
        return 0;
    out->is_int = 0;
    out->f = value;
    return 1;
}

static double
as_double(const Number *n)
{
    return n->is_int ? (double)n->i : n->f;
}

static PyObject *
number_object(const Number *n)
{
    return n->is_int ? PyLong_FromLongLong(n->i) : PyFloat_FromDouble(n->f);
}

/* One plain line's parts: the tags and fields its measurement needs (each given once). */
typedef struct {
    int measurement;                /* -1: not mapped */
    Span vm;
    int has_vm;
    Span tag[MAX_TAGS];
    int has_tag[MAX_TAGS];
    Span field[MAX_FIELDS];
    int field_type[MAX_FIELDS];     /* V_BAD: not sent */
    int has_stamp;
    double stamp;
    int twice;                      /* a tag or field it reads given twice */
} Line;

/* A tag's or field's key ([^=,\s\\"]+) and its '=' at *q, moving *q past them; 0 if none. */
static int
read_key(const char **q, const char *end, Span *key)
{
    const char *p = *q;
    while (p < end && key_byte(*p))
        p++;
    key->p = *q;
    key->n = p - *q;
    if (key->n == 0 || p == end || *p != '=')
        return 0;
    *q = p + 1;
    return 1;
}

/* Read [p, end) (no newline, a CR before it dropped) as PLAIN_LINE; 0 if it is not one. */
static int
read_line(const char *p, const char *end, const Spec *spec, Line *line)
{
    const char *q = p;
    while (q < end && plain_byte(*q))
        q++;
    if (q == p || q == end || *p == '#')
        return 0;
    Span name = {p, q - p};
    line->measurement = -1;
    for (int m = 0; m < MEASUREMENTS; m++)
        if (span_is(name, spec->m[m].name))
            line->measurement = m;
    const Measurement *m = line->measurement >= 0 ? &spec->m[line->measurement] : NULL;
    line->has_vm = 0;
    line->twice = 0;
    memset(line->has_tag, 0, sizeof line->has_tag);
    while (*q == ',') {  /* ,key=value */
        Span key, value;
        q++;
        if (!read_key(&q, end, &key))
            return 0;
        value.p = q;
        while (q < end && key_byte(*q))
            q++;
        value.n = q - value.p;
        if (value.n == 0 || q == end)
            return 0;
        if (m == NULL)
            continue;
        /* A key read given twice is a syntax reject, influx.py's to name; the line is read
         * on, as it may still be plain (which decides how influx.py words its rejects). */
        if (span_is(key, spec->vm_tag)) {
            line->twice |= line->has_vm;
            line->vm = value;
            line->has_vm = 1;
        }
        for (Py_ssize_t t = 0; t < m->tags; t++)
            if (span_is(key, m->tag[t])) {
                line->twice |= line->has_tag[t];
                line->tag[t] = value;
                line->has_tag[t] = 1;
            }
    }
    if (*q != ' ')
        return 0;
    for (int f = 0; f < MAX_FIELDS; f++)
        line->field_type[f] = V_BAD;
    do {  /* key=value, at least once */
        Span key, value;
        q++;
        if (!read_key(&q, end, &key))
            return 0;
        value.p = q;
        while (q < end && *q != ',' && *q != ' ')
            q++;
        value.n = q - value.p;
        int type = value_type(value);
        if (type == V_BAD)
            return 0;
        if (m == NULL)
            continue;
        for (Py_ssize_t f = 0; f < m->fields; f++)
            if (span_is(key, m->field[f])) {
                line->twice |= line->field_type[f] != V_BAD;
                line->field[f] = value;
                line->field_type[f] = type;
            }
    } while (q < end && *q == ',');
    line->has_stamp = 0;
    if (q == end)
        return 1;
    if (*q != ' ')
        return 0;
    q++;
    int negative = q < end && *q == '-';
    q += negative;
    if (end - q < 1 || end - q > 19)
        return 0;
    uint64_t stamp = 0;
    for (; q < end; q++) {
        if (!is_digit(*q))
            return 0;
        stamp = stamp * 10 + (uint64_t)(*q - '0');
    }
    line->has_stamp = 1;
    /* int(text) then to a float, correctly rounded both ways (and never -0.0) */
    line->stamp = negative && stamp ? -(double)stamp : (double)stamp;
    return 1;
}

/* A new Sample (the spec's type) of five new or borrowed references; NULL on failure. */
static PyObject *
sample(const Spec *spec, PyObject *vm, PyObject *ts, PyObject *kind, PyObject *device,
       PyObject *value)
{
    if (value == NULL)
        return NULL;
    PyObject *tuple = spec->sample->tp_alloc(spec->sample, 5);
    if (tuple == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    PyObject *items[4] = {vm, ts, kind, device};
    for (int i = 0; i < 4; i++) {
        Py_INCREF(items[i]);
        PyTuple_SET_ITEM(tuple, i, items[i]);
    }
    PyTuple_SET_ITEM(tuple, 4, value);  /* stolen */
    return tuple;
}

static int
append(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return 0;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed == 0;
}

/* A field's number, or 0 (Python would refuse the line or convert otherwise). */
static int
field_number(const Line *line, int f, Number *out)
{
    return number(line->field[f], line->field_type[f], out);
}

/* The last device name decoded, kept: every VM's disk and interface are named alike. */
typedef struct {
    PyObject *raw;
    PyObject *name;
} Device;

static PyObject *
device_name(Device *cache, Span raw)
{
    if (cache->raw != NULL && span_is(raw, cache->raw))
        return cache->name;
    PyObject *bytes = PyBytes_FromStringAndSize(raw.p, raw.n);
    if (bytes == NULL)
        return NULL;
    PyObject *name = PyUnicode_DecodeUTF8(raw.p, raw.n, "replace");
    if (name == NULL) {
        Py_DECREF(bytes);
        return NULL;
    }
    Py_XSETREF(cache->raw, bytes);
    Py_XSETREF(cache->name, name);
    return name;
}

/* influx.py's _counters: the two byte counters of a device (diskio's, net's). */
static int
counters(const Spec *spec, const Line *line, PyObject *out, PyObject *vm, PyObject *ts,
         Device *cache, Span raw, int first_kind)
{
    PyObject *name = device_name(cache, raw);
    if (name == NULL)
        return -1;
    for (int f = 0; f < 2; f++) {
        if (line->field_type[f] == V_BAD)
            continue;
        Number n;
        if (!field_number(line, f, &n))
            return 0;
        if (!append(out, sample(spec, vm, ts, spec->kind[first_kind + f], name, number_object(&n))))
            return -1;
    }
    return 1;
}

/* The line's samples appended to `out` (influx.py's handlers); 1 done, 0 Python's to read,
 * -1 an error set. */
static int
map_line(const Spec *spec, const Line *line, PyObject *out, PyObject *vm, PyObject *ts,
         Device *devices)
{
    Number a, b;
    switch (line->measurement) {
    case CPU:
        if (!line->has_tag[0] || !span_is(line->tag[0], spec->cpu_total)
                || line->field_type[0] == V_BAD)
            return 1;
        if (!field_number(line, 0, &a))
            return 0;
        if (line->field_type[1] == V_BAD) {
            b.is_int = 0;
            b.f = 0.0;
        }
        else if (!field_number(line, 1, &b))
            return 0;
        double idle = as_double(&a), iowait = as_double(&b);
        if (!(spec->low <= idle && idle <= spec->high && spec->low <= iowait
              && iowait <= spec->high))
            return 0;  /* clamped or refused: influx.py judges it */
        return append(out, sample(spec, vm, ts, spec->kind[K_CPU], spec->empty,
                                  PyFloat_FromDouble(100.0 - idle - iowait))) ? 1 : -1;
    case MEM:
        if (line->field_type[0] != V_BAD) {
            if (!field_number(line, 0, &a))
                return 0;
            if (!append(out, sample(spec, vm, ts, spec->kind[K_MEM], spec->empty,
                                    PyFloat_FromDouble(100.0 - as_double(&a)))))
                return -1;
        }
        else if (line->field_type[1] != V_BAD) {
            if (!field_number(line, 1, &a))
                return 0;
            if (!append(out, sample(spec, vm, ts, spec->kind[K_MEM], spec->empty,
                                    number_object(&a))))
                return -1;
        }
        if (line->field_type[2] != V_BAD) {
            if (!field_number(line, 2, &a) || !a.is_int)
                return 0;  /* a float's floor division is Python's to do */
            long long q = a.i / spec->mib;
            if (a.i % spec->mib != 0 && a.i < 0)
                q--;
            if (!append(out, sample(spec, vm, ts, spec->kind[K_MEM_MB], spec->empty,
                                    PyLong_FromLongLong(q))))
                return -1;
        }
        return 1;
    case DISKIO:
        if (!line->has_tag[0])
            return 1;
        return counters(spec, line, out, vm, ts, &devices[0], line->tag[0], K_DISK_R);
    case NET:
        if (!line->has_tag[0] || span_is(line->tag[0], spec->all))
            return 1;
        PyObject *interface = PyBytes_FromStringAndSize(line->tag[0].p, line->tag[0].n);
        if (interface == NULL)
            return -1;
        int loopback = PySet_Contains(spec->loopback, interface);
        Py_DECREF(interface);
        if (loopback)
            return loopback < 0 ? -1 : 1;
        return counters(spec, line, out, vm, ts, &devices[1], line->tag[0], K_NET_RX);
    case SYSTEM:
        if (line->field_type[0] == V_BAD)
            return 1;
        if (!field_number(line, 0, &a))
            return 0;
        return append(out, sample(spec, vm, ts, spec->kind[K_VCPUS], spec->empty,
                                  number_object(&a))) ? 1 : -1;
    }
    return 1;
}

/* The VM id of a raw tag value: the decoder's cache, else its `known` (None: a reject). */
static PyObject *
vm_of(PyObject *vms, PyObject *known, Span raw, PyObject **last_raw, PyObject **last_vm)
{
    if (*last_raw != NULL && span_is(raw, *last_raw))
        return *last_vm;
    PyObject *key = PyBytes_FromStringAndSize(raw.p, raw.n);
    if (key == NULL)
        return NULL;
    PyObject *vm = PyDict_GetItemWithError(vms, key);
    if (vm != NULL)
        Py_INCREF(vm);
    else if (!PyErr_Occurred())
        vm = PyObject_CallOneArg(known, key);
    if (vm == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    Py_XSETREF(*last_raw, key);
    Py_XSETREF(*last_vm, vm);
    return vm;
}

PyDoc_STRVAR(scan_doc,
"scan(payload, spec, vms, known, now, divisor, lines[, bad_vms, deferred])\n"
"    -> (samples, used, ignored, plain) or None\n\n"
"Every line of the payload plain (influx.py's PLAIN_LINE) and either used or\n"
"ignored: the samples InfluxDecoder._plain makes of it, how many lines it used\n"
"and ignored, and `lines` (a list, or None) extended as its `lines` would be.\n"
"A VM tag value not in vms is handed to known(raw), which answers its VM id or\n"
"None.  None (lines as they were) if any line is not one this reads -- unless\n"
"`deferred` is a list: then each such line is left out and appended to it as\n"
"(number, start, end, detail), its number and where it is in the payload (its\n"
"newline left out), detail the words of its VM tag value's refusal if that is\n"
"all that refused it (the value of bad_vms, the decoder's dict of them), else\n"
"None; blank, space and # lines are left out and not listed, as Python skips\n"
"them.  `plain` says whether every line was plain, a line of no more than the\n"
"longest and no blank or comment line among them: influx.py words its rejects\n"
"by it.");

/* lineprotocol.parse_line's faults (its FAULTS, in order), for a line of neither escapes nor
 * strings, which it reads by splitting. */
enum { F_NONE, F_PARTS, F_EMPTY_STAMP, F_STAMP, F_EMPTY_MEASUREMENT, F_TAG, F_FIELDS };

/* [^,= ]+=[^,= ]+, the whole of [p, end): a plain tag's, and a field's key and '=' (*value
 * set to after the '='), as lineprotocol's _PLAIN_TAG and _PLAIN_FIELDS read them. */
static int
key_value(const char *p, const char *end, const char **value)
{
    const char *q = p;
    while (q < end && *q != '=' && *q != ',' && *q != ' ')
        q++;
    if (q == p || q == end || *q != '=')
        return 0;
    *value = q + 1;
    return 1;
}

/* The fault parse_line raises first on the line [p, end) (a CR before its end dropped, no
 * backslash nor quote in it), F_NONE if none, and the text its words name. */
static int
syntax_fault(const char *p, const char *end, Span *named)
{
    const char *space1 = memchr(p, ' ', end - p), *space2 = NULL;
    if (space1 != NULL) {
        space2 = memchr(space1 + 1, ' ', end - space1 - 1);
        if (space2 != NULL && memchr(space2 + 1, ' ', end - space2 - 1) != NULL)
            space1 = NULL;  /* four parts or more */
    }
    if (space1 == NULL)
        return F_PARTS;
    const char *body_end = space2 == NULL ? end : space2;
    if (space2 != NULL) {  /* _timestamp: -?\d{1,19}, ASCII digits */
        const char *digits = space2 + 1;
        named->p = digits;
        named->n = end - digits;
        if (named->n == 0)
            return F_EMPTY_STAMP;
        digits += *digits == '-';
        if (end - digits < 1 || end - digits > 19)
            return F_STAMP;
        for (const char *d = digits; d < end; d++)
            if (!is_digit(*d))
                return F_STAMP;
    }
    const char *comma = memchr(p, ',', space1 - p);
    const char *tag = comma == NULL ? space1 : comma;
    if (tag == p)
        return F_EMPTY_MEASUREMENT;
    while (tag < space1) {  /* ,key=value */
        const char *start = tag + 1, *value;
        tag = memchr(start, ',', space1 - start);
        if (tag == NULL)
            tag = space1;
        named->p = start;
        named->n = tag - start;
        if (!key_value(start, tag, &value) || value == tag || memchr(value, '=', tag - value))
            return F_TAG;
    }
    named->p = space1 + 1;
    named->n = body_end - named->p;
    const char *field = named->p;
    do {  /* key=VALUE, at least once */
        const char *stop = memchr(field, ',', body_end - field), *value;
        if (stop == NULL)
            stop = body_end;
        if (!key_value(field, stop, &value))
            return F_FIELDS;
        Span text = {value, stop - value};
        if (value_type(text) == V_BAD)
            return F_FIELDS;
        field = stop + 1;
    } while (field <= body_end);
    return F_NONE;
}

/* A line this does not read, listed for influx.py (scan's `deferred`) with why: the words of
 * its VM's refusal (`detail`), or parse_line's fault, or neither; 0 on an error. */
static int
defer(PyObject *deferred, Py_ssize_t number, const char *data, const char *start,
      const char *eol, PyObject *detail, int why_syntax)
{
    int fault = F_NONE;
    Span named = {start, 0};
    if (why_syntax && memchr(start, '\\', eol - start) == NULL
            && memchr(start, '"', eol - start) == NULL)
        fault = syntax_fault(start, eol > start && eol[-1] == '\r' ? eol - 1 : eol, &named);
    PyObject *item;
    if (fault != F_NONE)
        item = Py_BuildValue("(nnninn)", number, start - data, eol - data, fault,
                             named.p - data, named.p + named.n - data);
    else
        item = Py_BuildValue("(nnnOnn)", number, start - data, eol - data,
                             detail == NULL ? Py_None : detail, (Py_ssize_t)0, (Py_ssize_t)0);
    return append(deferred, item);
}

/* Is [p, end) a line Python skips: empty, a # comment, or all white space (bytes.isspace)? */
static int
skipped(const char *p, const char *end)
{
    if (p == end || *p == '#')
        return 1;
    for (; p < end; p++)
        if (!(*p == ' ' || *p == '\t' || *p == '\r' || *p == '\v' || *p == '\f'))
            return 0;
    return 1;
}

static PyObject *
scan(PyObject *self, PyObject *args)
{
    const char *data;
    Py_ssize_t size;
    PyObject *capsule, *vms, *known, *now, *lines, *bad_vms = Py_None, *deferred = Py_None;
    double divisor;
    if (!PyArg_ParseTuple(args, "y#O!O!OOdO|OO", &data, &size, &PyCapsule_Type, &capsule,
                          &PyDict_Type, &vms, &known, &now, &divisor, &lines, &bad_vms,
                          &deferred))
        return NULL;
    const Spec *spec = PyCapsule_GetPointer(capsule, SPEC_NAME);
    if (spec == NULL)
        return NULL;
    if (lines != Py_None && !PyList_Check(lines)) {
        PyErr_SetString(PyExc_TypeError, "lines must be a list or None");
        return NULL;
    }
    if (deferred != Py_None && (!PyList_Check(deferred) || !PyDict_Check(bad_vms))) {
        PyErr_SetString(PyExc_TypeError, "deferred must be a list, with bad_vms a dict");
        return NULL;
    }
    int deferring = deferred != Py_None, plain = 1;
    Py_ssize_t lines_before = lines == Py_None ? 0 : PyList_GET_SIZE(lines);
    Py_ssize_t deferred_before = deferring ? PyList_GET_SIZE(deferred) : 0;
    PyObject *out = PyList_New(0), *result = NULL;
    PyObject *last_raw = NULL, *last_vm = NULL, *ts = NULL;
    Device devices[2] = {{NULL, NULL}, {NULL, NULL}};
    double last_stamp = 0.0;
    int last_stamped = 0;
    Py_ssize_t used = 0, ignored = 0, number = 0;
    if (out == NULL)
        goto done;
    const char *p = data, *end = data + size;
    if (size == 0) {
        result = Py_None;
        goto done;
    }
    while (p < end) {
        const char *eol = memchr(p, '\n', end - p), *start = p;
        if (eol == NULL)
            eol = end;
        number++;
        const char *stop = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        p = eol + 1;
        PyObject *detail = NULL;  /* borrowed: a VM tag value's refusal */
        int why_syntax = 0;
        Line line;
        if (eol - start > spec->max_line || !read_line(start, stop, spec, &line)) {
            if (!deferring) {
                result = Py_None;
                goto done;
            }
            plain = 0;
            if (skipped(start, eol))
                continue;
            why_syntax = eol - start <= spec->max_line;
            goto deferred_line;
        }
        if (line.measurement < 0) {
            ignored++;
            continue;
        }
        if (line.twice || !line.has_vm)
            goto deferred_line;
        PyObject *vm = vm_of(vms, known, line.vm, &last_raw, &last_vm);
        if (vm == NULL)
            goto done;
        if (vm == Py_None) {
            if (deferring) {
                /* last_raw holds the value: the words known() left for it, if any. */
                detail = PyDict_GetItemWithError(bad_vms, last_raw);
                if (detail == NULL && PyErr_Occurred())
                    goto done;
            }
            goto deferred_line;
        }
        if (ts == NULL || line.has_stamp != last_stamped
                || (line.has_stamp && line.stamp != last_stamp)) {
            Py_XSETREF(ts, line.has_stamp ? PyFloat_FromDouble(line.stamp / divisor)
                                          : Py_NewRef(now));
            if (ts == NULL)
                goto done;
            last_stamped = line.has_stamp;
            last_stamp = line.stamp;
        }
        Py_ssize_t before = PyList_GET_SIZE(out);
        int mapped = map_line(spec, &line, out, vm, ts, devices);
        if (mapped < 0)
            goto done;
        if (mapped == 0) {
            /* what it made of the line before leaving it goes: Python reads it whole */
            if (deferring && PyList_SetSlice(out, before, PyList_GET_SIZE(out), NULL) < 0)
                goto done;
            goto deferred_line;
        }
        if (PyList_GET_SIZE(out) == before) {
            ignored++;
            continue;
        }
        used++;
        if (lines != Py_None && (!append(lines, PyLong_FromSsize_t(before))
                                 || !append(lines, PyLong_FromSsize_t(number))))
            goto done;
        continue;
    deferred_line:
        if (!deferring) {
            result = Py_None;
            goto done;
        }
        if (!defer(deferred, number, data, start, eol, detail, why_syntax))
            goto done;
    }
    result = Py_BuildValue("(Onni)", out, used, ignored, plain);
done:
    Py_XDECREF(out);
    Py_XDECREF(last_raw);
    Py_XDECREF(last_vm);
    Py_XDECREF(ts);
    for (int d = 0; d < 2; d++) {
        Py_XDECREF(devices[d].raw);
        Py_XDECREF(devices[d].name);
    }
    if (result == Py_None || result == NULL) {
        PyObject *type, *value, *trace;
        PyErr_Fetch(&type, &value, &trace);
        if (lines != Py_None && PyList_GET_SIZE(lines) > lines_before)
            PyList_SetSlice(lines, lines_before, PyList_GET_SIZE(lines), NULL);
        if (deferring && PyList_GET_SIZE(deferred) > deferred_before)
            PyList_SetSlice(deferred, deferred_before, PyList_GET_SIZE(deferred), NULL);
        PyErr_Restore(type, value, trace);
        if (result == Py_None)
            Py_RETURN_NONE;
    }
    return result;
}

static void
spec_free(Spec *spec)
{
    for (int m = 0; m < MEASUREMENTS; m++) {
        Py_XDECREF(spec->m[m].name);
        for (int t = 0; t < MAX_TAGS; t++)
            Py_XDECREF(spec->m[m].tag[t]);
        for (int f = 0; f < MAX_FIELDS; f++)
            Py_XDECREF(spec->m[m].field[f]);
    }
    for (int k = 0; k < KINDS; k++)
        Py_XDECREF(spec->kind[k]);
    Py_XDECREF(spec->empty);
    Py_XDECREF(spec->vm_tag);
    Py_XDECREF(spec->cpu_total);
    Py_XDECREF(spec->all);
    Py_XDECREF(spec->loopback);
    Py_XDECREF(spec->sample);
    PyMem_Free(spec);
}

static void
free_spec(PyObject *capsule)
{
    spec_free(PyCapsule_GetPointer(capsule, SPEC_NAME));
}

/* Keys of one measurement: a tuple of at most `room` bytes, each kept (new references). */
static int
keys_of(PyObject *tuple, PyObject **into, Py_ssize_t room, Py_ssize_t *count)
{
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) > room) {
        PyErr_SetString(PyExc_ValueError, "a measurement's keys are not a tuple this has room for");
        return 0;
    }
    *count = PyTuple_GET_SIZE(tuple);
    for (Py_ssize_t i = 0; i < *count; i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(tuple, i))) {
            PyErr_SetString(PyExc_TypeError, "keys must be bytes");
            return 0;
        }
        into[i] = Py_NewRef(PyTuple_GET_ITEM(tuple, i));
    }
    return 1;
}

PyDoc_STRVAR(spec_doc,
"spec(measurements, kinds, empty, vm_tag, cpu_total, all, loopback, low, high, mib,\n"
"     max_line, sample) -> the capsule scan() reads payloads with\n\n"
"measurements: cpu, mem, diskio, net and system in that order, each (name, tag keys,\n"
"field keys) as influx.py's handlers read them; kinds: the samples' kinds cpu, mem,\n"
"mem_mb, disk_r, disk_w, net_rx, net_tx (counters) and vcpus; as influx.scan_spec\n"
"makes them.");

static PyObject *
make_spec(PyObject *self, PyObject *args)
{
    PyObject *measurements, *kinds, *empty, *vm_tag, *cpu_total, *all, *loopback;
    PyTypeObject *sample_type;
    double low, high;
    long long mib;
    Py_ssize_t max_line;
    if (!PyArg_ParseTuple(args, "O!O!USSSO!ddLnO!", &PyTuple_Type, &measurements,
                          &PyTuple_Type, &kinds, &empty, &vm_tag, &cpu_total, &all,
                          &PyFrozenSet_Type, &loopback, &low, &high, &mib, &max_line,
                          &PyType_Type, &sample_type))
        return NULL;
    if (PyTuple_GET_SIZE(measurements) != MEASUREMENTS || PyTuple_GET_SIZE(kinds) != KINDS
            || mib <= 0) {
        PyErr_SetString(PyExc_ValueError, "not the measurements and kinds this reader maps");
        return NULL;
    }
    if (!PyType_IsSubtype(sample_type, &PyTuple_Type)
            || sample_type->tp_basicsize != PyTuple_Type.tp_basicsize
            || sample_type->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "sample must be a tuple subclass without a dict");
        return NULL;
    }
    Spec *spec = PyMem_Calloc(1, sizeof *spec);
    if (spec == NULL)
        return PyErr_NoMemory();
    for (int m = 0; m < MEASUREMENTS; m++) {
        PyObject *name, *tags, *fields;
        Measurement *into = &spec->m[m];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(measurements, m), "SO!O!", &name,
                              &PyTuple_Type, &tags, &PyTuple_Type, &fields)
                || !keys_of(tags, into->tag, MAX_TAGS, &into->tags)
                || !keys_of(fields, into->field, MAX_FIELDS, &into->fields))
            goto failed;
        into->name = Py_NewRef(name);
    }
    for (int k = 0; k < KINDS; k++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(kinds, k))) {
            PyErr_SetString(PyExc_TypeError, "kinds must be str");
            goto failed;
        }
        spec->kind[k] = Py_NewRef(PyTuple_GET_ITEM(kinds, k));
    }
    spec->empty = Py_NewRef(empty);
    spec->vm_tag = Py_NewRef(vm_tag);
    spec->cpu_total = Py_NewRef(cpu_total);
    spec->all = Py_NewRef(all);
    spec->loopback = Py_NewRef(loopback);
    spec->sample = (PyTypeObject *)Py_NewRef(sample_type);
    spec->low = low;
    spec->high = high;
    spec->mib = mib;
    spec->max_line = max_line;
    PyObject *capsule = PyCapsule_New(spec, SPEC_NAME, free_spec);
    if (capsule != NULL)
        return capsule;
failed:
    spec_free(spec);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {"spec", make_spec, METH_VARARGS, spec_doc},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_influxscan",
    "Telegraf's line-protocol lines read into the edge's samples in C (influx.py's fast path).",
    -1, methods
};

PyMODINIT_FUNC
PyInit__influxscan(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "VERSION", MODULE_VERSION) < 0)
        Py_CLEAR(m);
    return m;
}
