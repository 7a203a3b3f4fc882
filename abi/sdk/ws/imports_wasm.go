//go:build wasip1

package ws

import "unsafe"

// Host functions of group "websocket" (abi/ABI.md, section 10), and the
// two core ones this package reads results and messages with.

//go:wasmimport edgeshard result_take
func hostResultTake(buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard error_message
func hostErrorMessage(buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard ws_accept
func hostWSAccept(tags unsafe.Pointer, tagsLen uint32, att unsafe.Pointer, attLen uint32) int64

//go:wasmimport edgeshard ws_send
func hostWSSend(id int64, flags uint32, p unsafe.Pointer, l uint32) int32

//go:wasmimport edgeshard ws_broadcast
func hostWSBroadcast(tag unsafe.Pointer, tagLen uint32, flags uint32, p unsafe.Pointer, l uint32) int64

//go:wasmimport edgeshard ws_close
func hostWSClose(id int64, code int32, reason unsafe.Pointer, reasonLen uint32) int32

//go:wasmimport edgeshard ws_list
func hostWSList(tag unsafe.Pointer, tagLen uint32, buf unsafe.Pointer, bufCap uint32) int64

//go:wasmimport edgeshard ws_set_attachment
func hostWSSetAttachment(id int64, p unsafe.Pointer, l uint32) int32

//go:wasmimport edgeshard ws_set_auto_response
func hostWSSetAutoResponse(req unsafe.Pointer, reqLen uint32, resp unsafe.Pointer, respLen uint32) int32
