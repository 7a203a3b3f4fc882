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
	// sweepBatch members are dropped per storage call (two deletes each;
	// a multi-key call takes at most 128 keys), at most maxSweepRounds
	// times per alarm event; if more are due the alarm runs again at once.
	sweepBatch     = 64
	maxSweepRounds = 16
	// maxLoggedUsers bounds the user list in a timeout log record.
	maxLoggedUsers = 20
)

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

func (m member) expiryKey() string { return expiryKey(m.expires(), m.user) }

func expiryKey(expires int64, user string) string {
	b := make([]byte, 0, len(expiryPrefix)+16+len(user))
	b = append(b, expiryPrefix...)
	b = appendHex16(b, uint64(expires))
	return string(append(b, user...))
}

func appendHex16(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[v>>uint(shift)&0xf])
	}
	return b
}

// parseExpiryKey splits an expiry index key into its time and user.
func parseExpiryKey(k string) (int64, string, bool) {
	const head = len(expiryPrefix) + 16
	if len(k) <= head || !strings.HasPrefix(k, expiryPrefix) {
		return 0, "", false
	}
	at, err := strconv.ParseUint(k[len(expiryPrefix):head], 16, 64)
	return int64(at), k[head:], err == nil
}

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
	st := sdk.Storage()
	due := sdk.ListOptions{
		Prefix: expiryPrefix,
		End:    expiryKey(time.Now().UnixMilli()+1, ""), HasEnd: true, // expires ≤ now
		Limit: sweepBatch,
	}
	var gone []string
	for range maxSweepRounds {
		kvs, err := st.List(due)
		if err != nil {
			return err
		}
		keys := make([]string, 0, 2*len(kvs))
		for _, kv := range kvs {
			_, user, ok := parseExpiryKey(kv.Key)
			if !ok {
				return errCorrupt
			}
			keys = append(keys, kv.Key, memberPrefix+user)
			gone = append(gone, user)
		}
		if len(keys) > 0 {
			if _, err := st.DeleteMulti(keys); err != nil {
				return err
			}
		}
		if len(kvs) < sweepBatch {
			break
		}
	}
	if len(gone) > 0 {
		room, _, _ := st.Get(keyRoom)
		users := gone[:min(len(gone), maxLoggedUsers)]
		sdk.Info("presence: members timed out", "room", string(room),
			"count", strconv.Itoa(len(gone)), "users", strings.Join(users, ","))
	}
	next, err := st.List(sdk.ListOptions{Prefix: expiryPrefix, Limit: 1})
	if err != nil || len(next) == 0 {
		return err
	}
	at, _, ok := parseExpiryKey(next[0].Key)
	if !ok {
		return errCorrupt
	}
	return sdk.SetAlarm(time.UnixMilli(at))
}
