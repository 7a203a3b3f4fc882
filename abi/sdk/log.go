package sdk

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk/internal/guestmem"
)

// Log writes a structured record to the host log. kv holds key/value
// pairs; the host adds binding, shard and component=guest, renames fields
// that would pass for its own (level, message, ...: guest_level, ...),
// and logs a "code" field as code only if the binding's log_codes list it
// (abi/ABI.md, section 7). Logging never fails the caller: records past
// the event's log budget (100 by default) are dropped.
func Log(level int32, msg string, kv ...string) {
	rec := abi.LogRecord{Message: msg}
	for i := 0; i+1 < len(kv); i += 2 {
		rec.Fields = append(rec.Fields, abi.Header{Name: kv[i], Value: kv[i+1]})
	}
	st.enc = abi.AppendLogRecord(st.enc[:0], &rec)
	hostLogWrite(level, guestmem.Bytes(st.enc), uint32(len(st.enc)))
}

// Debug logs at debug level.
func Debug(msg string, kv ...string) { Log(abi.LogDebug, msg, kv...) }

// Info logs at info level.
func Info(msg string, kv ...string) { Log(abi.LogInfo, msg, kv...) }

// Warn logs at warning level.
func Warn(msg string, kv ...string) { Log(abi.LogWarn, msg, kv...) }

// Error logs at error level.
func Error(msg string, kv ...string) { Log(abi.LogError, msg, kv...) }
