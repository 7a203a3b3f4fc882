package host

import "time"

// alarmRetry is the retry policy of failing alarm handlers: at least once,
// like Durable Objects — exponential backoff from backoff (2 s, 4 s, 8 s …
// by default), at most retries retries, then the alarm is abandoned.
type alarmRetry struct {
	retries int
	backoff time.Duration
}

// next returns when retry number retry+1 of an alarm whose handler failed
// at now should fire, or false when retry was the last one allowed.
func (p alarmRetry) next(now time.Time, retry int) (time.Time, bool) {
	if retry >= p.retries {
		return time.Time{}, false
	}
	return now.Add(p.backoff << retry), true
}

// retryAlarm applies the policy to a failed alarm: it persists the next
// attempt (with the event's other writes when inEvent, else on its own —
// so a restart still fires it) and schedules it, or deletes the alarm
// after the last retry.
func (a *actor) retryAlarm(now time.Time, retry int, cause error, inEvent bool) {
	if a.fenced() {
		return // the alarm stays persisted where the shard's owner keeps it
	}
	if !inEvent {
		a.store.Abort()
		a.resetAlarmChange()
	}
	at, ok := alarmRetry{a.ns.h.cfg.AlarmRetries, a.ns.h.cfg.AlarmBackoff}.next(now, retry)
	// Each outcome is logged only once it is in effect (persisted and
	// scheduled): whoever reads the log — an operator, a test — then finds
	// the alarm where the line says.
	if !ok {
		a.store.DeleteAlarm()
		a.alarmDeleted = true
		a.commit()
		a.ns.metrics.alarmAbandoned.Inc()
		a.log.Error().Err(cause).Int("retries", retry).Msg("alarm abandoned after its last retry")
		return
	}
	a.store.SetAlarm(at.UnixMilli())
	a.commit()
	a.ns.h.alarms.schedule(a.id, at.UnixMilli(), retry+1)
	a.ns.metrics.alarmRetry.Inc()
	a.log.Warn().Err(cause).Int("retry", retry+1).Time("at", at).Msg("alarm failed; retrying with backoff")
}
