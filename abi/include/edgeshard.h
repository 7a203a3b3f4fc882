/*
 * edgeshard.h — the edgeshard plugin ABI, version 1, for C.
 *
 * Every import, export, errno, limit and encoding constant of abi/ABI.md,
 * named after package abi (github.com/edgeshard/edgeshard/abi):
 * abi.ErrnoNotFound is EDGESHARD_ERRNO_NOT_FOUND, abi.MaxKeySize is
 * EDGESHARD_MAX_KEY_SIZE, abi.FnStorageGet is EDGESHARD_FN_STORAGE_GET.
 * abi/include/header_test.go checks every constant here against that
 * package, and that a module importing every function declared here loads
 * on the host, so the two cannot drift.
 *
 * Build a plugin (a WASI reactor) with clang and wasi-libc:
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 \
 *         -I abi/include -Wl,--strip-debug -o plugin.wasm plugin.c
 *
 * -mexec-model=reactor makes wasi-libc's crt1-reactor.o define the
 * `_initialize` export the host calls first. Without wasi-libc
 * (-nostdlib -Wl,--no-entry) define it yourself: an exported
 * `void _initialize(void)` that calls `__wasm_call_ctors()`.
 * examples/c-counter is a complete plugin.
 *
 * All pointers and lengths are u32 offsets into the guest's memory (plain
 * C pointers on wasm32). Host functions answer a length or count (>= 0), or
 * -errno; exports that answer an errno (edgeshard_init, edgeshard_alarm)
 * answer it positive, 0 meaning success.
 */
#ifndef EDGESHARD_H
#define EDGESHARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version and module names ------------------------------------------ */

/* The ABI version edgeshard_abi_version must return. */
#define EDGESHARD_ABI_VERSION 1

/* The import module of every host function. */
#define EDGESHARD_IMPORT_MODULE "edgeshard"
/* The only other import module a plugin may use (clocks, random_get,
 * fd_write to stdout/stderr, proc_exit; no filesystem, no network). */
#define EDGESHARD_WASI_MODULE "wasi_snapshot_preview1"

/* ---- Exports the plugin must define ------------------------------------- */

#define EDGESHARD_EXPORT_ABI_VERSION "edgeshard_abi_version" /* () -> i32: EDGESHARD_ABI_VERSION */
#define EDGESHARD_EXPORT_INIT "edgeshard_init"               /* () -> i32: 0 ready, else an errno */
#define EDGESHARD_EXPORT_ALLOC "edgeshard_alloc"             /* (size i32) -> i32: a buffer for the next request */
#define EDGESHARD_EXPORT_FETCH "edgeshard_fetch"             /* (ptr i32, len i32) -> i64: (resp_ptr << 32) | resp_len */
#define EDGESHARD_EXPORT_ALARM "edgeshard_alarm"             /* (retry_count i32) -> i32: 0 success, else retried */
#define EDGESHARD_EXPORT_FETCH_BATCH "edgeshard_fetch_batch" /* optional: (ptr i32, len i32, count i32) -> i32 answered; each answer via edgeshard_fetch_respond */
#define EDGESHARD_EXPORT_INITIALIZE "_initialize"            /* () -> (): the WASI reactor start function */
#define EDGESHARD_EXPORT_MEMORY "memory"                     /* the linear memory (never imported) */

/* EDGESHARD_EXPORT(name) exports a C function under name, e.g.
 *   EDGESHARD_EXPORT("edgeshard_fetch") int64_t fetch(uint8_t *p, int32_t n);
 * The host also reserves the export names "edgeshard_interrupt" and
 * "edgeshard_start_section" (its deadline rewrite); do not use them. */
#define EDGESHARD_EXPORT(name) __attribute__((export_name(name), visibility("default")))

/* The response edgeshard_fetch returns: its pointer in the high 32 bits,
 * its length in the low 32. */
static inline int64_t edgeshard_pack(const void *ptr, uint32_t len) {
  return (int64_t)(((uint64_t)(uintptr_t)ptr << 32) | (uint64_t)len);
}

/* ---- Binding groups ------------------------------------------------------ */

/* Each host function belongs to one group; a binding grants groups (core
 * always, sql and analytics when the binding names a database or dataset,
 * call when it names bindings to call, fetch when it has fetch hosts).
 * A module importing from a group its binding lacks is refused at load. */
#define EDGESHARD_GROUP_CORE "core"
#define EDGESHARD_GROUP_STORAGE "storage"
#define EDGESHARD_GROUP_ALARM "alarm"
#define EDGESHARD_GROUP_VARS "vars"
#define EDGESHARD_GROUP_LOG "log"
#define EDGESHARD_GROUP_SQL "sql"
#define EDGESHARD_GROUP_ANALYTICS "analytics"
#define EDGESHARD_GROUP_CALL "call"
#define EDGESHARD_GROUP_FETCH "fetch"

/* ---- Host function names (import module "edgeshard") -------------------- */

#define EDGESHARD_FN_RESULT_TAKE "result_take"
#define EDGESHARD_FN_ERROR_MESSAGE "error_message"
#define EDGESHARD_FN_FETCH_RESPOND "fetch_respond"
#define EDGESHARD_FN_STORAGE_GET "storage_get"
#define EDGESHARD_FN_STORAGE_GET_MULTI "storage_get_multi"
#define EDGESHARD_FN_STORAGE_PUT "storage_put"
#define EDGESHARD_FN_STORAGE_PUT_MULTI "storage_put_multi"
#define EDGESHARD_FN_STORAGE_DELETE "storage_delete"
#define EDGESHARD_FN_STORAGE_DELETE_MULTI "storage_delete_multi"
#define EDGESHARD_FN_STORAGE_LIST "storage_list"
#define EDGESHARD_FN_STORAGE_DELETE_ALL "storage_delete_all"
#define EDGESHARD_FN_ALARM_SET "alarm_set"
#define EDGESHARD_FN_ALARM_GET "alarm_get"
#define EDGESHARD_FN_ALARM_DELETE "alarm_delete"
#define EDGESHARD_FN_VAR_GET "var_get"
#define EDGESHARD_FN_LOG_WRITE "log_write"
#define EDGESHARD_FN_SQL_EXEC "sql_exec"
#define EDGESHARD_FN_ANALYTICS_WRITE "analytics_write"
#define EDGESHARD_FN_SHARD_CALL "shard_call"
#define EDGESHARD_FN_HTTP_FETCH "http_fetch"

/* ---- Errno --------------------------------------------------------------- */

/* Host functions answer -errno; treat any value not listed as a failure. */
#define EDGESHARD_ERRNO_OK 0
#define EDGESHARD_ERRNO_NOT_FOUND 1   /* key, var or alarm absent (storage_get answers -1: not a failure) */
#define EDGESHARD_ERRNO_INVALID 2     /* malformed arguments or encoding */
#define EDGESHARD_ERRNO_TOO_LARGE 3   /* a limit below was exceeded; nothing changed */
#define EDGESHARD_ERRNO_IO 4          /* storage failure */
#define EDGESHARD_ERRNO_NOT_GRANTED 5 /* the binding does not grant this group */
#define EDGESHARD_ERRNO_SQL 6         /* a SQL statement failed; the batch was rolled back */
#define EDGESHARD_ERRNO_ANALYTICS 7   /* a data point was rejected */
#define EDGESHARD_ERRNO_DEADLINE 8    /* deadline exceeded (shard_call, http_fetch) */
#define EDGESHARD_ERRNO_CANCELED 9    /* reserved: cancelled */
#define EDGESHARD_ERRNO_INTERNAL 10   /* host bug or unexpected state */
#define EDGESHARD_ERRNO_FAULT 11      /* pointer/length outside guest memory */
#define EDGESHARD_ERRNO_NO_RESULT 12  /* result_take with nothing held */
#define EDGESHARD_ERRNO_LIMIT 13      /* a per-event limit of the binding is reached (ABI.md section 5) */
#define EDGESHARD_ERRNO_QUOTA 14      /* the shard's storage quota is reached */
#define EDGESHARD_ERRNO_DEADLOCK 15   /* shard_call: the called shard waits on the caller */
#define EDGESHARD_ERRNO_REFUSED 16    /* http_fetch: destination not allowed (fetch hosts, address guard) */
#define EDGESHARD_ERRNO_NETWORK 17    /* http_fetch: DNS, connection or TLS failure */
#define EDGESHARD_ERRNO_MAX 17        /* the highest errno of ABI v1 */

/* ---- Limits -------------------------------------------------------------- */

#define EDGESHARD_MAX_KEY_SIZE 2048               /* bytes of one storage key (empty allowed) */
#define EDGESHARD_MAX_VALUE_SIZE 131072           /* bytes of one storage value (128 KiB) */
#define EDGESHARD_MAX_MULTI_KEYS 128              /* keys in one multi-key call */
#define EDGESHARD_MAX_SQL_STATEMENTS 1000         /* statements in one sql_exec call */
#define EDGESHARD_MAX_SQL_ARGS 100                /* bound parameters per statement */
#define EDGESHARD_MAX_RESPONSE_BODY 33554432      /* bytes of a response body (32 MiB) */
#define EDGESHARD_MAX_VAR_NAME 256                /* bytes of a var name */
#define EDGESHARD_MAX_NODE_ID 64                  /* bytes of a node id (var edgeshard.node): [A-Za-z0-9._-] */
#define EDGESHARD_MAX_LOG_MESSAGE 16384           /* bytes of one encoded log record (16 KiB) */
#define EDGESHARD_MAX_SQL_TEXT 102400             /* bytes of one statement's SQL text (100 KiB) */
#define EDGESHARD_MAX_SQL_PAYLOAD 16777216        /* bytes of one encoded sql_exec batch (16 MiB) */
#define EDGESHARD_MAX_ANALYTICS_IDX 1             /* indexes per data point */
#define EDGESHARD_MAX_ANALYTICS_IDX_B 96          /* bytes of the index */
#define EDGESHARD_MAX_ANALYTICS_BLOB 20           /* blobs per data point */
#define EDGESHARD_MAX_ANALYTICS_BLOB_TOTAL 16384  /* bytes of all blobs together (16 KiB) */
#define EDGESHARD_MAX_ANALYTICS_DBL 20            /* doubles per data point */
#define EDGESHARD_MAX_OUTBOUND_REQUEST 16777216   /* bytes of one encoded shard_call or http_fetch request (16 MiB) */
#define EDGESHARD_MAX_CALL_DEPTH 8                /* shards in one chain of shard_calls, first caller and last callee included */

/* ---- Flags, levels, tags ------------------------------------------------- */

#define EDGESHARD_PUT_FLAGS 1          /* every defined put flag; others are refused */
/* storage_put / storage_put_multi flags: bit 0 lets the response leave
 * before this write is durable (only for data you may lose in a crash). */
#define EDGESHARD_PUT_ALLOW_UNCONFIRMED 1

/* log_write levels. */
#define EDGESHARD_LOG_DEBUG 0
#define EDGESHARD_LOG_INFO 1
#define EDGESHARD_LOG_WARN 2
#define EDGESHARD_LOG_ERROR 3

/* ---- Encoding (abi/ABI.md section 6) --------------------------------------
 *
 * Every message is a flat byte string of: u8; u32 and u64 little-endian;
 * bytes/string = u32 length then the bytes. Decoders reject short input,
 * trailing bytes and counts the remaining bytes could not hold.
 *
 *   Request      method string, path string, headers, body bytes
 *                (path is what the shard sees, with the raw query)
 *   Response     status u32 (200..599), headers, body bytes
 *   CallRequest  binding string, key string, then a Request (shard_call)
 *   headers      count u32, then name string, value string per field
 *   Keys         count u32, then key string each
 *   KVs          count u32, then key string, value bytes each
 *   ListOptions  flags u32, limit u32 (0 = none), prefix string,
 *                start string, startAfter string, end string
 *   Statements   count u32, then sql string, nargs u32, value x nargs each
 *   Results      count u32, then per statement rowsAffected u64,
 *                lastInsertId u64, ncols u32, col string x ncols, nrows u32,
 *                value x (nrows * ncols)
 *   DataPoint    nidx u32, index string x nidx, nblobs u32, blob bytes x
 *                nblobs, ndoubles u32, double u64 (IEEE-754 bits) x ndoubles
 *   LogRecord    message string, then headers-shaped key/value fields
 *   value (SQL)  u8 tag, then: null nothing; int u64; float u64 (bits);
 *                text string; blob bytes
 */

/* ListOptions flag bits. */
#define EDGESHARD_LIST_HAS_START 1
#define EDGESHARD_LIST_HAS_START_AFTER 2
#define EDGESHARD_LIST_HAS_END 4
#define EDGESHARD_LIST_REVERSE 8
#define EDGESHARD_LIST_FLAGS 15       /* every defined list flag; others are refused */

/* SQL value tags. */
#define EDGESHARD_TAG_NULL 0
#define EDGESHARD_TAG_INT 1
#define EDGESHARD_TAG_FLOAT 2
#define EDGESHARD_TAG_TEXT 3
#define EDGESHARD_TAG_BLOB 4

/* Little-endian helpers for building and reading messages. */
static inline void edgeshard_put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void edgeshard_put_u64(uint8_t *p, uint64_t v) {
  edgeshard_put_u32(p, (uint32_t)v);
  edgeshard_put_u32(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t edgeshard_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t edgeshard_get_u64(const uint8_t *p) {
  return (uint64_t)edgeshard_get_u32(p) | (uint64_t)edgeshard_get_u32(p + 4) << 32;
}

/* ---- Host functions -------------------------------------------------------
 *
 * Results follow "caller passes a buffer": pass (buf, cap); a result of n
 * bytes is written there when n <= cap and n is returned. When n > cap
 * nothing is written, n is returned and the host holds the result: call
 * edgeshard_result_take with a buffer of at least n bytes to receive it
 * (nothing runs again). The next host call drops a held result.
 */

#define EDGESHARD_IMPORT(name) __attribute__((import_module("edgeshard"), import_name(name)))

/* core (always granted) */

/* Copies the held result; returns its length, the size needed if cap is
 * too small (it stays held), or -EDGESHARD_ERRNO_NO_RESULT. */
EDGESHARD_IMPORT("result_take")
int64_t edgeshard_result_take(void *buf, uint32_t cap);
/* The detail of the last failed call of this event, cut to cap; returns
 * the bytes written. */
EDGESHARD_IMPORT("error_message")
int64_t edgeshard_error_message(void *buf, uint32_t cap);
/* Inside edgeshard_fetch_batch only: the encoded response to the current
 * request; the host copies it and ends that request's event. 0, or
 * -EDGESHARD_ERRNO_INVALID outside a batch or past its last request. */
EDGESHARD_IMPORT("fetch_respond")
int32_t edgeshard_fetch_respond(const void *resp, uint32_t resp_len);

/* storage */

/* The value's length, or -EDGESHARD_ERRNO_NOT_FOUND (-1) if absent. */
EDGESHARD_IMPORT("storage_get")
int64_t edgeshard_storage_get(const void *key, uint32_t key_len, void *buf, uint32_t cap);
/* keys: encoded Keys; result: encoded KVs of those that exist, in order. */
EDGESHARD_IMPORT("storage_get_multi")
int64_t edgeshard_storage_get_multi(const void *keys, uint32_t keys_len, void *buf, uint32_t cap);
/* 0; flags: EDGESHARD_PUT_ALLOW_UNCONFIRMED or 0. */
EDGESHARD_IMPORT("storage_put")
int32_t edgeshard_storage_put(const void *key, uint32_t key_len, const void *val, uint32_t val_len, uint32_t flags);
/* kvs: encoded KVs; 0. */
EDGESHARD_IMPORT("storage_put_multi")
int32_t edgeshard_storage_put_multi(const void *kvs, uint32_t kvs_len, uint32_t flags);
/* 1 if the key existed, 0 if absent. */
EDGESHARD_IMPORT("storage_delete")
int32_t edgeshard_storage_delete(const void *key, uint32_t key_len);
/* keys: encoded Keys; the number that existed. */
EDGESHARD_IMPORT("storage_delete_multi")
int64_t edgeshard_storage_delete_multi(const void *keys, uint32_t keys_len);
/* opts: encoded ListOptions; result: encoded KVs in key order (or reverse). */
EDGESHARD_IMPORT("storage_list")
int64_t edgeshard_storage_list(const void *opts, uint32_t opts_len, void *buf, uint32_t cap);
/* Deletes every key of the shard (not its alarm); 0. */
EDGESHARD_IMPORT("storage_delete_all")
int32_t edgeshard_storage_delete_all(void);

/* alarm */

/* Sets the shard's one alarm (unix ms, 1..9223372036854); a past time fires
 * at once; 0 or -EDGESHARD_ERRNO_INVALID. Committed with the event. */
EDGESHARD_IMPORT("alarm_set")
int32_t edgeshard_alarm_set(int64_t unix_ms);
/* Unix ms of the alarm, or -1 if none. */
EDGESHARD_IMPORT("alarm_get")
int64_t edgeshard_alarm_get(void);
EDGESHARD_IMPORT("alarm_delete")
int32_t edgeshard_alarm_delete(void);

/* vars */

/* The var's length, or -1 if unset. "edgeshard.shard" is the calling
 * shard's "<binding>/<shard>"; "edgeshard.node" the host's node id. */
EDGESHARD_IMPORT("var_get")
int64_t edgeshard_var_get(const void *name, uint32_t name_len, void *buf, uint32_t cap);

/* log */

/* level: EDGESHARD_LOG_*; rec: an encoded LogRecord. The host adds
 * binding, shard and component=guest. */
EDGESHARD_IMPORT("log_write")
int32_t edgeshard_log_write(int32_t level, const void *rec, uint32_t rec_len);

/* sql (granted when the binding names a database) */

/* stmts: encoded Statements, run in one transaction; result: encoded
 * Results, or -EDGESHARD_ERRNO_SQL (see error_message). */
EDGESHARD_IMPORT("sql_exec")
int64_t edgeshard_sql_exec(const void *stmts, uint32_t stmts_len, void *buf, uint32_t cap);

/* analytics (granted when the binding names a dataset) */

/* point: an encoded DataPoint; 0, or -EDGESHARD_ERRNO_ANALYTICS /
 * -EDGESHARD_ERRNO_TOO_LARGE with a message. */
EDGESHARD_IMPORT("analytics_write")
int32_t edgeshard_analytics_write(const void *point, uint32_t point_len);

/* ---- WebSockets (ABI.md, section 10): group "websocket", always granted ---- */

#define EDGESHARD_GROUP_WEB_SOCKET "websocket"
/* Optional export: (ptr i32, len i32) -> i32, the encoded WSEvent written
 * where edgeshard_alloc pointed; 0 handled, else a failure (logged). A
 * module without it refuses every WebSocket upgrade (501). */
#define EDGESHARD_EXPORT_WS_EVENT "edgeshard_ws_event"
#define EDGESHARD_FN_WS_ACCEPT "ws_accept"
#define EDGESHARD_FN_WS_SEND "ws_send"
#define EDGESHARD_FN_WS_BROADCAST "ws_broadcast"
#define EDGESHARD_FN_WS_CLOSE "ws_close"
#define EDGESHARD_FN_WS_LIST "ws_list"
#define EDGESHARD_FN_WS_SET_ATTACHMENT "ws_set_attachment"
#define EDGESHARD_FN_WS_SET_AUTO_RESPONSE "ws_set_auto_response"

/* WSEvent kinds */
#define EDGESHARD_WS_EVENT_MESSAGE 1
#define EDGESHARD_WS_EVENT_CLOSE 2 /* the socket's last event */
#define EDGESHARD_WS_EVENT_ERROR 3 /* a close event follows */
/* flags: ws_send / ws_broadcast, and WSEvent.flags */
#define EDGESHARD_WS_BINARY 1     /* a binary message (else text) */
#define EDGESHARD_WS_CLEAN 1      /* close event: by a close handshake */
#define EDGESHARD_WS_SEND_FLAGS 1 /* every send flag defined */

#define EDGESHARD_MAX_WS_TAGS 10
#define EDGESHARD_MAX_WS_TAG_BYTES 256
#define EDGESHARD_MAX_WS_ATTACHMENT 4096
#define EDGESHARD_MAX_WS_CLOSE_REASON 123
#define EDGESHARD_MAX_WS_AUTO_RESPONSE 2048

#define EDGESHARD_WS_CLOSE_NORMAL 1000
#define EDGESHARD_WS_CLOSE_GOING_AWAY 1001
#define EDGESHARD_WS_CLOSE_RESTART 1012 /* the shard moved to another host of the POP: reconnect */
#define EDGESHARD_WS_CLOSE_ABNORMAL 1006
#define EDGESHARD_WS_CLOSE_TOO_BIG 1009
#define EDGESHARD_WS_CLOSE_INTERNAL 1011
#define EDGESHARD_WS_CLOSE_TRY_LATER 1013
#define EDGESHARD_WS_CLOSE_MIN_PRIVATE 3000
#define EDGESHARD_WS_CLOSE_MAX_PRIVATE 4999

/* WSEvent: kind u32, socket u64, flags u32, code u32, data bytes, tags
 * (count u32, string each), attachment bytes.
 * Sockets (ws_list): count u32, then id u64, tags, attachment bytes each. */

/* In a fetch of an upgrade request: tags an encoded Keys (or len 0),
 * attachment ≤ 4096 bytes; the socket id (> 0). Answer status 101 to
 * complete the handshake. -LIMIT past the host's sockets per shard. */
EDGESHARD_IMPORT("ws_accept")
int64_t edgeshard_ws_accept(const void *tags, uint32_t tags_len, const void *att, uint32_t att_len);

/* 0; -NOT_FOUND for a socket the shard does not hold, -TOO_LARGE past the
 * host's message size. Leaves once the event's writes are durable. */
EDGESHARD_IMPORT("ws_send")
int32_t edgeshard_ws_send(int64_t id, uint32_t flags, const void *msg, uint32_t msg_len);

/* To every socket with the tag (len 0: all); the number of sockets. */
EDGESHARD_IMPORT("ws_broadcast")
int64_t edgeshard_ws_broadcast(const void *tag, uint32_t tag_len, uint32_t flags, const void *msg, uint32_t msg_len);

/* code 1000 or 3000..4999, reason ≤ 123 bytes; 0 or -NOT_FOUND. */
EDGESHARD_IMPORT("ws_close")
int32_t edgeshard_ws_close(int64_t id, int32_t code, const void *reason, uint32_t reason_len);

/* Encoded Sockets with the tag (len 0: all), caller passes a buffer. */
EDGESHARD_IMPORT("ws_list")
int64_t edgeshard_ws_list(const void *tag, uint32_t tag_len, void *buf, uint32_t cap);

EDGESHARD_IMPORT("ws_set_attachment")
int32_t edgeshard_ws_set_attachment(int64_t id, const void *att, uint32_t att_len);

/* A text message equal to req is answered with resp by the host, without
 * an event; req_len 0 removes it. */
EDGESHARD_IMPORT("ws_set_auto_response")
int32_t edgeshard_ws_set_auto_response(const void *req, uint32_t req_len, const void *resp, uint32_t resp_len);
/* call (granted when the binding names bindings in calls) */

/* req: an encoded CallRequest; result: the called shard's encoded
 * Response (its failures are responses too, as /do answers them), or
 * -EDGESHARD_ERRNO_DEADLOCK, _LIMIT (depth), _DEADLINE, _NOT_GRANTED,
 * _INVALID. */
EDGESHARD_IMPORT("shard_call")
int64_t edgeshard_shard_call(const void *req, uint32_t req_len, void *buf, uint32_t cap);

/* fetch (granted when the binding has fetch hosts) */

/* req: an encoded Request whose path is an absolute http(s) URL; result:
 * the encoded Response, or -EDGESHARD_ERRNO_REFUSED, _DEADLINE, _TOO_LARGE,
 * _NETWORK, _INVALID. */
EDGESHARD_IMPORT("http_fetch")
int64_t edgeshard_http_fetch(const void *req, uint32_t req_len, void *buf, uint32_t cap);

#ifdef __cplusplus
}
#endif

#endif /* EDGESHARD_H */
