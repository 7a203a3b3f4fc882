package main

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

// Storage layout of one shard:
//
//	r:<key>                 the stored response: "<expires> <status> <fingerprint>\n<content-type>\n<body>"
//	x:<expires><key>        expiry index (expires: unix ms, 16 hex digits), value empty
//	seq                     the operation's last sequence number
//
// The expiry index lists keys in expiry order, so the alarm finds what is
// due with one range read ending at "now" and the next expiry with a
// one-key read.
const (
	recordPrefix = "r:"
	expiryPrefix = "x:"
	keySeq       = "seq"
)

// expiries is the expiry index of the stored responses.
var expiries = sdk.ExpiryIndex{Prefix: expiryPrefix}

// errCorrupt reports a stored value this code did not write.
var errCorrupt = errors.New("idempotency: corrupt stored record")

// record is one stored response.
type record struct {
	expires     int64 // unix ms
	status      int
	fingerprint string
	contentType string
	body        []byte
}

// response replays the record.
func (r record) response(replayed bool) *sdk.Response {
	return &sdk.Response{
		Status: r.status,
		Header: []sdk.Header{
			{Name: "Content-Type", Value: r.contentType},
			{Name: replayedHeader, Value: strconv.FormatBool(replayed)},
		},
		Body: r.body,
	}
}

// expiryKey is the record's key in the expiry index.
func (r record) expiryKey(key string) string { return expiries.Key(r.expires, key) }

func loadRecord(key string) (record, bool, error) {
	v, ok, err := sdk.Storage().Get(recordPrefix + key)
	if err != nil || !ok {
		return record{}, false, err
	}
	meta, rest, ok1 := bytes.Cut(v, []byte{'\n'})
	ctype, body, ok2 := bytes.Cut(rest, []byte{'\n'})
	f := strings.Fields(string(meta))
	if !ok1 || !ok2 || len(f) != 3 {
		return record{}, false, errCorrupt
	}
	expires, err1 := strconv.ParseInt(f[0], 10, 64)
	status, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return record{}, false, errCorrupt
	}
	return record{expires: expires, status: status, fingerprint: f[2], contentType: string(ctype), body: body}, true, nil
}

// saveRecord stores the record and its expiry index entry, and moves the
// alarm earlier if this record expires before everything else.
func saveRecord(key string, r record) error {
	v := strconv.AppendInt(nil, r.expires, 10)
	v = append(v, ' ')
	v = strconv.AppendInt(v, int64(r.status), 10)
	v = append(v, ' ')
	v = append(v, r.fingerprint...)
	v = append(v, '\n')
	v = append(v, r.contentType...)
	v = append(v, '\n')
	v = append(v, r.body...)
	st := sdk.Storage()
	if err := st.Put(recordPrefix+key, v); err != nil {
		return err
	}
	if err := st.Put(r.expiryKey(key), nil); err != nil {
		return err
	}
	at, set, err := sdk.GetAlarm()
	if err != nil {
		return err
	}
	if !set || at.UnixMilli() > r.expires {
		return sdk.SetAlarm(time.UnixMilli(r.expires))
	}
	return nil
}

// nextSeq advances the operation's sequence number.
func nextSeq() (int64, error) {
	st := sdk.Storage()
	v, _, err := st.Get(keySeq)
	if err != nil {
		return 0, err
	}
	var n int64
	if len(v) > 0 {
		if n, err = strconv.ParseInt(string(v), 10, 64); err != nil {
			return 0, errCorrupt
		}
	}
	n++
	return n, st.Put(keySeq, strconv.AppendInt(nil, n, 10))
}

// expire is the alarm handler: it deletes every key whose expiry has
// passed, then re-arms the alarm for the earliest expiry left. Running it
// twice (alarms are at-least-once) deletes nothing more.
func expire(sdk.AlarmInfo) error {
	expired, err := expiries.Sweep(time.Now().UnixMilli(), func(key string) string { return recordPrefix + key })
	if err != nil {
		return err
	}
	if len(expired) > 0 {
		sdk.Info("idempotency keys expired", "count", strconv.Itoa(len(expired)))
	}
	// The host cleared the alarm before calling us; arm the next one.
	return expiries.ArmNext()
}
