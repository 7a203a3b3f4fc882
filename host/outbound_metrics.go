package host

import (
	"errors"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/internal/prom"
	"github.com/prometheus/client_golang/prometheus"
)

// outboundMetrics count shard_call and http_fetch by binding (the
// caller's) and outcome, so an operator sees deadlocks, refusals and
// timeouts without reading guest logs.
type outboundMetrics struct {
	calls, fetches *prometheus.CounterVec
}

func newOutboundMetrics(reg prometheus.Registerer) *outboundMetrics {
	m := &outboundMetrics{
		calls:   prom.CounterVec("edgeshard_shard_calls_total", "shard_call by calling binding and outcome: ok (the called shard answered), failed (it failed: the caller got /do's error response), deadlock, depth, deadline, not_granted, invalid.", "binding", "outcome"),
		fetches: prom.CounterVec("edgeshard_fetches_total", "http_fetch by binding and outcome: ok, refused (host not allowed or address guard), deadline, too_large, network, invalid, not_granted.", "binding", "outcome"),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.fetches)
	}
	return m
}

// outcome names the outcome of a call or fetch that answered err.
func outcome(err error) string {
	var ce *wasm.CallError
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, wasm.ErrNotGranted):
		return "not_granted"
	case !errors.As(err, &ce):
		return "error"
	}
	switch ce.Errno {
	case abi.ErrnoDeadlock:
		return "deadlock"
	case abi.ErrnoLimit:
		return "depth"
	case abi.ErrnoDeadline:
		return "deadline"
	case abi.ErrnoInvalid:
		return "invalid"
	case abi.ErrnoRefused:
		return "refused"
	case abi.ErrnoTooLarge:
		return "too_large"
	case abi.ErrnoNetwork:
		return "network"
	}
	return "error"
}
