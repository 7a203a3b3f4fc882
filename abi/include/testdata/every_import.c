/* A plugin that calls every host function of edgeshard.h once per event,
 * so its import section lists them all (header_test.go loads it). */
#include <edgeshard.h>

static uint8_t buf[256];

EDGESHARD_EXPORT("edgeshard_abi_version") int32_t abi_version(void) { return EDGESHARD_ABI_VERSION; }
EDGESHARD_EXPORT("edgeshard_init") int32_t init(void) { return EDGESHARD_ERRNO_OK; }
EDGESHARD_EXPORT("edgeshard_alloc") void *alloc(int32_t size) { return size <= (int32_t)sizeof buf ? buf : 0; }

EDGESHARD_EXPORT("edgeshard_fetch") int64_t fetch(const uint8_t *req, int32_t len) {
  (void)req;
  (void)len;
  int64_t n = 0;
  n += edgeshard_result_take(buf, sizeof buf);
  n += edgeshard_error_message(buf, sizeof buf);
  n += edgeshard_fetch_respond(buf, 0);
  n += edgeshard_storage_get("k", 1, buf, sizeof buf);
  n += edgeshard_storage_get_multi(buf, 4, buf, sizeof buf);
  n += edgeshard_storage_put("k", 1, "v", 1, EDGESHARD_PUT_ALLOW_UNCONFIRMED);
  n += edgeshard_storage_put_multi(buf, 4, 0);
  n += edgeshard_storage_delete("k", 1);
  n += edgeshard_storage_delete_multi(buf, 4);
  n += edgeshard_storage_list(buf, 24, buf, sizeof buf);
  n += edgeshard_storage_delete_all();
  n += edgeshard_alarm_set(1);
  n += edgeshard_alarm_get();
  n += edgeshard_alarm_delete();
  n += edgeshard_var_get("A", 1, buf, sizeof buf);
  n += edgeshard_log_write(EDGESHARD_LOG_INFO, buf, 8);
  n += edgeshard_sql_exec(buf, 4, buf, sizeof buf);
  n += edgeshard_analytics_write(buf, 12);
  n += edgeshard_ws_accept(buf, 0, buf, 0);
  n += edgeshard_ws_send(1, 0, buf, 1);
  n += edgeshard_ws_broadcast(buf, 0, 0, buf, 1);
  n += edgeshard_ws_close(1, 1000, buf, 0);
  n += edgeshard_ws_list(buf, 0, buf, sizeof buf);
  n += edgeshard_ws_set_attachment(1, buf, 0);
  n += edgeshard_ws_set_auto_response(buf, 0, buf, 0);
  n += edgeshard_shard_call(buf, 4, buf, sizeof buf);
  n += edgeshard_http_fetch(buf, 4, buf, sizeof buf);
  edgeshard_put_u64(buf, (uint64_t)n);
  return edgeshard_pack(buf, 0);
}

EDGESHARD_EXPORT("edgeshard_alarm") int32_t alarm(int32_t retry_count) { return retry_count > 100; }
