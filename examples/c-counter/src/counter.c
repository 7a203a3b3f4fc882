/*
 * c-counter: examples/counter written in C against abi/include/edgeshard.h
 * alone — no SDK. It passes the same conformance suite
 * (examples/counter/conformance.json).
 *
 *   GET  /                  {"count":N,"version":"c"}
 *   POST /increment         count one, answer the new count
 *   POST /reset-after?ms=N  set the alarm N ms from now; it stores count 0
 *   POST /spin, /panic      misbehave on purpose (the host contains them)
 *
 * Build from the repository root (Debian: apt-get install clang lld
 * libclang-rt-dev-wasm32 wasi-libc):
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I abi/include \
 *         -Wl,--strip-debug -o c-counter.wasm examples/c-counter/src/counter.c
 *
 * From wasi-libc it uses realloc, free, memcpy, memcmp, memchr, strlen and
 * clock_gettime (the WASI clock, which the conformance kit drives
 * virtually);
 * -mexec-model=reactor links crt1-reactor.o, whose _initialize export the
 * host calls before anything else.
 */
#include <edgeshard.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Growable buffers ---------------------------------------------------- */

typedef struct {
  uint8_t *p;
  uint32_t len, cap;
} buf_t;

static buf_t in;   /* the request, written by the host (edgeshard_alloc) */
static buf_t out;  /* the encoded response, read by the host after fetch */
static buf_t body; /* the response body being built */
static buf_t res;  /* results of host calls */
static buf_t rec;  /* an encoded log record */

/* reserve makes room for n more bytes; 0 when memory is exhausted. */
static int reserve(buf_t *b, uint32_t n) {
  if (b->len + n <= b->cap) return 1;
  uint32_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + n) cap *= 2;
  uint8_t *p = realloc(b->p, cap);
  if (!p) return 0;
  b->p = p;
  b->cap = cap;
  return 1;
}

static void put(buf_t *b, const void *s, uint32_t n) {
  if (n && reserve(b, n)) {
    memcpy(b->p + b->len, s, n);
    b->len += n;
  }
}

static void put_cstr(buf_t *b, const char *s) { put(b, s, strlen(s)); }

static void put_u32(buf_t *b, uint32_t v) {
  if (reserve(b, 4)) {
    edgeshard_put_u32(b->p + b->len, v);
    b->len += 4;
  }
}

/* put_string appends a wire string: u32 length, then the bytes. */
static void put_string(buf_t *b, const void *s, uint32_t n) {
  put_u32(b, n);
  put(b, s, n);
}

static void put_int(buf_t *b, int64_t v) {
  char d[24];
  int i = sizeof d;
  uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
  do d[--i] = '0' + u % 10; while (u /= 10);
  if (v < 0) d[--i] = '-';
  put(b, d + i, sizeof d - i);
}

/* put_json_string appends s as a JSON string. */
static void put_json_string(buf_t *b, const uint8_t *s, uint32_t n) {
  static const char hex[] = "0123456789abcdef";
  put_cstr(b, "\"");
  for (uint32_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      put(b, e, 2);
    } else if (c < 0x20) {
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      put(b, e, 6);
    } else {
      put(b, &c, 1);
    }
  }
  put_cstr(b, "\"");
}

/* ---- Reading the request ------------------------------------------------- */

typedef struct {
  const uint8_t *p;
  uint32_t n;
} str_t;

typedef struct {
  const uint8_t *p, *end;
  int bad; /* set by a read past the end */
} reader_t;

static uint32_t get_u32(reader_t *r) {
  if (r->end - r->p < 4) {
    r->bad = 1;
    r->p = r->end;
    return 0;
  }
  uint32_t v = edgeshard_get_u32(r->p);
  r->p += 4;
  return v;
}

static str_t get_string(reader_t *r) {
  str_t s = {0, get_u32(r)};
  if ((uint32_t)(r->end - r->p) < s.n) {
    r->bad = 1;
    r->p = r->end;
    s.n = 0;
    return s;
  }
  s.p = r->p;
  r->p += s.n;
  return s;
}

static int is(str_t s, const char *lit) { return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0; }

/* query returns the value of the query parameter name in q ("a=1&b=2"). */
static int query(str_t q, const char *name, str_t *val) {
  size_t nl = strlen(name);
  const uint8_t *p = q.p, *end = q.p + q.n;
  while (p < end) {
    const uint8_t *amp = memchr(p, '&', end - p);
    if (!amp) amp = end;
    if ((size_t)(amp - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
      val->p = p + nl + 1;
      val->n = amp - val->p;
      return 1;
    }
    p = amp + 1;
  }
  return 0;
}

/* ---- Responses ----------------------------------------------------------- */

/* respond encodes a Response with body as its JSON body. */
static int64_t respond(uint32_t status) {
  out.len = 0;
  put_u32(&out, status);
  put_u32(&out, 1); /* one header */
  put_string(&out, "Content-Type", 12);
  put_string(&out, "application/json", 16);
  put_string(&out, body.p, body.len);
  return edgeshard_pack(out.p, out.len);
}

static int64_t reply(int64_t count) {
  body.len = 0;
  put_cstr(&body, "{\"count\":");
  put_int(&body, count);
  put_cstr(&body, ",\"version\":\"c\"}");
  return respond(200);
}

/* error answers {"error":{"code":code,"message":msg1 msg2}}. */
static int64_t error_json(uint32_t status, const char *code, const uint8_t *msg, uint32_t msg_len) {
  body.len = 0;
  put_cstr(&body, "{\"error\":{\"code\":");
  put_json_string(&body, (const uint8_t *)code, strlen(code));
  put_cstr(&body, ",\"message\":");
  put_json_string(&body, msg, msg_len);
  put_cstr(&body, "}}");
  return respond(status);
}

static int64_t error_lit(uint32_t status, const char *code, const char *msg) {
  return error_json(status, code, (const uint8_t *)msg, strlen(msg));
}

/* host_error answers 500 with the host's message for the failed call. */
static int64_t host_error(const char *code, int64_t rc) {
  static uint8_t msg[256];
  int64_t n = edgeshard_error_message(msg, sizeof msg);
  if (n <= 0) {
    buf_t b = {0};
    put_cstr(&b, "host call failed with errno ");
    put_int(&b, -rc);
    int64_t r = error_json(500, code, b.p, b.len);
    free(b.p);
    return r;
  }
  return error_json(500, code, msg, (uint32_t)n);
}

/* ---- Storage ------------------------------------------------------------- */

/* load reads "count": 0 when absent, or -errno. */
static int64_t load(int64_t *count) {
  if (!reserve(&res, 32)) return -EDGESHARD_ERRNO_INTERNAL;
  int64_t n = edgeshard_storage_get("count", 5, res.p, res.cap);
  if (n == -EDGESHARD_ERRNO_NOT_FOUND) {
    *count = 0;
    return 0;
  }
  if (n < 0) return n;
  if (n > res.cap) {
    /* Too large for the buffer: the host holds it for result_take. */
    res.len = 0;
    if (!reserve(&res, (uint32_t)n)) return -EDGESHARD_ERRNO_INTERNAL;
    int64_t m = edgeshard_result_take(res.p, res.cap);
    if (m < 0) return m;
  }
  int64_t v = 0;
  for (int64_t i = 0; i < n; i++) {
    uint8_t c = res.p[i];
    if (c < '0' || c > '9') return -EDGESHARD_ERRNO_INVALID;
    v = v * 10 + (c - '0');
  }
  *count = v;
  return 0;
}

static int32_t store(int64_t count) {
  buf_t b = {0};
  put_int(&b, count);
  int32_t rc = edgeshard_storage_put("count", 5, b.p, b.len, 0);
  free(b.p);
  return rc;
}

/* now_ms is the wall clock in unix milliseconds (WASI clock_time_get). */
static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Exports ------------------------------------------------------------- */

EDGESHARD_EXPORT("edgeshard_abi_version") int32_t export_abi_version(void) { return EDGESHARD_ABI_VERSION; }

EDGESHARD_EXPORT("edgeshard_init") int32_t export_init(void) {
  return reserve(&out, 256) && reserve(&body, 256) && reserve(&res, 64) ? EDGESHARD_ERRNO_OK : EDGESHARD_ERRNO_INTERNAL;
}

/* alloc gives the host a buffer for the next request; one, reused. */
EDGESHARD_EXPORT("edgeshard_alloc") uint8_t *export_alloc(int32_t size) {
  if (size < 0) return 0;
  in.len = 0;
  return reserve(&in, (uint32_t)size + 1) ? in.p : 0;
}

EDGESHARD_EXPORT("edgeshard_fetch") int64_t export_fetch(const uint8_t *req, int32_t len) {
  reader_t r = {req, req + len, 0};
  str_t method = get_string(&r);
  str_t target = get_string(&r);
  uint32_t nh = get_u32(&r);
  for (uint32_t i = 0; i < nh && !r.bad; i++) {
    get_string(&r); /* name */
    get_string(&r); /* value */
  }
  get_string(&r); /* body */
  if (r.bad || r.p != r.end) return error_lit(400, "bad_request", "malformed request envelope");

  /* The path and the query. */
  str_t path = target, q = {0, 0};
  const uint8_t *mark = target.n ? memchr(target.p, '?', target.n) : 0;
  if (mark) {
    path.n = mark - target.p;
    q.p = mark + 1;
    q.n = target.n - path.n - 1;
  }

  int64_t count = 0, rc;
  if (is(path, "/") && is(method, "GET")) {
    if ((rc = load(&count)) < 0) return host_error("storage", rc);
    return reply(count);
  }
  if (is(path, "/increment") && is(method, "POST")) {
    if ((rc = load(&count)) < 0) return host_error("storage", rc);
    if ((rc = store(++count)) < 0) return host_error("storage", rc);
    return reply(count);
  }
  if (is(path, "/reset-after") && is(method, "POST")) {
    str_t ms = {0, 0};
    int64_t v = 0;
    int ok = query(q, "ms", &ms) && ms.n > 0 && ms.n <= 12;
    for (uint32_t i = 0; ok && i < ms.n; i++) {
      ok = ms.p[i] >= '0' && ms.p[i] <= '9';
      v = v * 10 + (ms.p[i] - '0');
    }
    if (!ok) return error_lit(400, "bad_ms", "ms must be a non-negative integer");
    if ((rc = edgeshard_alarm_set(now_ms() + v)) < 0) return host_error("alarm", rc);
    load(&count);
    return reply(count);
  }
  if (is(path, "/spin") && is(method, "POST")) {
    /* The host stops this at its event deadline and discards the instance. */
    for (volatile uint32_t i = 0;; i++) {
    }
  }
  if (is(path, "/panic") && is(method, "POST")) {
    __builtin_trap(); /* a trap: the host discards the instance, answers 500 */
  }

  buf_t msg = {0};
  put_cstr(&msg, "no route ");
  put(&msg, method.p, method.n);
  put_cstr(&msg, " ");
  put(&msg, path.p, path.n);
  int64_t resp = error_json(404, "not_found", msg.p, msg.len);
  free(msg.p);
  return resp;
}

/* log_info writes an info record with no fields. */
static void log_info(const char *message) {
  rec.len = 0;
  put_string(&rec, message, strlen(message));
  put_u32(&rec, 0); /* no fields */
  edgeshard_log_write(EDGESHARD_LOG_INFO, rec.p, rec.len);
}

/* alarm resets the count; the host retries it on a non-zero answer. */
EDGESHARD_EXPORT("edgeshard_alarm") int32_t export_alarm(int32_t retry_count) {
  (void)retry_count;
  log_info("counter reset by alarm");
  int32_t rc = store(0);
  return rc < 0 ? -rc : EDGESHARD_ERRNO_OK;
}
