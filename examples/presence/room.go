package main

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

// Storage layout of one room:
//
//	m:<user>             "<joined> <last_seen>"  (unix ms)
//	x:<expires><user>    expiry index (expires = last_seen + 30 s, 16 hex digits), value empty
//	room                 the room's name, for the alarm's log records
//
// Every member has exactly one index entry, written in the same event as
// its m: entry, so the alarm finds who is due with one range read ending
// at "now" and the next expiry with a one-key read.
const (
	memberPrefix = "m:"
	expiryPrefix = "x:"
	keyRoom      = "room"
	// maxLoggedUsers bounds the user list in a timeout log record.
	maxLoggedUsers = 20
)

// expiries is the expiry index of the members.
var expiries = sdk.ExpiryIndex{Prefix: expiryPrefix}

// errCorrupt reports a stored value this code did not write.
var errCorrupt = errors.New("presence: corrupt stored member")

// member is one user's presence.
type member struct {
	user     string
	joined   int64 // unix ms of the join
	lastSeen int64 // unix ms of the last join or heartbeat
	stored   bool  // m:<user> exists (possibly expired, not yet swept)
}

func (m member) expires() int64 { return m.lastSeen + timeout.Milliseconds() }

// onlineAt reports whether the member is online at unix ms now. A member
// past its expiry is offline even before the alarm sweeps it.
func (m member) onlineAt(now int64) bool { return m.stored && m.expires() > now }

func (m member) expiryKey() string { return expiries.Key(m.expires(), m.user) }

func parseMember(user string, v []byte) (member, error) {
	j, l, ok := strings.Cut(string(v), " ")
	joined, err1 := strconv.ParseInt(j, 10, 64)
	last, err2 := strconv.ParseInt(l, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return member{}, errCorrupt
	}
	return member{user: user, joined: joined, lastSeen: last, stored: true}, nil
}

// loadMember reads a user's presence; stored is false if there is none.
func loadMember(user string) (member, error) {
	v, ok, err := sdk.Storage().Get(memberPrefix + user)
	if err != nil || !ok {
		return member{user: user}, err
	}
	return parseMember(user, v)
}

// touch marks m as seen at now: it moves the member's index entry, and
// arms the alarm unless one is set already (expiries only grow, so an
// alarm that is set is never later than this one).
func touch(m *member, now int64, room string) error {
	st := sdk.Storage()
	if m.stored {
		if _, err := st.Delete(m.expiryKey()); err != nil {
			return err
		}
	} else if err := st.Put(keyRoom, []byte(room)); err != nil {
		return err
	}
	m.lastSeen, m.stored = now, true
	v := strconv.AppendInt(nil, m.joined, 10)
	v = append(v, ' ')
	if err := st.Put(memberPrefix+m.user, strconv.AppendInt(v, m.lastSeen, 10)); err != nil {
		return err
	}
	if err := st.Put(m.expiryKey(), nil); err != nil {
		return err
	}
	if _, set, err := sdk.GetAlarm(); err != nil || set {
		return err
	}
	return sdk.SetAlarm(time.UnixMilli(m.expires()))
}

// remove deletes a member; the alarm goes too when the room is empty.
func remove(m member) error {
	st := sdk.Storage()
	if _, err := st.DeleteMulti([]string{memberPrefix + m.user, m.expiryKey()}); err != nil {
		return err
	}
	left, err := st.List(sdk.ListOptions{Prefix: expiryPrefix, Limit: 1})
	if err != nil || len(left) > 0 {
		return err
	}
	return sdk.DeleteAlarm()
}

// online lists the members online at now, by user id.
func online(now int64) ([]member, error) {
	kvs, err := sdk.Storage().List(sdk.ListOptions{Prefix: memberPrefix})
	if err != nil {
		return nil, err
	}
	out := make([]member, 0, len(kvs))
	for _, kv := range kvs {
		m, err := parseMember(kv.Key[len(memberPrefix):], kv.Value)
		if err != nil {
			return nil, err
		}
		if m.onlineAt(now) {
			out = append(out, m)
		}
	}
	return out, nil
}

// expire is the alarm handler: it drops every member whose expiry has
// passed and re-arms the alarm for the earliest expiry left. Running it
// twice (alarms are at-least-once) drops nobody else.
func expire(sdk.AlarmInfo) error {
	gone, err := expiries.Sweep(time.Now().UnixMilli(), func(user string) string { return memberPrefix + user })
	if err != nil {
		return err
	}
	if len(gone) > 0 {
		room, _, _ := sdk.Storage().Get(keyRoom)
		users := gone[:min(len(gone), maxLoggedUsers)]
		sdk.Info("presence: members timed out", "room", string(room),
			"count", strconv.Itoa(len(gone)), "users", strings.Join(users, ","))
	}
	return expiries.ArmNext()
}
