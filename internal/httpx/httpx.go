// Package httpx holds the small HTTP helpers every edgeshard API shares:
// JSON bodies and the error envelope {"error":{"code","message"}}.
package httpx

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
)

// ErrorBody is the JSON shape of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is a machine-readable code and a human message.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// WriteJSON writes v as JSON with the status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"encode_failed","message":"response could not be encoded"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// WriteError writes the error envelope.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
}

// NotFound answers unknown routes with the error envelope.
func NotFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "not_found", "no route for "+r.Method+" "+r.URL.Path)
	})
}

// MethodNotAllowed answers known routes called with the wrong method.
func MethodNotAllowed() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method "+r.Method+" is not allowed on "+r.URL.Path)
	})
}

// RequireBearer serves h only to requests carrying "Authorization: Bearer
// token"; others get 401 unauthorized.
func RequireBearer(token string, h http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edgeshard"`)
			WriteError(w, http.StatusUnauthorized, "unauthorized", "this route needs Authorization: Bearer <token>")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// RequestIDHeader carries the id of a request in its response, so that a
// client can quote it and an operator find the request's log lines.
const RequestIDHeader = "X-Request-Id"

// NewRequestID returns a random request id (16 hex digits).
func NewRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// WriteInternal answers a failure whose details are not for the client
// (stack traces, internal addresses): it sets a request id header, writes
// the error envelope with msg and that id, and returns the id for the log
// line that keeps the details.
func WriteInternal(w http.ResponseWriter, status int, code, msg string) string {
	id := w.Header().Get(RequestIDHeader)
	if id == "" {
		id = NewRequestID()
		w.Header().Set(RequestIDHeader, id)
	}
	WriteError(w, status, code, msg+" (request id "+id+"; details are in the host log)")
	return id
}
