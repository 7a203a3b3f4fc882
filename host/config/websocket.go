package config

import "time"

// WebSocket is the [websocket] table: the limits of the sockets shards
// accept at /do (host.WebSocketLimits). 0 takes the default.
type WebSocket struct {
	// MaxSocketsPerShard bounds the sockets one shard holds (0: 10000).
	MaxSocketsPerShard int `toml:"max_sockets_per_shard"`
	// MaxMessageBytes bounds one message either way (0: 1048576).
	MaxMessageBytes int `toml:"max_message_bytes"`
	// SendQueueBytes bounds what waits to be written to one socket before
	// it is closed as too slow (0: 4194304).
	SendQueueBytes int `toml:"send_queue_bytes"`
	// WriteTimeout bounds one write to a socket (0: 10s).
	WriteTimeout Duration `toml:"write_timeout"`
}

// validate reports a negative setting.
func (w WebSocket) validate(bad func(format string, args ...any)) {
	for _, c := range []struct {
		name string
		v    int64
	}{
		{"max_sockets_per_shard", int64(w.MaxSocketsPerShard)},
		{"max_message_bytes", int64(w.MaxMessageBytes)},
		{"send_queue_bytes", int64(w.SendQueueBytes)},
		{"write_timeout", int64(w.WriteTimeout.Duration / time.Millisecond)},
	} {
		if c.v < 0 {
			bad("websocket.%s must be ≥ 0 (0: the default)", c.name)
		}
	}
}
