/* _refit.c: the C extension of the refit Python module, over librefit.so's public API (refit.h).
 *
 *   Plan(name)    one plan of the library: its numbers, tensors by name, what a rank binds, checks
 *   Engine(...)   one rf_engine: bind, listen/export, connect/import, push/wait, versions, counters
 *   dlpack(cap)   the description of a DLPack capsule (legacy or versioned), without consuming it
 *
 * refit/__init__.py builds the user-facing classes on these. Every Engine call takes the engine's
 * lock with the GIL released (the engine is single-threaded; waits may take seconds), and copies
 * rf_last_error() before it lets go of the lock. Calls in flight are counted (`busy`, under the GIL):
 * close() marks the engine closing, waits until none is left and only then calls rf_close, so no
 * call runs on a closed engine; waits run in slices of at most 100 ms and between slices a waiter
 * that finds the engine closing raises refit.Error "... the engine was closed while it waited ...".
 * Errors raise refit.Error or its subclasses BindError, TornError and TimeoutError, with .status
 * (the rf_status number), .status_name, .version and .reason. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <string.h>
#include <time.h>

#include "refit.h"

static PyObject *Error, *BindError, *TornError, *TimeoutError_;

static const char *const status_names[] = {
#define RF__NAME(name, text) #name,
  RF_STATUS_LIST(RF__NAME)
#undef RF__NAME
};

/* set the error: class cls (NULL: by status) for s with message msg; version and reason (NULL: None) for TornError */
static PyObject *set_error(PyObject *cls, rf_status s, const char *msg, uint64_t version, const char *reason)
{
  if (!cls) cls = s == RF_ERR_TORN ? TornError : s == RF_ERR_TIMEOUT ? TimeoutError_ : s == RF_ERR_TYPE ? BindError : Error;
  PyObject *e = PyObject_CallFunction(cls, "s", msg);
  if (!e) return NULL;
  const char *name = (unsigned)s < sizeof status_names / sizeof status_names[0] ? status_names[s] : "unknown";
  PyObject *st = PyLong_FromLong((long)s), *nm = PyUnicode_FromString(name);
  PyObject *v = version ? PyLong_FromUnsignedLongLong(version) : Py_NewRef(Py_None);
  PyObject *r = reason ? PyUnicode_FromString(reason) : Py_NewRef(Py_None);
  if (st && nm && v && r && PyObject_SetAttrString(e, "status", st) == 0 && PyObject_SetAttrString(e, "status_name", nm) == 0 &&
      PyObject_SetAttrString(e, "version", v) == 0 && PyObject_SetAttrString(e, "reason", r) == 0)
    PyErr_SetObject(cls, e);
  Py_XDECREF(st);
  Py_XDECREF(nm);
  Py_XDECREF(v);
  Py_XDECREF(r);
  Py_DECREF(e);
  return NULL;
}

/* Python int `o` as a uint64_t in [lo, hi] into *out; else TypeError (not an int), OverflowError (outside
 * 0 .. 2**64 - 1: PyArg's "K" would wrap it) or ValueError (a reserved value), each naming `what` */
static int u64_arg(PyObject *o, const char *what, uint64_t lo, uint64_t hi, uint64_t *out)
{
  PyObject *i = PyNumber_Index(o);
  if (!i) {
    PyErr_Format(PyExc_TypeError, "%s must be an int, not %.80s", what, Py_TYPE(o)->tp_name);
    return -1;
  }
  unsigned long long v = PyLong_AsUnsignedLongLong(i);
  if (v == (unsigned long long)-1 && PyErr_Occurred()) {
    PyErr_Clear();
    PyErr_Format(PyExc_OverflowError, "%s %R is out of range: it must be %llu <= %s <= %llu", what, i,
                 (unsigned long long)lo, what, (unsigned long long)hi);
    Py_DECREF(i);
    return -1;
  }
  if (v < lo || v > hi) {
    PyErr_Format(PyExc_ValueError, "%s %llu is out of range: it must be %llu <= %s <= %llu", what, v,
                 (unsigned long long)lo, what, (unsigned long long)hi);
    Py_DECREF(i);
    return -1;
  }
  Py_DECREF(i);
  *out = v;
  return 0;
}

/* versions: 0 means "none" (rf_version_state) and a receiver that completed 2**64 - 1 could never
 * take another (its successor would wrap to 0), so both are refused */
#define VERSION_MAX (UINT64_MAX - 1)
static int version_arg(PyObject *o, uint64_t *out) { return u64_arg(o, "version", 1, VERSION_MAX, out); }

/* ------------------------------------------ Plan ------------------------------------------ */

typedef struct {
  PyObject_HEAD
  const rf_plan *p;
} PlanObject;

static int plan_init(PlanObject *self, PyObject *args, PyObject *kw)
{
  static char *kws[] = {"name", NULL};
  const char *name;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "s", kws, &name)) return -1;
  self->p = rf_plan_find(name);
  if (self->p) return 0;
  char msg[8192]; /* every plan's name: the default set has some 60 */
  size_t k = (size_t)snprintf(msg, sizeof msg, "no plan '%s' in this librefit.so (it has:", name);
  for (uint32_t i = 0; i < rf_plan_count() && k < sizeof msg; i++)
    k += (size_t)snprintf(msg + k, sizeof msg - k, " %s", rf_plan_at(i)->name);
  if (k < sizeof msg) snprintf(msg + k, sizeof msg - k, "; ./configure --plans=... chooses them)");
  set_error(Error, RF_ERR_ARG, msg, 0, NULL);
  return -1;
}

static PyObject *plan_attrs(PlanObject *self, PyObject *noargs)
{
  (void)noargs;
  const rf_plan *p = self->p;
  return Py_BuildValue("{s:s,s:s,s:K,s:K,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "name", p->name, "model", p->model,
                       "layout_hash", (unsigned long long)p->layout_hash, "total_bytes", (unsigned long long)p->total_bytes,
                       "fsdp", p->fsdp, "dp_replicate", p->dp_replicate, "trainers", p->trainers, "tp", p->tp, "ep", p->ep,
                       "replicas", p->replicas, "receivers", p->receivers, "n_src", p->n_src, "n_dst", p->n_dst,
                       "n_derived", p->n_derived, "scale_fmt", p->scale_fmt == RF_SCALE_UE8M0 ? "ue8m0" : "fp32");
}

static PyObject *dims_tuple(const int64_t *v, int n)
{
  PyObject *t = PyTuple_New(n);
  for (int i = 0; t && i < n; i++) PyTuple_SET_ITEM(t, i, PyLong_FromLongLong(v[i]));
  return t;
}

static PyObject *id_or_none(uint32_t id) { return id == RF_NONE ? Py_NewRef(Py_None) : PyLong_FromUnsignedLong(id); }

/* (name, id, side, dtype, shape, row0, rows, bytes, travel, owner, stride, aliases, pad_rows, offset, storage,
 * view_of) */
static PyObject *info_tuple(const rf_tensor_info *t)
{
  PyObject *shape = dims_tuple(t->shape, t->ndim), *stride = dims_tuple(t->stride, t->ndim);
  if (!shape || !stride) {
    Py_XDECREF(shape);
    Py_XDECREF(stride);
    return NULL;
  }
  return Py_BuildValue("(sIiiNLLKiNNsLLNN)", t->name, t->id, (int)t->side, (int)t->dtype, shape, (long long)t->row0,
                       (long long)t->rows, (unsigned long long)t->bytes, (int)t->travel, id_or_none(t->owner), stride,
                       t->aliases ? t->aliases : "", (long long)t->pad_rows, (long long)t->offset,
                       id_or_none(t->storage), id_or_none(t->view_of));
}

static PyObject *plan_find(PlanObject *self, PyObject *args)
{
  int side;
  unsigned rank;
  const char *name;
  if (!PyArg_ParseTuple(args, "iIs", &side, &rank, &name)) return NULL;
  uint32_t id = rf_find(self->p, side, rank, name);
  if (id == RF_NONE) Py_RETURN_NONE;
  return PyLong_FromUnsignedLong(id);
}

static PyObject *plan_describe(PlanObject *self, PyObject *args)
{
  int side;
  unsigned rank, id;
  if (!PyArg_ParseTuple(args, "iII", &side, &rank, &id)) return NULL;
  rf_tensor_info t;
  if (rf_describe(self->p, side, rank, id, &t) != RF_OK) {
    char msg[160];
    snprintf(msg, sizeof msg, "plan '%s': no tensor %u of side %d for rank %u", self->p->name, id, side, rank);
    return set_error(Error, RF_ERR_ARG, msg, 0, NULL);
  }
  return info_tuple(&t);
}

static PyObject *plan_list(PlanObject *self, PyObject *args)
{
  int side;
  unsigned rank;
  if (!PyArg_ParseTuple(args, "iI", &side, &rank)) return NULL;
  uint32_t n = 0;
  rf_status s = rf_list(self->p, side, rank, NULL, 0, &n);
  rf_tensor_info *v = s == RF_OK ? PyMem_Malloc((n ? n : 1) * sizeof *v) : NULL;
  if (s == RF_OK && !v) return PyErr_NoMemory();
  if (s == RF_OK) s = rf_list(self->p, side, rank, v, n, &n);
  if (s != RF_OK) {
    PyMem_Free(v);
    char msg[160];
    snprintf(msg, sizeof msg, "plan '%s': no rank %u on side %d", self->p->name, rank, side);
    return set_error(Error, s, msg, 0, NULL);
  }
  PyObject *out = PyList_New(n);
  for (uint32_t i = 0; out && i < n; i++) {
    PyObject *t = info_tuple(&v[i]);
    if (!t) Py_CLEAR(out);
    else PyList_SET_ITEM(out, i, t);
  }
  PyMem_Free(v);
  return out;
}

/* receiver r: (replica, position, bytes, [(trainer, bytes, writes) for each peer]) */
static PyObject *plan_receiver(PlanObject *self, PyObject *args)
{
  unsigned r;
  if (!PyArg_ParseTuple(args, "I", &r)) return NULL;
  if (r >= self->p->receivers) return set_error(Error, RF_ERR_ARG, "receiver index out of range", 0, NULL);
  const rf_receiver *rv = &self->p->recv[r];
  PyObject *peers = PyList_New(rv->peer_count);
  for (uint32_t i = 0; peers && i < rv->peer_count; i++) {
    const rf_peer *q = &self->p->peers[rv->peer_first + i];
    PyList_SET_ITEM(peers, i, Py_BuildValue("(IKI)", q->trainer, (unsigned long long)q->bytes, q->writes));
  }
  if (!peers) return NULL;
  return Py_BuildValue("(IIKN)", rv->replica, rv->tp_rank, (unsigned long long)rv->bytes, peers);
}

/* receiver r's finalize steps in table order: [(step name, dst name, kind)] */
static PyObject *plan_finalize(PlanObject *self, PyObject *args)
{
  unsigned r;
  if (!PyArg_ParseTuple(args, "I", &r)) return NULL;
  const rf_plan *p = self->p;
  if (r >= p->receivers) return set_error(Error, RF_ERR_ARG, "receiver index out of range", 0, NULL);
  uint32_t pos = p->recv[r].tp_rank, first = 0, n = 0;
  if (p->n_finalize && pos < p->n_fin_index) first = p->fin_index[pos].first, n = p->fin_index[pos].count;
  PyObject *out = PyList_New(n);
  for (uint32_t i = 0; out && i < n; i++) {
    const rf_finalize *f = &p->finalize[first + i];
    PyObject *t = Py_BuildValue("(ssI)", f->name, p->dst[f->dst].name, (unsigned)f->kind);
    if (!t) Py_CLEAR(out);
    else PyList_SET_ITEM(out, i, t);
  }
  return out;
}

/* trainer rank t: (shard, replicate, bytes_out) */
static PyObject *plan_trainer(PlanObject *self, PyObject *args)
{
  unsigned t;
  if (!PyArg_ParseTuple(args, "I", &t)) return NULL;
  if (t >= self->p->trainers) return set_error(Error, RF_ERR_ARG, "trainer rank out of range", 0, NULL);
  const rf_rank *rk = &self->p->ranks[t];
  return Py_BuildValue("(IIK)", rk->shard, rk->replicate, (unsigned long long)rk->bytes_out);
}

/* desc = (data, device_type, device_id, code, bits, lanes, shape, strides or None, row0, readonly, offset) */
typedef struct {
  rf_tensor t;
  int64_t shape[8], strides[8];
} tensor_buf;

static int parse_desc(PyObject *desc, tensor_buf *b)
{
  unsigned long long data;
  int dev_type, dev_id, code, bits, lanes, readonly;
  long long row0, offset;
  PyObject *shape, *strides;
  if (!PyArg_ParseTuple(desc, "KiiiiiO!OLpL", &data, &dev_type, &dev_id, &code, &bits, &lanes, &PyTuple_Type, &shape,
                        &strides, &row0, &readonly, &offset))
    return -1;
  Py_ssize_t n = PyTuple_GET_SIZE(shape);
  if (n > 8 || (strides != Py_None && (!PyTuple_Check(strides) || PyTuple_GET_SIZE(strides) != n))) {
    PyErr_SetString(PyExc_ValueError, "tensor description: at most 8 dimensions, strides a tuple like shape or None");
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    b->shape[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, i));
    if (strides != Py_None) b->strides[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(strides, i));
  }
  if (PyErr_Occurred()) return -1;
  b->t = (rf_tensor){.data = (void *)(uintptr_t)data, .device_type = dev_type, .device_id = dev_id,
                     .dtype_code = (uint8_t)code, .dtype_bits = (uint8_t)bits, .dtype_lanes = (uint16_t)lanes,
                     .ndim = (int32_t)n, .shape = b->shape, .strides = strides == Py_None ? NULL : b->strides,
                     .row0 = row0, .readonly = readonly, .offset = offset};
  return 0;
}

/* check(role, rank, mem, cuda_device, side, id, desc): rf_check without an engine */
static PyObject *plan_check(PlanObject *self, PyObject *args)
{
  int role, mem, dev, side;
  unsigned rank, id;
  PyObject *desc;
  if (!PyArg_ParseTuple(args, "iIiiiIO!", &role, &rank, &mem, &dev, &side, &id, &PyTuple_Type, &desc)) return NULL;
  tensor_buf b;
  if (parse_desc(desc, &b)) return NULL;
  rf_config cfg = {.plan = self->p, .role = role, .rank = rank, .mem = mem, .cuda_device = dev};
  char err[1024];
  rf_status s = rf_check(&cfg, side, id, &b.t, err, sizeof err);
  if (s != RF_OK) return set_error(BindError, s, err, 0, NULL);
  Py_RETURN_NONE;
}

static PyMethodDef plan_methods[] = {
  {"attrs", (PyCFunction)plan_attrs, METH_NOARGS, "the plan's numbers as a dict"},
  {"find", (PyCFunction)plan_find, METH_VARARGS, "find(side, rank, name) -> id or None"},
  {"describe", (PyCFunction)plan_describe, METH_VARARGS, "describe(side, rank, id) -> info tuple"},
  {"list", (PyCFunction)plan_list, METH_VARARGS, "list(side, rank) -> info tuples of every tensor rank binds"},
  {"receiver", (PyCFunction)plan_receiver, METH_VARARGS, "receiver(r) -> (replica, position, bytes, peers)"},
  {"finalize", (PyCFunction)plan_finalize, METH_VARARGS, "finalize(r) -> [(step, dst name, kind)]"},
  {"trainer", (PyCFunction)plan_trainer, METH_VARARGS, "trainer(t) -> (shard, replicate, bytes_out)"},
  {"check", (PyCFunction)plan_check, METH_VARARGS, "check(role, rank, mem, cuda_device, side, id, desc)"},
  {NULL, NULL, 0, NULL},
};

static PyTypeObject PlanType = {
  PyVarObject_HEAD_INIT(NULL, 0)
  .tp_name = "refit._refit.Plan",
  .tp_basicsize = sizeof(PlanObject),
  .tp_flags = Py_TPFLAGS_DEFAULT,
  .tp_doc = "the tables of one plan of librefit.so",
  .tp_new = PyType_GenericNew,
  .tp_init = (initproc)plan_init,
  .tp_methods = plan_methods,
};

/* ----------------------------------------- Engine ----------------------------------------- */

typedef struct {
  PyObject_HEAD
  rf_engine *e;
  PyThread_type_lock lock;
  PyObject *plan, *keep; /* the Plan (its tables outlive the engine) and the bound tensors' owners */
  int role, progress_thread;
  int busy, closing, closers; /* calls in flight; close() begun; close() calls waiting for them (all under the GIL) */
  PyObject *fin_fn;          /* set_finalize's callable, or NULL */
  unsigned long hook_thread; /* the thread running fin_fn (under the GIL), 0 when none */
} EngineObject;

#define SLICE_MS 100 /* the longest a wait holds the engine's lock before it looks at `closing` and signals */

/* Run `call` under the engine's lock without the GIL; on failure copy the engine's last error into
 * err. `s` receives the status. */
#define LOCKED(self, s, call, err)                                              \
  do {                                                                          \
    Py_BEGIN_ALLOW_THREADS                                                      \
    PyThread_acquire_lock((self)->lock, WAIT_LOCK);                             \
    (s) = (call);                                                               \
    if ((s) != RF_OK && (s) != RF_AGAIN)                                        \
      snprintf((err), sizeof(err), "%s", rf_last_error((self)->e));             \
    PyThread_release_lock((self)->lock);                                        \
    Py_END_ALLOW_THREADS                                                        \
  } while (0)

static void engine_close_now(EngineObject *self);

/* Engine calls under way on this thread (of any engine): a close() from a signal handler that runs
 * inside a wait's slice loop must not wait for that wait, which is its own caller */
static _Thread_local int calls_here;

/* a call starts: refused once close() began; else counted until leave() */
static int enter(EngineObject *self)
{
  if (!self->e || self->closing) {
    set_error(Error, RF_ERR_STATE, "the engine is closed", 0, NULL);
    return -1;
  }
  /* the hook's thread holds the engine's lock (and, without a progress thread, self->lock): a call
   * from it would wait for itself */
  if (self->hook_thread && self->hook_thread == PyThread_get_thread_ident()) {
    set_error(Error, RF_ERR_STATE, "a call into the receiver from inside its finalize hook", 0, NULL);
    return -1;
  }
  self->busy++;
  calls_here++;
  return 0;
}

/* a call ends; the last one out closes an engine whose close() was left to it */
static void leave(EngineObject *self)
{
  self->busy--;
  calls_here--;
  if (self->closing && !self->busy && !self->closers && self->e) engine_close_now(self);
}

/* a wait between two slices that finds close() under way: for version v (0: the push under way) */
static PyObject *closed_while_waiting(uint64_t v)
{
  static const char why[] = "the engine was closed while it waited (close() from another thread or a signal handler)";
  char msg[200];
  if (v) snprintf(msg, sizeof msg, "wait for version %llu: %s", (unsigned long long)v, why);
  else snprintf(msg, sizeof msg, "wait for the push: %s", why);
  return set_error(Error, RF_ERR_STATE, msg, v, NULL);
}

/* Engine methods: `name` enters, runs name_impl (which may assume an open engine) and leaves */
#define ENGINE_CALL(name)                                                \
  static PyObject *name##_impl(EngineObject *self, PyObject *args);     \
  static PyObject *name(EngineObject *self, PyObject *args)             \
  {                                                                     \
    if (enter(self)) return NULL;                                       \
    PyObject *r = name##_impl(self, args);                              \
    leave(self);                                                        \
    return r;                                                           \
  }                                                                     \
  static PyObject *name##_impl(EngineObject *self, PyObject *args)

static uint64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int engine_init(EngineObject *self, PyObject *args, PyObject *kw)
{
  static char *kws[] = {"plan", "role", "rank", "token", "mem", "cuda_device", "max_inflight", "timeout_ms", "ucx_tls",
                        "nic_mode", "gpu_bdf", "sysfs_root", "nic_min_gbps", "no_peer_errors", "direct",
                        "handshake_ms", "auto_arm", "skip_down", "progress_thread", "delta", NULL};
  PyObject *plan;
  rf_config cfg = {0};
  unsigned rank, max_inflight = 0, timeout_ms = 0, handshake_ms = 0;
  PyObject *token_obj;
  uint64_t token;
  int role, mem = RF_MEM_HOST, dev = 0, npe = 0, direct = 0, auto_arm = 0, skip_down = 0, prog = 0, delta = 0;
  const char *tls = NULL, *nic = NULL, *bdf = NULL, *sysfs = NULL;
  double min_gbps = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O!iIO|iiIIzzzzdppIpppp", kws, &PlanType, &plan, &role, &rank, &token_obj,
                                   &mem, &dev, &max_inflight, &timeout_ms, &tls, &nic, &bdf, &sysfs, &min_gbps, &npe,
                                   &direct, &handshake_ms, &auto_arm, &skip_down, &prog, &delta))
    return -1;
  if (u64_arg(token_obj, "token", 0, UINT64_MAX, &token)) return -1;
  if (self->e) {
    PyErr_SetString(PyExc_RuntimeError, "Engine.__init__ called twice");
    return -1;
  }
  cfg = (rf_config){.plan = ((PlanObject *)plan)->p, .role = role, .rank = rank, .token = token, .mem = mem,
                    .cuda_device = dev, .max_inflight = max_inflight, .timeout_ms = timeout_ms, .ucx_tls = tls,
                    .nic_mode = nic, .gpu_bdf = bdf, .sysfs_root = sysfs, .nic_min_gbps = min_gbps,
                    .no_peer_errors = npe, .direct = direct, .handshake_ms = handshake_ms, .auto_arm = auto_arm,
                    .skip_down = skip_down, .progress_thread = prog, .delta = delta};
  if (!(self->lock = PyThread_allocate_lock()) || !(self->keep = PyList_New(0))) {
    PyErr_NoMemory();
    return -1;
  }
  self->plan = Py_NewRef(plan);
  self->role = role;
  self->progress_thread = prog;
  rf_engine *e = NULL;
  rf_status s;
  char err[600] = "";
  Py_BEGIN_ALLOW_THREADS
  s = rf_open(&cfg, &e);
  if (s != RF_OK) {
    snprintf(err, sizeof err, "rf_open: %s", rf_last_error(e));
    rf_close(e); /* a failed rf_open's engine is closed too */
    e = NULL;
  }
  Py_END_ALLOW_THREADS
  if (s != RF_OK) {
    set_error(NULL, s, err, 0, NULL);
    return -1;
  }
  self->e = e;
  return 0;
}

static void engine_close_now(EngineObject *self)
{
  if (!self->e) return;
  self->closing = 1;
  /* called from inside a call on this thread (a signal handler run between a wait's slices): the
   * engine closes when that call leaves, at once after the handler, raising "closed" */
  if (self->busy && calls_here) return;
  self->closers++;
  while (self->busy) { /* wait for the calls in flight: each leaves within a slice once it sees `closing` */
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK); /* free once the call's slice ended */
    PyThread_release_lock(self->lock);
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL); /* and the call takes the GIL back to leave */
    Py_END_ALLOW_THREADS
  }
  self->closers--;
  if (!self->e) return; /* another thread's close() got there first */
  rf_engine *e = self->e;
  self->e = NULL;
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(self->lock, WAIT_LOCK);
  rf_close(e);
  PyThread_release_lock(self->lock);
  Py_END_ALLOW_THREADS
}

static void engine_dealloc(EngineObject *self)
{
  engine_close_now(self); /* before the bound tensors' owners go */
  Py_CLEAR(self->fin_fn);
  if (self->lock) PyThread_free_lock(self->lock);
  Py_XDECREF(self->keep);
  Py_XDECREF(self->plan);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *engine_close(EngineObject *self, PyObject *noargs)
{
  (void)noargs;
  engine_close_now(self);
  Py_RETURN_NONE;
}

/* bind(side, id, desc, keep) -> None, or why nothing was bound (a derived view whose storage is bound
 * elsewhere); keep (the tensor's owner) lives as long as the engine */
ENGINE_CALL(engine_bind)
{
  int side;
  unsigned id;
  PyObject *desc, *keep;
  if (!PyArg_ParseTuple(args, "iIO!O", &side, &id, &PyTuple_Type, &desc, &keep)) return NULL;
  tensor_buf b;
  if (parse_desc(desc, &b)) return NULL;
  char err[1024] = "";
  rf_status s;
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(self->lock, WAIT_LOCK);
  s = rf_bind(self->e, side, id, &b.t, err, sizeof err);
  PyThread_release_lock(self->lock);
  Py_END_ALLOW_THREADS
  if (s != RF_OK) return set_error(BindError, s, err, 0, NULL);
  if (PyList_Append(self->keep, keep)) return NULL;
  if (err[0]) return PyUnicode_FromString(err);
  Py_RETURN_NONE;
}

ENGINE_CALL(engine_listen)
{
  const char *ip;
  unsigned port;
  if (!PyArg_ParseTuple(args, "sI", &ip, &port)) return NULL;
  if (port > 65535) return set_error(Error, RF_ERR_ARG, "port out of range", 0, NULL);
  uint16_t got = 0;
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_listen(self->e, ip, (uint16_t)port, &got), err);
  if (s != RF_OK) return set_error(NULL, s, err, 0, NULL);
  return PyLong_FromLong(got);
}

ENGINE_CALL(engine_export)
{
  (void)args;
  size_t len = 0;
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_export(self->e, NULL, 0, &len), err); /* the size: RF_ERR_SIZE with *len */
  if (s != RF_ERR_SIZE) return set_error(NULL, s == RF_OK ? RF_ERR_STATE : s, err, 0, NULL);
  PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
  if (!out) return NULL;
  LOCKED(self, s, rf_export(self->e, PyBytes_AS_STRING(out), len, &len), err);
  if (s != RF_OK) {
    Py_DECREF(out);
    return set_error(NULL, s, err, 0, NULL);
  }
  return out;
}

ENGINE_CALL(engine_connect)
{
  unsigned recv, port;
  const char *ip;
  if (!PyArg_ParseTuple(args, "IsI", &recv, &ip, &port)) return NULL;
  if (port > 65535) return set_error(Error, RF_ERR_ARG, "port out of range", 0, NULL);
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_connect(self->e, recv, ip, (uint16_t)port), err);
  if (s != RF_OK) return set_error(NULL, s, err, 0, NULL);
  Py_RETURN_NONE;
}

ENGINE_CALL(engine_import)
{
  Py_buffer blob;
  if (!PyArg_ParseTuple(args, "y*", &blob)) return NULL;
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_import(self->e, blob.buf, (size_t)blob.len), err);
  PyBuffer_Release(&blob);
  if (s != RF_OK) return set_error(NULL, s, err, 0, NULL);
  Py_RETURN_NONE;
}

ENGINE_CALL(engine_push)
{
  PyObject *vo;
  uint64_t v;
  unsigned long long stream = 0;
  if (!PyArg_ParseTuple(args, "O|K", &vo, &stream) || version_arg(vo, &v)) return NULL;
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_push(self->e, v, (void *)(uintptr_t)stream), err);
  if (s != RF_OK) return set_error(NULL, s, err, v, NULL);
  Py_RETURN_NONE;
}

/* progress() -> True while a push is under way */
ENGINE_CALL(engine_progress)
{
  (void)args;
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_progress(self->e), err);
  if (s == RF_AGAIN) Py_RETURN_TRUE;
  if (s != RF_OK) return set_error(NULL, s, err, 0, NULL);
  Py_RETURN_FALSE;
}

/* wait(timeout_ms) -> [receivers skipped because they were down]. A timed-out rf_wait gives the push
 * up, so the slices before the last drive the push with rf_progress (which never gives it up) and
 * only the last, at most SLICE_MS before the deadline, is an rf_wait: its timeout is the push's (the
 * error names the caller's milliseconds; rf_target_report's reason keeps the last slice's). */
ENGINE_CALL(engine_wait)
{
  unsigned ms;
  if (!PyArg_ParseTuple(args, "I", &ms)) return NULL;
  rf_status s;
  char err[600];
  const uint64_t deadline = mono_ms() + ms;
  for (;;) {
    uint64_t now = mono_ms(), left = deadline > now ? deadline - now : 0;
    if (left <= SLICE_MS) { /* the last slice */
      LOCKED(self, s, rf_wait(self->e, left ? (uint32_t)left : 1), err);
      char *at = s == RF_ERR_TIMEOUT ? strstr(err, "not finished after ") : NULL, *unit = at ? strstr(at, " ms") : NULL;
      if (unit) { /* the slice's milliseconds -> the caller's */
        char tail[600];
        snprintf(tail, sizeof tail, "%s", unit);
        snprintf(at, sizeof err - (size_t)(at - err), "not finished after %u%s", ms, tail);
      }
      break;
    }
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    do {
      s = rf_progress(self->e);
      if (s == RF_AGAIN && self->progress_thread) { /* the engine's thread drives it: look again in 1 ms */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
      }
    } while (s == RF_AGAIN && mono_ms() < now + SLICE_MS);
    /* ended: rf_wait gives its result (rf_progress reports it once only, maybe to an earlier call) */
    if (s != RF_AGAIN) s = rf_wait(self->e, 1);
    if (s != RF_OK && s != RF_AGAIN) snprintf(err, sizeof err, "%s", rf_last_error(self->e));
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    if (s != RF_AGAIN) break;
    if (self->closing) return closed_while_waiting(0);
    if (PyErr_CheckSignals()) return NULL;
  }
  if (s != RF_OK && s != RF_PARTIAL) return set_error(NULL, s, err, 0, NULL);
  PyObject *skipped = PyList_New(0);
  const rf_plan *p = ((PlanObject *)self->plan)->p;
  for (uint32_t r = 0; skipped && s == RF_PARTIAL && r < p->receivers; r++) {
    rf_target_state ts;
    if (rf_target_report(self->e, r, &ts) != RF_OK || ts.status != RF_TARGET_SKIPPED) continue;
    PyObject *i = PyLong_FromUnsignedLong(r);
    if (!i || PyList_Append(skipped, i)) Py_CLEAR(skipped);
    Py_XDECREF(i);
  }
  return skipped;
}

/* resume_version() -> the version a (restarted) trainer pushes next */
ENGINE_CALL(engine_resume_version)
{
  (void)args;
  uint64_t v;
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(self->lock, WAIT_LOCK);
  v = rf_resume_version(self->e);
  PyThread_release_lock(self->lock);
  Py_END_ALLOW_THREADS
  return PyLong_FromUnsignedLongLong(v);
}

/* target(receiver) -> (status name, receiver's complete version, where, reason) */
ENGINE_CALL(engine_target)
{
  unsigned r;
  if (!PyArg_ParseTuple(args, "I", &r)) return NULL;
  static const char *const names[] = {"down", "connecting", "idle", "waiting", "writing", "flushing", "complete",
                                      "failed", "skipped"};
  rf_target_state ts;
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_target_report(self->e, r, &ts), err);
  if (s != RF_OK) return set_error(NULL, s, "this trainer rank does not write to that receiver", 0, NULL);
  return Py_BuildValue("(sKss)", ts.status >= 0 && ts.status < 9 ? names[ts.status] : "?",
                       (unsigned long long)ts.complete, ts.where, ts.reason);
}

static PyObject *state_tuple(const rf_version_state *st)
{
  return Py_BuildValue("(KKKKs)", (unsigned long long)st->complete, (unsigned long long)st->torn,
                       (unsigned long long)st->armed, (unsigned long long)st->refused, st->torn_reason);
}

ENGINE_CALL(engine_poll)
{
  (void)args;
  rf_version_state st;
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_version_poll(self->e, &st), err);
  if (s != RF_OK) return set_error(NULL, s, err, 0, NULL);
  return state_tuple(&st);
}

/* version_wait(v, timeout_ms or -1 = no limit) -> state tuple; in slices of 100 ms so that a
 * signal (Ctrl-C) is seen; raises TornError / TimeoutError */
ENGINE_CALL(engine_version_wait)
{
  PyObject *vo;
  uint64_t v;
  long long ms;
  if (!PyArg_ParseTuple(args, "OL", &vo, &ms) || version_arg(vo, &v)) return NULL;
  rf_status s;
  rf_version_state st = {0};
  char err[600];
  for (long long left = ms;;) {
    uint32_t slice = left >= 0 && left < SLICE_MS ? (uint32_t)left : SLICE_MS;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    s = rf_version_wait(self->e, v, slice);
    if (s != RF_OK) snprintf(err, sizeof err, "%s", rf_last_error(self->e));
    rf_version_poll(self->e, &st);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    if (s != RF_ERR_TIMEOUT) break;
    if (left >= 0 && (left -= slice) <= 0) {
      snprintf(err, sizeof err, "version %llu not complete after %lld ms (newest complete %llu)",
               (unsigned long long)v, ms, (unsigned long long)st.complete);
      break;
    }
    if (self->closing) return closed_while_waiting(v);
    if (PyErr_CheckSignals()) return NULL;
  }
  if (s == RF_ERR_TORN) return set_error(TornError, s, err, st.torn, st.torn_reason);
  if (s != RF_OK) return set_error(NULL, s, err, v, NULL);
  return state_tuple(&st);
}

ENGINE_CALL(engine_stream_wait)
{
  PyObject *vo;
  uint64_t v;
  unsigned long long stream;
  if (!PyArg_ParseTuple(args, "OK", &vo, &stream) || version_arg(vo, &v)) return NULL;
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_stream_wait(self->e, v, (void *)(uintptr_t)stream), err);
  if (s != RF_OK) return set_error(NULL, s, err, v, NULL);
  Py_RETURN_NONE;
}

/* arm(v): the receiver's engine has paused; trainers may write version v */
ENGINE_CALL(engine_arm)
{
  PyObject *vo;
  uint64_t v;
  if (!PyArg_ParseTuple(args, "O", &vo) || version_arg(vo, &v)) return NULL;
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_arm(self->e, v), err);
  if (s != RF_OK) return set_error(NULL, s, err, v, NULL);
  Py_RETURN_NONE;
}

/* rf_finalize_fn of set_finalize: runs on whichever thread completes the version (the progress thread,
 * or one inside version_wait / poll, which let the GIL go), with the engine's lock held. Calls
 * fin_fn(version, [(step name, dst name), ...]) under the GIL; an exception tears the version with
 * "<type>: <text>". */
static int finalize_hook(void *ctx, uint64_t version, const uint32_t *steps, uint32_t n, char *why, size_t why_len)
{
  EngineObject *self = ctx;
  if (!Py_IsInitialized()) { /* the interpreter is gone (a progress thread at exit): no code to run */
    snprintf(why, why_len, "the Python interpreter has shut down");
    return -1;
  }
  PyGILState_STATE g = PyGILState_Ensure();
  int rc = -1;
  const rf_plan *p = ((PlanObject *)self->plan)->p;
  PyObject *fn = self->fin_fn, *list = PyList_New(n), *res = NULL;
  for (uint32_t i = 0; list && i < n; i++) {
    const rf_finalize *f = &p->finalize[steps[i]];
    PyObject *t = Py_BuildValue("(ss)", f->name, p->dst[f->dst].name);
    if (!t) Py_CLEAR(list);
    else PyList_SET_ITEM(list, i, t);
  }
  if (!fn) snprintf(why, why_len, "no finalize hook is set");
  else if (list) {
    Py_INCREF(fn);
    unsigned long outer = self->hook_thread;
    self->hook_thread = PyThread_get_thread_ident();
    res = PyObject_CallFunction(fn, "KO", (unsigned long long)version, list);
    self->hook_thread = outer;
    Py_DECREF(fn);
  }
  if (res) rc = 0;
  else if (PyErr_Occurred()) {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
#endif
    PyObject *text = exc ? PyObject_Str(exc) : NULL;
    const char *t = text ? PyUnicode_AsUTF8(text) : NULL;
    if (!t) PyErr_Clear();
    snprintf(why, why_len, "%s: %s", exc ? Py_TYPE(exc)->tp_name : "error", t ? t : "(no text)");
    Py_XDECREF(text);
    Py_XDECREF(exc);
  }
  Py_XDECREF(res);
  Py_XDECREF(list);
  PyGILState_Release(g);
  return rc;
}

/* set_finalize(fn or None): rf_set_finalize with finalize_hook calling fn */
ENGINE_CALL(engine_set_finalize)
{
  PyObject *fn;
  if (!PyArg_ParseTuple(args, "O", &fn)) return NULL;
  if (fn != Py_None && !PyCallable_Check(fn)) return set_error(Error, RF_ERR_ARG, "set_finalize: not callable", 0, NULL);
  PyObject *old = self->fin_fn;
  if (fn != Py_None) self->fin_fn = Py_NewRef(fn); /* before the engine can call it */
  rf_status s;
  char err[600];
  LOCKED(self, s, rf_set_finalize(self->e, fn != Py_None ? finalize_hook : NULL, self), err);
  if (s != RF_OK) {
    if (fn != Py_None) Py_SETREF(self->fin_fn, old);
    return set_error(NULL, s, err, 0, NULL);
  }
  if (fn == Py_None) self->fin_fn = NULL;
  Py_XDECREF(old);
  Py_RETURN_NONE;
}

ENGINE_CALL(engine_counters)
{
  (void)args;
  rf_counters c;
  Py_BEGIN_ALLOW_THREADS
  PyThread_acquire_lock(self->lock, WAIT_LOCK);
  rf_get_counters(self->e, &c);
  PyThread_release_lock(self->lock);
  Py_END_ALLOW_THREADS
  return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "versions", (unsigned long long)c.versions, "torn",
                       (unsigned long long)c.torn, "bytes", (unsigned long long)c.bytes, "writes",
                       (unsigned long long)c.writes, "direct_writes", (unsigned long long)c.direct_writes, "stage_ns",
                       (unsigned long long)c.stage_ns, "post_ns", (unsigned long long)c.post_ns, "push_ns",
                       (unsigned long long)c.push_ns, "refresh_ns", (unsigned long long)c.refresh_ns, "last_push_ns",
                       (unsigned long long)c.last_push_ns, "fenced", (unsigned long long)c.fenced, "ignored",
                       (unsigned long long)c.ignored, "deltas", (unsigned long long)c.deltas, "patch_bytes",
                       (unsigned long long)c.patch_bytes, "overflows", (unsigned long long)c.overflows, "apply_ns",
                       (unsigned long long)c.apply_ns, "challenged", (unsigned long long)c.challenged, "finalize_ns",
                       (unsigned long long)c.finalize_ns, "last_finalize_ns", (unsigned long long)c.last_finalize_ns,
                       "finalize_steps", (unsigned long long)c.finalize_steps, "finalize_skipped",
                       (unsigned long long)c.finalize_skipped);
}

ENGINE_CALL(engine_ucx_setting)
{
  const char *name;
  if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
  char buf[512], err[600];
  rf_status s;
  LOCKED(self, s, rf_ucx_setting(self->e, name, buf, sizeof buf), err);
  if (s != RF_OK) return set_error(NULL, s, err, 0, NULL);
  return PyUnicode_FromString(buf);
}

static PyMethodDef engine_methods[] = {
  {"close", (PyCFunction)engine_close, METH_NOARGS, "rf_close"},
  {"bind", (PyCFunction)engine_bind, METH_VARARGS, "bind(side, id, desc, keep): rf_bind"},
  {"listen", (PyCFunction)engine_listen, METH_VARARGS, "listen(ip, port) -> port"},
  {"export", (PyCFunction)engine_export, METH_NOARGS, "export() -> bytes"},
  {"connect", (PyCFunction)engine_connect, METH_VARARGS, "connect(receiver, ip, port)"},
  {"import_blob", (PyCFunction)engine_import, METH_VARARGS, "import_blob(bytes)"},
  {"push", (PyCFunction)engine_push, METH_VARARGS, "push(version, stream=0)"},
  {"progress", (PyCFunction)engine_progress, METH_NOARGS, "progress() -> True while pushing"},
  {"wait", (PyCFunction)engine_wait, METH_VARARGS, "wait(timeout_ms) -> [skipped receivers]"},
  {"resume_version", (PyCFunction)engine_resume_version, METH_NOARGS, "resume_version() -> int"},
  {"target", (PyCFunction)engine_target, METH_VARARGS, "target(receiver) -> (status, complete, where, reason)"},
  {"poll", (PyCFunction)engine_poll, METH_NOARGS, "poll() -> (complete, torn, armed, refused, torn_reason)"},
  {"version_wait", (PyCFunction)engine_version_wait, METH_VARARGS, "version_wait(version, timeout_ms or -1)"},
  {"stream_wait", (PyCFunction)engine_stream_wait, METH_VARARGS, "stream_wait(version, stream)"},
  {"arm", (PyCFunction)engine_arm, METH_VARARGS, "arm(version)"},
  {"counters", (PyCFunction)engine_counters, METH_NOARGS, "counters() -> dict"},
  {"set_finalize", (PyCFunction)engine_set_finalize, METH_VARARGS, "set_finalize(fn or None): rf_set_finalize"},
  {"ucx_setting", (PyCFunction)engine_ucx_setting, METH_VARARGS, "ucx_setting(name) -> str"},
  {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
  PyVarObject_HEAD_INIT(NULL, 0)
  .tp_name = "refit._refit.Engine",
  .tp_basicsize = sizeof(EngineObject),
  .tp_flags = Py_TPFLAGS_DEFAULT,
  .tp_doc = "one rf_engine",
  .tp_new = PyType_GenericNew,
  .tp_init = (initproc)engine_init,
  .tp_dealloc = (destructor)engine_dealloc,
  .tp_methods = engine_methods,
};

/* ----------------------------------------- DLPack ----------------------------------------- */

/* dlpack.h's structs, field for field (v0.6 .. v1.x) */
typedef struct { int32_t device_type, device_id; } dl_device;
typedef struct { uint8_t code, bits; uint16_t lanes; } dl_dtype;
typedef struct {
  void *data;
  dl_device device;
  int32_t ndim;
  dl_dtype dtype;
  int64_t *shape, *strides;
  uint64_t byte_offset;
} dl_tensor;
typedef struct { dl_tensor t; void *ctx; void (*deleter)(void *); } dl_managed;
typedef struct {
  struct { uint32_t major, minor; } version;
  void *ctx;
  void (*deleter)(void *);
  uint64_t flags; /* bit 0: read-only */
  dl_tensor t;
} dl_managed_versioned;

/* dlpack(capsule) -> (data, device_type, device_id, code, bits, lanes, shape, strides or None,
 * readonly); the capsule stays unconsumed (its owner keeps the memory while the capsule lives) */
static PyObject *dlpack(PyObject *mod, PyObject *cap)
{
  (void)mod;
  const dl_tensor *t = NULL;
  int readonly = 0;
  if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
    const dl_managed_versioned *m = PyCapsule_GetPointer(cap, "dltensor_versioned");
    if (m->version.major != 1) return set_error(BindError, RF_ERR_TYPE, "DLPack capsule of an unknown major version", 0, NULL);
    t = &m->t;
    readonly = (int)(m->flags & 1);
  } else if (PyCapsule_IsValid(cap, "dltensor")) {
    t = &((const dl_managed *)PyCapsule_GetPointer(cap, "dltensor"))->t;
  } else {
    return set_error(BindError, RF_ERR_TYPE, "not an unused DLPack capsule ('dltensor' or 'dltensor_versioned')", 0, NULL);
  }
  PyObject *shape = PyTuple_New(t->ndim), *strides = t->strides ? PyTuple_New(t->ndim) : Py_NewRef(Py_None);
  if (!shape || !strides) return NULL;
  for (int i = 0; i < t->ndim; i++) {
    PyTuple_SET_ITEM(shape, i, PyLong_FromLongLong(t->shape[i]));
    if (t->strides) PyTuple_SET_ITEM(strides, i, PyLong_FromLongLong(t->strides[i]));
  }
  return Py_BuildValue("(KiiiiiNNO)", (unsigned long long)((uintptr_t)t->data + t->byte_offset), t->device.device_type,
                       t->device.device_id, (int)t->dtype.code, (int)t->dtype.bits, (int)t->dtype.lanes, shape, strides,
                       readonly ? Py_True : Py_False);
}

static PyObject *plans(PyObject *mod, PyObject *noargs)
{
  (void)mod;
  (void)noargs;
  PyObject *out = PyList_New(rf_plan_count());
  for (uint32_t i = 0; out && i < rf_plan_count(); i++) PyList_SET_ITEM(out, i, PyUnicode_FromString(rf_plan_at(i)->name));
  return out;
}

static PyObject *strerror_(PyObject *mod, PyObject *args)
{
  (void)mod;
  int s;
  if (!PyArg_ParseTuple(args, "i", &s)) return NULL;
  return PyUnicode_FromString(rf_strerror((rf_status)s));
}

static PyObject *dtype_size(PyObject *mod, PyObject *args)
{
  (void)mod;
  int dt;
  if (!PyArg_ParseTuple(args, "i", &dt)) return NULL;
  size_t n = rf_dtype_size(dt);
  if (!n) return PyErr_Format(PyExc_ValueError, "dtype %d is none of refit's (bf16 1, fp32 2, fp8 3)", dt);
  return PyLong_FromSize_t(n);
}

static PyObject *shard_rows(PyObject *mod, PyObject *args)
{
  (void)mod;
  long long rows, shards, shard;
  if (!PyArg_ParseTuple(args, "LLL", &rows, &shards, &shard)) return NULL;
  if (rows < 0 || shards < 1 || shards > UINT32_MAX || shard < 0 || shard > UINT32_MAX)
    return PyErr_Format(PyExc_ValueError, "shard_rows(%lld, %lld, %lld): want rows >= 0, 1 <= shards < 2^32, "
                        "0 <= shard < 2^32 (a shard past the last is empty)", rows, shards, shard);
  int64_t first, count;
  rf_shard_rows(rows, (uint32_t)shards, (uint32_t)shard, &first, &count);
  return Py_BuildValue("(LL)", (long long)first, (long long)count);
}

static PyMethodDef module_methods[] = {
  {"plans", plans, METH_NOARGS, "names of the plans in this librefit.so"},
  {"dtype_size", dtype_size, METH_VARARGS, "dtype_size(dtype id) -> bytes per element (rf_dtype_size)"},
  {"shard_rows", shard_rows, METH_VARARGS,
   "shard_rows(rows, shards, shard) -> (first row, row count) of FSDP2's dim-0 shard (rf_shard_rows)"},
  {"dlpack", dlpack, METH_O, "dlpack(capsule) -> description tuple"},
  {"strerror", strerror_, METH_VARARGS, "strerror(status) -> text"},
  {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
  PyModuleDef_HEAD_INIT, .m_name = "refit._refit", .m_doc = "C extension of the refit module (librefit.so)",
  .m_size = -1, .m_methods = module_methods,
};

static PyObject *new_error(PyObject *m, const char *name, PyObject *bases, const char *doc)
{
  char full[64];
  snprintf(full, sizeof full, "refit.%s", name);
  PyObject *cls = PyErr_NewExceptionWithDoc(full, doc, bases, NULL);
  if (cls && PyModule_AddObjectRef(m, name, cls) < 0) Py_CLEAR(cls);
  return cls;
}

PyMODINIT_FUNC PyInit__refit(void);
PyMODINIT_FUNC PyInit__refit(void)
{
  if (rf_abi_version() != RF_ABI_VERSION) {
    PyErr_Format(PyExc_ImportError, "librefit.so has ABI %u, this module was built for %u: rebuild it", rf_abi_version(),
                 (unsigned)RF_ABI_VERSION);
    return NULL;
  }
  if (PyType_Ready(&PlanType) < 0 || PyType_Ready(&EngineType) < 0) return NULL;
  PyObject *m = PyModule_Create(&module);
  if (!m) return NULL;
  PyObject *bind_bases = NULL, *time_bases = NULL;
  int ok = (Error = new_error(m, "Error", NULL, "a refit call failed: .status, .status_name, .version, .reason")) &&
           (bind_bases = PyTuple_Pack(2, Error, PyExc_ValueError)) &&
           (BindError = new_error(m, "BindError", bind_bases, "a tensor does not match the plan's table")) &&
           (TornError = new_error(m, "TornError", Error, "a version was torn: .version, .reason")) &&
           (time_bases = PyTuple_Pack(2, Error, PyExc_TimeoutError)) &&
           (TimeoutError_ = new_error(m, "TimeoutError", time_bases, "a wait timed out")) &&
           PyModule_AddObjectRef(m, "Plan", (PyObject *)&PlanType) == 0 &&
           PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) == 0 &&
           PyModule_AddIntConstant(m, "ABI_VERSION", RF_ABI_VERSION) == 0 &&
           PyModule_AddIntConstant(m, "SIDE_SRC", RF_SIDE_SRC) == 0 && PyModule_AddIntConstant(m, "SIDE_DST", RF_SIDE_DST) == 0 &&
           PyModule_AddIntConstant(m, "SIDE_DERIVED", RF_SIDE_DERIVED) == 0 &&
           PyModule_AddIntConstant(m, "TRAINER", RF_TRAINER) == 0 && PyModule_AddIntConstant(m, "RECEIVER", RF_RECEIVER) == 0 &&
           PyModule_AddIntConstant(m, "MEM_HOST", RF_MEM_HOST) == 0 && PyModule_AddIntConstant(m, "MEM_CUDA", RF_MEM_CUDA) == 0;
  Py_XDECREF(bind_bases);
  Py_XDECREF(time_bases);
  if (!ok) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
