// Package guestmem turns the SDK's byte slices and strings into the
// pointers its host calls pass (abi/ABI.md section 3: a (ptr, len) pair
// into the guest's memory), for package sdk and its ws side alike.
package guestmem

import "unsafe"

// Bytes is the pointer of b's data, nil when b is empty.
func Bytes(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.SliceData(b))
}

// String is the pointer of s's data, nil when s is empty.
func String(s string) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}
