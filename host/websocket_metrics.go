package host

import "github.com/prometheus/client_golang/prometheus"

// wsCollector reports the sockets the host holds at scrape time.
type wsCollector struct{ h *Host }

var descSockets = prometheus.NewDesc("edgeshard_websockets", "WebSockets the host holds per binding (open, or accepted and completing the handshake), whether or not their shards have a live instance.", []string{"binding"}, nil)

func (c *wsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descSockets }

func (c *wsCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.h.ws.counts()
	for _, ns := range c.h.Namespaces() {
		ch <- prometheus.MustNewConstMetric(descSockets, prometheus.GaugeValue, float64(counts[ns.name]), ns.name)
	}
}

// counts returns the number of sockets per binding.
func (r *wsRegistry) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, ss := range r.shards {
		ss.mu.Lock()
		out[ss.ns.name] += len(ss.socks)
		ss.mu.Unlock()
	}
	return out
}
