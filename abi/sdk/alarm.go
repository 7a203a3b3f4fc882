package sdk

import (
	"time"

	"github.com/edgeshard/edgeshard/abi"
)

// SetAlarm schedules the shard's single alarm, replacing any earlier one.
// A time in the past fires as soon as possible.
func SetAlarm(at time.Time) error {
	return errnoErr("alarm.set", hostAlarmSet(at.UnixMilli()))
}

// GetAlarm returns the scheduled alarm time, if any.
func GetAlarm() (time.Time, bool, error) {
	r := hostAlarmGet()
	if r == -int64(abi.ErrnoNotFound) {
		return time.Time{}, false, nil
	}
	if r < 0 {
		return time.Time{}, false, hostError("alarm.get", abi.Errno(-r))
	}
	return time.UnixMilli(r), true, nil
}

// DeleteAlarm cancels the shard's alarm.
func DeleteAlarm() error {
	return errnoErr("alarm.delete", hostAlarmDelete())
}
