/* Samples filed into open minutes: minutes.py's MinuteAssembler.add loop, in C.
 *
 * Why: the line-protocol port assembles every sample in the reactor, and that loop was the
 * largest part of a Telegraf line's cost there (~1 us a line of Python).  This does the same
 * work on the same Python objects (the assembler's dicts, its Minute objects, the counters'
 * dict), so state, checkpoints and records are untouched; minutes.py's Python loop stays the
 * reference and the fallback where this is not built.
 *
 * Only the common cases are done here: a float counter or float timestamp, a rate filed, a
 * cpu or mem sample added.  Anything else -- a reject, a counter's first sample, a drop, a
 * value out of bounds, a late minute, a minute forced out, a device past the minute's bound
 * (max_devices) or all open minutes' (max_names), a device name longer than max_name_bytes,
 * or one that is not ASCII and could be -- is handed to the same Python that the reference
 * calls, with the state as the reference would have it at that point, so the two cannot
 * differ in what they say or count.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>

/* What passes between this module and minutes.py (its functions, their arguments, what they
 * answer), numbered: raised with every change to it, here and in minutes.py's
 * MINUTES_VERSION, so that a build of an older source is refused at import (native.py). */
#define MODULE_VERSION 1

/* Set once by configure(): minutes.py's tables and helpers. */
static PyObject *minute_type, *put_fn, *within_fn, *out_of_range, *counters, *limits,
    *rate_kinds, *refuse_time, *refuse_counter, *refuse_rate, *r_range, *r_device_cap,
    *r_name_budget, *too_long_fn;
static PyObject *s_cpu, *s_mem, *s_mem_mb, *s_vcpus, *s_sums, *s_counts, *s_touched, *s_cpu_sum, *s_cpu_count,
    *s_cpu_max, *s_mem_sum, *s_mem_count, *s_detail, *s_open_count, *s_max_open,
    *s_force_oldest, *s_late, *s_refuse_name, *s_refuse_long, *s_names, *s_step, *s_last, *s_max_gap, *f_zero, *i_zero,
    *i_one, *i_sixty, *f_double_max;

/* a <= b, as Python compares them (the common case of two floats without a call). */
static int
le(PyObject *a, PyObject *b)
{
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b))
        return PyFloat_AS_DOUBLE(a) <= PyFloat_AS_DOUBLE(b);
    return PyObject_RichCompareBool(a, b, Py_LE);
}

/* a + b, as Python adds them. */
static PyObject *
add_numbers(PyObject *a, PyObject *b)
{
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b))
        return PyFloat_FromDouble(PyFloat_AS_DOUBLE(a) + PyFloat_AS_DOUBLE(b));
    return PyNumber_Add(a, b);
}

/* obj.name += step (an int or float attribute of a Minute or the assembler). */
static int
add_attr(PyObject *obj, PyObject *name, PyObject *step)
{
    PyObject *old = PyObject_GetAttr(obj, name);
    if (old == NULL)
        return -1;
    PyObject *sum = add_numbers(old, step);
    Py_DECREF(old);
    if (sum == NULL)
        return -1;
    int failed = PyObject_SetAttr(obj, name, sum);
    Py_DECREF(sum);
    return failed;
}

/* The rate of counter ``key`` without a call into Python, where its last sample and this one
 * are of the one common shape: floats for the times, both values ints of 64 bits or both
 * floats, this one later, within max_gap, not lower.  Returns a new float and moves the key to
 * the dict's end (as the reference's pop and store do); NULL without an error: not that
 * shape, nothing changed, the reference's step decides. */
static PyObject *
quick_step(PyObject *last, PyObject *key, PyObject *ts, PyObject *value, double max_gap)
{
    PyObject *held = PyDict_GetItemWithError(last, key);
    if (held == NULL || !PyTuple_CheckExact(held) || PyTuple_GET_SIZE(held) != 2)
        return NULL;
    PyObject *then = PyTuple_GET_ITEM(held, 0), *before = PyTuple_GET_ITEM(held, 1);
    if (!PyFloat_CheckExact(then) || !PyFloat_CheckExact(ts))
        return NULL;
    double elapsed = PyFloat_AS_DOUBLE(ts) - PyFloat_AS_DOUBLE(then);
    if (!(PyFloat_AS_DOUBLE(ts) > PyFloat_AS_DOUBLE(then)) || !(elapsed <= max_gap))
        return NULL;
    double rate;
    if (PyLong_CheckExact(value) && PyLong_CheckExact(before)) {
        int overflow = 0;
        long long now_value = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow || (now_value == -1 && PyErr_Occurred()))
            goto not_quick;
        long long then_value = PyLong_AsLongLongAndOverflow(before, &overflow);
        if (overflow || (then_value == -1 && PyErr_Occurred()))
            goto not_quick;
        long long diff;
        if (now_value < then_value || __builtin_sub_overflow(now_value, then_value, &diff))
            return NULL;
        rate = (double)diff / elapsed;  /* int / float: the int rounded to a double first */
    }
    else if (PyFloat_CheckExact(value) && PyFloat_CheckExact(before)) {
        if (!(PyFloat_AS_DOUBLE(value) >= PyFloat_AS_DOUBLE(before)))
            return NULL;
        rate = (PyFloat_AS_DOUBLE(value) - PyFloat_AS_DOUBLE(before)) / elapsed;
    }
    else
        return NULL;
    PyObject *now_held = PyTuple_Pack(2, ts, value);
    if (now_held == NULL)
        return NULL;
    if (PyDict_DelItem(last, key) < 0 || PyDict_SetItem(last, key, now_held) < 0) {
        Py_DECREF(now_held);
        return NULL;
    }
    Py_DECREF(now_held);
    return PyFloat_FromDouble(rate);
not_quick:
    PyErr_Clear();
    return NULL;
}

/* fn(index, a, b, c, d), its result dropped: how every refusal and late sample reaches the
 * Python that names and counts it.  Arguments after the first NULL are not passed. */
static int
call_at(PyObject *fn, Py_ssize_t index, PyObject *a, PyObject *b, PyObject *c, PyObject *d)
{
    PyObject *at = PyLong_FromSsize_t(index);
    if (at == NULL)
        return -1;
    PyObject *result = PyObject_CallFunctionObjArgs(fn, at, a, b, c, d, NULL);
    Py_DECREF(at);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* A cpu, mem, mem_mb or vcpus sample into a minute, as minutes._put files it: 1 if done
 * here, 0 for _put to do it (another kind, or a cpu or mem value not a float), -1 on an
 * error. */
static int
put_quick(PyObject *minute, PyObject *kind, PyObject *value)
{
    int is;
    if ((is = PyObject_RichCompareBool(kind, s_mem_mb, Py_EQ)) != 0)
        return is < 0 ? -1 : PyObject_SetAttr(minute, s_mem_mb, value) < 0 ? -1 : 1;
    if ((is = PyObject_RichCompareBool(kind, s_vcpus, Py_EQ)) != 0)
        return is < 0 ? -1 : PyObject_SetAttr(minute, s_vcpus, value) < 0 ? -1 : 1;
    if (!PyFloat_CheckExact(value))
        return 0;
    int cpu = PyObject_RichCompareBool(kind, s_cpu, Py_EQ);
    if (cpu < 0)
        return -1;
    if (!cpu && (is = PyObject_RichCompareBool(kind, s_mem, Py_EQ)) <= 0)
        return is;
    if (add_attr(minute, cpu ? s_cpu_sum : s_mem_sum, value) < 0
        || add_attr(minute, cpu ? s_cpu_count : s_mem_count, i_one) < 0)
        return -1;
    if (cpu) {
        PyObject *most = PyObject_GetAttr(minute, s_cpu_max);
        if (most == NULL)
            return -1;
        int above = PyFloat_CheckExact(most)
            ? PyFloat_AS_DOUBLE(value) > PyFloat_AS_DOUBLE(most)
            : PyObject_RichCompareBool(value, most, Py_GT);
        Py_DECREF(most);
        if (above < 0 || (above && PyObject_SetAttr(minute, s_cpu_max, value) < 0))
            return -1;
    }
    return 1;
}

/* assembler._admit(held): one name more for a minute holding ``held`` of its kind.  0: taken
 * (assembler.names one more), 1: refused past the minute's bound (``most``, max_devices),
 * 2: refused past all open minutes' (``max_names``), -1 on an error.  Compared as the
 * reference compares them; called for a new name only, never for each sample. */
static int
admit(PyObject *self, Py_ssize_t held, Py_ssize_t most, PyObject *max_names)
{
    if (held >= most)
        return 1;
    PyObject *names = PyObject_GetAttr(self, s_names);
    if (names == NULL)
        return -1;
    int full = PyObject_RichCompareBool(names, max_names, Py_GE);
    Py_DECREF(names);
    if (full != 0)
        return full < 0 ? -1 : 2;
    return add_attr(self, s_names, i_one) < 0 ? -1 : 0;
}

/* A rate into the minute's per-device sums and counts: 0 filed, 1 or 2 refused (a new device
 * past a bound: ``admit``'s answer), -1 on an error. */
static int
put_rate(PyObject *minute, PyObject *kind, PyObject *device, PyObject *value, Py_ssize_t most,
         PyObject *self, PyObject *max_names)
{
    int failed = -1;
    PyObject *all_sums = PyObject_GetAttr(minute, s_sums);
    PyObject *all_counts = PyObject_GetAttr(minute, s_counts);
    if (all_sums == NULL || all_counts == NULL || !PyDict_Check(all_sums)
        || !PyDict_Check(all_counts)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "a minute's sums and counts must be dicts");
        goto done;
    }
    PyObject *sums = PyDict_GetItemWithError(all_sums, kind);
    if (sums == NULL) {
        if (PyErr_Occurred())
            goto done;
        int admitted = admit(self, 0, most, max_names);
        if (admitted != 0) {
            failed = admitted;
            goto done;
        }
        PyObject *new_sums = Py_BuildValue("{OO}", device, value);
        PyObject *new_counts = Py_BuildValue("{OO}", device, i_one);
        if (new_sums != NULL && new_counts != NULL && PyDict_SetItem(all_sums, kind, new_sums) == 0
            && PyDict_SetItem(all_counts, kind, new_counts) == 0)
            failed = 0;
        Py_XDECREF(new_sums);
        Py_XDECREF(new_counts);
        goto done;
    }
    PyObject *sum = PyDict_GetItemWithError(sums, device);
    if (sum == NULL) {
        if (PyErr_Occurred())
            goto done;
        Py_ssize_t held = PyObject_Length(sums);
        if (held < 0)
            goto done;
        int admitted = admit(self, held, most, max_names);
        if (admitted != 0) {
            failed = admitted;
            goto done;
        }
    }
    PyObject *counts = PyObject_GetItem(all_counts, kind);
    if (counts == NULL)
        goto done;
    PyObject *count = PyDict_GetItemWithError(counts, device);
    if (PyErr_Occurred()) {
        Py_DECREF(counts);
        goto done;
    }
    PyObject *new_sum = add_numbers(sum != NULL ? sum : f_zero, value);
    PyObject *new_count = count != NULL ? PyNumber_Add(count, i_one) : Py_NewRef(i_one);
    if (new_sum != NULL && new_count != NULL && PyObject_SetItem(sums, device, new_sum) == 0
        && PyObject_SetItem(counts, device, new_count) == 0)
        failed = 0;
    Py_XDECREF(new_sum);
    Py_XDECREF(new_count);
    Py_DECREF(counts);
done:
    Py_XDECREF(all_sums);
    Py_XDECREF(all_counts);
    return failed;
}

/* int(-(-ts // 60)) * 60: the end of the minute ``ts`` is in, as Python computes it. */
static PyObject *
minute_end(PyObject *ts)
{
    PyObject *negative = PyNumber_Negative(ts);
    if (negative == NULL)
        return NULL;
    PyObject *whole = PyNumber_FloorDivide(negative, i_sixty);
    Py_DECREF(negative);
    if (whole == NULL)
        return NULL;
    PyObject *up = PyNumber_Negative(whole);
    Py_DECREF(whole);
    if (up == NULL)
        return NULL;
    PyObject *as_int = PyNumber_Long(up);
    Py_DECREF(up);
    if (as_int == NULL)
        return NULL;
    PyObject *end = PyNumber_Multiply(as_int, i_sixty);
    Py_DECREF(as_int);
    return end;
}

/* end <= written.get(vm, 0): a minute already written. */
static int
already_written(PyObject *written, PyObject *vm, PyObject *end)
{
    PyObject *last = PyDict_GetItemWithError(written, vm);
    if (last == NULL) {
        if (PyErr_Occurred())
            return -1;
        return PyObject_RichCompareBool(end, i_zero, Py_LE);
    }
    return PyObject_RichCompareBool(end, last, Py_LE);
}

/* assembler._late(index, vm, end, reject): a sample for a minute already written. */
static int
call_late(PyObject *self, Py_ssize_t index, PyObject *vm, PyObject *end, PyObject *reject)
{
    PyObject *late = PyObject_GetAttr(self, s_late);
    if (late == NULL)
        return -1;
    int result = call_at(late, index, vm, end, reject, NULL);
    Py_DECREF(late);
    return result;
}

/* assembler._refuse_name(index, vm, kind, device, reason, reject): a device past a bound. */
static int
call_refuse_name(PyObject *self, Py_ssize_t index, PyObject *vm, PyObject *kind,
                 PyObject *device, PyObject *reason, PyObject *reject)
{
    PyObject *at = PyLong_FromSsize_t(index);
    if (at == NULL)
        return -1;
    PyObject *result = PyObject_CallMethodObjArgs(self, s_refuse_name, at, vm, kind, device,
                                                  reason, reject, NULL);
    Py_DECREF(at);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* assembler._refuse_long(index, vm, kind, device, reject): a device name too long. */
static int
call_refuse_long(PyObject *self, Py_ssize_t index, PyObject *vm, PyObject *kind,
                 PyObject *device, PyObject *reject)
{
    PyObject *at = PyLong_FromSsize_t(index);
    if (at == NULL)
        return -1;
    PyObject *result = PyObject_CallMethodObjArgs(self, s_refuse_long, at, vm, kind, device,
                                                  reject, NULL);
    Py_DECREF(at);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* The state of one add: what the reference holds in local names. */
typedef struct {
    PyObject *self, *open, *written, *newest, *last, *step, *reject, *now, *earliest, *latest,
        *finished, *most_obj, *max_names, *most_bytes_obj;
    Py_ssize_t most;  /* the assembler's max_devices */
    /* Its max_name_bytes, and that // 4: a name of no more characters is no more bytes. */
    Py_ssize_t most_bytes, short_name;
    double max_gap;
    PyObject *held_vm, *held_ts, *held;  /* strong references, or NULL */
} Adding;

static void
forget_held(Adding *a)
{
    Py_CLEAR(a->held_vm);
    Py_CLEAR(a->held_ts);
    Py_CLEAR(a->held);
}

/* The minute ``sample`` goes into, found or opened, as the reference does (a.held on 1; 0: the
 * sample was late and is done with; -1: an error). */
static int
find_minute(Adding *a, Py_ssize_t index, PyObject *vm, PyObject *ts)
{
    int same = a->held_vm != NULL && a->held_ts != NULL;
    if (same) {
        int differs = PyObject_RichCompareBool(ts, a->held_ts, Py_NE);
        if (differs < 0)
            return -1;
        if (!differs) {
            differs = PyObject_RichCompareBool(vm, a->held_vm, Py_NE);
            if (differs < 0)
                return -1;
        }
        if (!differs)
            return 1;
    }
    int result = -1, written;
    PyObject *minutes = NULL, *end = minute_end(ts);
    if (end == NULL)
        return -1;
    minutes = PyDict_GetItemWithError(a->open, vm);
    if (minutes == NULL) {
        if (PyErr_Occurred() || (written = already_written(a->written, vm, end)) < 0)
            goto done;
        if (written) {
            result = call_late(a->self, index, vm, end, a->reject) < 0 ? -1 : 0;
            goto done;
        }
        minutes = PyDict_New();
        if (minutes == NULL || PyDict_SetItem(a->open, vm, minutes) < 0)
            goto done;
    }
    else
        Py_INCREF(minutes);
    forget_held(a);
    PyObject *held = PyDict_GetItemWithError(minutes, end);
    if (held == NULL && PyErr_Occurred())
        goto done;
    a->held_vm = Py_NewRef(vm);
    a->held_ts = Py_NewRef(ts);
    if (held == NULL) {
        if ((written = already_written(a->written, vm, end)) < 0)
            goto done;
        if (written) {
            Py_CLEAR(a->held_vm);
            result = call_late(a->self, index, vm, end, a->reject) < 0 ? -1 : 0;
            goto done;
        }
        a->held = PyObject_CallOneArg(minute_type, a->now);
        if (a->held == NULL || PyDict_SetItem(minutes, end, a->held) < 0
            || add_attr(a->self, s_open_count, i_one) < 0)
            goto done;
        PyObject *count = PyObject_GetAttr(a->self, s_open_count);
        PyObject *most = PyObject_GetAttr(a->self, s_max_open);
        int over = count != NULL && most != NULL ? PyObject_RichCompareBool(count, most, Py_GT) : -1;
        Py_XDECREF(count);
        Py_XDECREF(most);
        if (over < 0)
            goto done;
        if (over) {
            Py_CLEAR(a->held_vm);  /* the minute forced out may be this one */
            PyObject *forced = PyObject_CallMethodOneArg(a->self, s_force_oldest, a->held);
            if (forced == NULL)
                goto done;
            Py_DECREF(forced);
        }
    }
    else {
        a->held = Py_NewRef(held);
        if (PyObject_SetAttr(held, s_touched, a->now) < 0)
            goto done;
    }
    PyObject *newest = PyDict_GetItemWithError(a->newest, vm);
    if (newest == NULL && PyErr_Occurred())
        goto done;
    int later = newest == NULL ? PyObject_RichCompareBool(ts, f_zero, Py_GT)
                               : PyObject_RichCompareBool(ts, newest, Py_GT);
    if (later < 0)
        goto done;
    if (later) {
        if (PyDict_SetItem(a->newest, vm, ts) < 0)
            goto done;
        if (PyDict_GET_SIZE(minutes) > 1 && PySet_Add(a->finished, vm) < 0)
            goto done;
    }
    result = 1;
done:
    Py_XDECREF(minutes);
    Py_DECREF(end);
    return result;
}

/* Is ``device`` longer than max_name_bytes (1), or not (0); -1 on an error.  The reference's
 * ``len(device) > short and _too_long(device, most)``: a str of ASCII is judged here by its
 * length, which is its bytes; anything else longer than ``short`` by the same Python. */
static int
name_too_long(Adding *a, PyObject *device)
{
    if (PyUnicode_CheckExact(device)) {
        Py_ssize_t length = PyUnicode_GET_LENGTH(device);
        if (length <= a->short_name)
            return 0;
        if (PyUnicode_IS_ASCII(device))
            return length > a->most_bytes;
    }
    PyObject *answer = PyObject_CallFunctionObjArgs(too_long_fn, device, a->most_bytes_obj, NULL);
    if (answer == NULL)
        return -1;
    int too = PyObject_IsTrue(answer);
    Py_DECREF(answer);
    return too;
}

/* One sample; 0 when done with (filed or refused), -1 on an error. */
static int add_tuple(Adding *a, Py_ssize_t index, PyObject *sample);

static int
add_one(Adding *a, Py_ssize_t index, PyObject *sample)
{
    if (PyTuple_Check(sample))
        return add_tuple(a, index, sample);
    PyObject *as_tuple = PySequence_Tuple(sample);  /* unpacked as the reference would */
    if (as_tuple == NULL)
        return -1;
    int result = add_tuple(a, index, as_tuple);
    Py_DECREF(as_tuple);
    return result;
}

static int
add_tuple(Adding *a, Py_ssize_t index, PyObject *sample)
{
    if (PyTuple_GET_SIZE(sample) != 5) {
        PyErr_Format(PyExc_ValueError, "a sample is (vm, ts, kind, device, value), not %zd items",
                     PyTuple_GET_SIZE(sample));
        return -1;
    }
    PyObject *vm = PyTuple_GET_ITEM(sample, 0), *ts = PyTuple_GET_ITEM(sample, 1),
             *kind = PyTuple_GET_ITEM(sample, 2), *device = PyTuple_GET_ITEM(sample, 3),
             *value = PyTuple_GET_ITEM(sample, 4);
    int inside = le(a->earliest, ts);
    if (inside > 0)
        inside = le(ts, a->latest);
    if (inside < 0)
        return -1;
    if (!inside)
        return call_at(refuse_time, index, ts, a->now, a->latest, a->reject);
    int too_long = name_too_long(a, device);  /* before a counter holds the name */
    if (too_long)
        return too_long < 0 ? -1 : call_refuse_long(a->self, index, vm, kind, device, a->reject);
    Py_INCREF(kind);
    Py_INCREF(value);
    int result = -1;
    PyObject *counter = PyDict_GetItemWithError(counters, kind);
    if (counter != NULL) {
        /* Not below zero, nor past the largest double (minutes._file: value >= 0 and
         * value <= _DOUBLE_MAX, compared as it compares them, so the errors match too). */
        int taken;
        if (PyFloat_CheckExact(value))
            taken = PyFloat_AS_DOUBLE(value) >= 0.0 && PyFloat_AS_DOUBLE(value) <= DBL_MAX;
        else if (PyLong_CheckExact(value)) {  /* Telegraf's counters: no call below 2**63 */
            int overflow;
            long long whole = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (whole == -1 && PyErr_Occurred())
                goto done;
            taken = overflow == 0 ? whole >= 0
                  : overflow < 0 ? 0 : PyObject_RichCompareBool(value, f_double_max, Py_LE);
        }
        else {
            taken = PyObject_RichCompareBool(value, i_zero, Py_GE);
            if (taken > 0)
                taken = PyObject_RichCompareBool(value, f_double_max, Py_LE);
        }
        if (taken < 0)
            goto done;
        if (!taken) {
            result = call_at(refuse_counter, index, kind, value, Py_None, a->reject);
            goto done;
        }
        PyObject *key = PyTuple_Pack(3, vm, kind, device);
        if (key == NULL)
            goto done;
        PyObject *rate = quick_step(a->last, key, ts, value, a->max_gap);
        if (rate == NULL && !PyErr_Occurred())
            rate = PyObject_CallFunctionObjArgs(a->step, key, ts, value, NULL);
        Py_DECREF(key);
        if (rate == NULL)
            goto done;
        if (rate == Py_None) {
            Py_DECREF(rate);
            result = 0;
            goto done;
        }
        Py_SETREF(value, rate);
        Py_SETREF(kind, Py_NewRef(PyTuple_GET_ITEM(counter, 0)));
        PyObject *high = PyTuple_GET_ITEM(counter, 1);
        int above = PyFloat_CheckExact(value) && PyFloat_CheckExact(high)
            ? PyFloat_AS_DOUBLE(value) > PyFloat_AS_DOUBLE(high)
            : PyObject_RichCompareBool(value, high, Py_GT);
        if (above < 0)
            goto done;
        if (above) {
            result = call_at(refuse_rate, index, kind, value, high, a->reject);
            goto done;
        }
    }
    else if (PyErr_Occurred())
        goto done;
    else {
        PyObject *limit = PyDict_GetItemWithError(limits, kind);
        if (limit == NULL && PyErr_Occurred())
            goto done;
        if (limit != NULL) {
            PyObject *low = PyTuple_GET_ITEM(limit, 0), *high = PyTuple_GET_ITEM(limit, 1);
            int inside_limit = le(low, value);
            if (inside_limit > 0)
                inside_limit = le(value, high);
            if (inside_limit < 0)
                goto done;
            if (!inside_limit) {
                PyObject *kept = PyObject_CallFunctionObjArgs(
                    within_fn, kind, value, low, high, PyTuple_GET_ITEM(limit, 2), NULL);
                if (kept == NULL) {
                    if (!PyErr_ExceptionMatches(out_of_range))
                        goto done;
                    PyObject *type, *exc, *trace;
                    PyErr_Fetch(&type, &exc, &trace);
                    PyErr_NormalizeException(&type, &exc, &trace);
                    PyObject *detail = exc != NULL ? PyObject_GetAttr(exc, s_detail) : NULL;
                    Py_XDECREF(type);
                    Py_XDECREF(exc);
                    Py_XDECREF(trace);
                    if (detail == NULL)
                        goto done;
                    result = call_at(a->reject, index, r_range, detail, NULL, NULL);
                    Py_DECREF(detail);
                    goto done;
                }
                Py_SETREF(value, kept);
            }
        }
    }
    int found = find_minute(a, index, vm, ts);
    if (found <= 0) {
        result = found;
        goto done;
    }
    int is_rate = PySet_Contains(rate_kinds, kind);
    if (is_rate < 0)
        goto done;
    if (is_rate) {
        result = put_rate(a->held, kind, device, value, a->most, a->self, a->max_names);
        if (result > 0)
            result = call_refuse_name(a->self, index, vm, kind, device,
                                      result == 1 ? r_device_cap : r_name_budget, a->reject);
        goto done;
    }
    int quick = put_quick(a->held, kind, value);
    if (quick != 0) {
        result = quick < 0 ? -1 : 0;
        goto done;
    }
    PyObject *put = PyObject_CallFunctionObjArgs(put_fn, a->held, kind, device, value, ts,
                                                 a->self, NULL);
    if (put == NULL)
        goto done;
    /* None: filed; else the reason it was refused, worded by the same Python. */
    result = put == Py_None ? 0
        : call_refuse_name(a->self, index, vm, kind, device, put, a->reject);
    Py_DECREF(put);
done:
    Py_DECREF(kind);
    Py_DECREF(value);
    return result;
}

PyDoc_STRVAR(add_doc,
"add(assembler, samples, now, earliest, latest, reject) -> set of the VMs whose newer\n"
"samples may have finished an earlier minute (MinuteAssembler.add's loop).");

static PyObject *
add(PyObject *module, PyObject *args)
{
    Adding a = {0};
    PyObject *samples, *rates = NULL, *gap = NULL, *fast = NULL, *done = NULL;
    if (minute_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_minutes.configure was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOOOO", &a.self, &samples, &a.now, &a.earliest, &a.latest,
                          &a.reject))
        return NULL;
    if ((a.open = PyObject_GetAttrString(a.self, "open")) == NULL
        || (a.written = PyObject_GetAttrString(a.self, "written")) == NULL
        || (a.newest = PyObject_GetAttrString(a.self, "newest")) == NULL
        || (rates = PyObject_GetAttrString(a.self, "rates")) == NULL
        || (a.last = PyObject_GetAttr(rates, s_last)) == NULL
        || (a.step = PyObject_GetAttr(rates, s_step)) == NULL
        || (gap = PyObject_GetAttr(rates, s_max_gap)) == NULL
        || (a.most_obj = PyObject_GetAttrString(a.self, "max_devices")) == NULL
        || (a.max_names = PyObject_GetAttrString(a.self, "max_names")) == NULL
        || (a.most_bytes_obj = PyObject_GetAttrString(a.self, "max_name_bytes")) == NULL)
        goto out;
    /* Ints, as the reference compares them with lengths (past a Py_ssize_t: never). */
    if ((a.most = PyNumber_AsSsize_t(a.most_obj, NULL)) == -1 && PyErr_Occurred())
        goto out;
    if ((a.most_bytes = PyNumber_AsSsize_t(a.most_bytes_obj, NULL)) == -1 && PyErr_Occurred())
        goto out;
    /* most_bytes // 4 as Python floors it (a bound below 0 too) */
    a.short_name = a.most_bytes / 4 - (a.most_bytes < 0 && a.most_bytes % 4 != 0);
    if (!PyDict_Check(a.open) || !PyDict_Check(a.written) || !PyDict_Check(a.newest)
        || !PyDict_Check(a.last)) {
        PyErr_SetString(PyExc_TypeError, "the assembler's state must be dicts");
        goto out;
    }
    /* A gap that is not a float or an int a double holds exactly: every step by the
     * reference's (no elapsed time is <= -1). */
    a.max_gap = -1.0;
    if (PyFloat_CheckExact(gap))
        a.max_gap = PyFloat_AS_DOUBLE(gap);
    else if (PyLong_CheckExact(gap)) {
        int overflow = 0;
        long long whole = PyLong_AsLongLongAndOverflow(gap, &overflow);
        if (whole == -1 && PyErr_Occurred())
            goto out;
        if (!overflow && whole >= 0 && whole <= (1LL << 53))
            a.max_gap = (double)whole;
    }
    if ((a.finished = PySet_New(NULL)) == NULL
        || (fast = PySequence_Fast(samples, "samples must be a sequence")) == NULL)
        goto out;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (add_one(&a, i, PySequence_Fast_GET_ITEM(fast, i)) < 0)
            goto out;
    }
    done = a.finished;  /* the caller's now */
    a.finished = NULL;
out:  /* on success too: every reference this call took is dropped here */
    forget_held(&a);
    Py_XDECREF(fast);
    Py_XDECREF(a.finished);
    Py_XDECREF(a.open);
    Py_XDECREF(a.written);
    Py_XDECREF(a.newest);
    Py_XDECREF(rates);
    Py_XDECREF(a.last);
    Py_XDECREF(a.step);
    Py_XDECREF(gap);
    Py_XDECREF(a.most_obj);
    Py_XDECREF(a.max_names);
    Py_XDECREF(a.most_bytes_obj);
    return done;
}

PyDoc_STRVAR(configure_doc,
"configure(Minute, put, within, OutOfRange, counters, limits, rate_kinds, refuse_time,\n"
"refuse_counter, refuse_rate, R_RANGE, R_DEVICE_CAP, R_NAME_BUDGET, too_long): minutes.py's\n"
"tables and helpers, once.");

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *given[14];
    if (!PyArg_ParseTuple(args, "OOOOO!O!O!OOOUUUO", &given[0], &given[1], &given[2], &given[3],
                          &PyDict_Type, &given[4], &PyDict_Type, &given[5],
                          &PyFrozenSet_Type, &given[6], &given[7], &given[8], &given[9],
                          &given[10], &given[11], &given[12], &given[13]))
        return NULL;
    PyObject **slots[] = {&minute_type, &put_fn, &within_fn, &out_of_range, &counters, &limits,
                          &rate_kinds, &refuse_time, &refuse_counter, &refuse_rate, &r_range,
                          &r_device_cap, &r_name_budget, &too_long_fn};
    for (int i = 0; i < 14; i++)
        Py_XSETREF(*slots[i], Py_NewRef(given[i]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"add", add, METH_VARARGS, add_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_minutes", "MinuteAssembler.add's loop in C (see minutes.py).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__minutes(void)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_cpu, "cpu"}, {&s_mem, "mem"}, {&s_mem_mb, "mem_mb"}, {&s_vcpus, "vcpus"}, {&s_sums, "sums"}, {&s_counts, "counts"},
        {&s_touched, "touched"}, {&s_cpu_sum, "cpu_sum"}, {&s_cpu_count, "cpu_count"},
        {&s_cpu_max, "cpu_max"}, {&s_mem_sum, "mem_sum"}, {&s_mem_count, "mem_count"},
        {&s_detail, "detail"}, {&s_open_count, "open_count"}, {&s_max_open, "max_open"},
        {&s_force_oldest, "_force_oldest"}, {&s_late, "_late"},
        {&s_refuse_name, "_refuse_name"}, {&s_refuse_long, "_refuse_long"}, {&s_names, "names"}, {&s_step, "step"},
        {&s_last, "last"}, {&s_max_gap, "max_gap"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    }
    if ((f_zero = PyFloat_FromDouble(0.0)) == NULL || (i_one = PyLong_FromLong(1)) == NULL
        || (f_double_max = PyFloat_FromDouble(DBL_MAX)) == NULL
        || (i_zero = PyLong_FromLong(0)) == NULL || (i_sixty = PyLong_FromLong(60)) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m != NULL && PyModule_AddIntConstant(m, "VERSION", MODULE_VERSION) < 0)
        Py_CLEAR(m);
    return m;
}
