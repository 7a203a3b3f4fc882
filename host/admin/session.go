package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/internal/httpx"
)

// Browser sessions of the inspector. A browser cannot send the bearer
// token on a navigation, so it logs in once: POST /login with the token
// (the login form) answers a session cookie, random and kept only in
// memory (a restart logs every browser out), HttpOnly and SameSite=Strict.
// A session may do what the inspector does — read, and switch a shard's
// tracing — and nothing else: pushes, rollbacks and jobs still need the
// bearer token. A session's request other than GET or HEAD must carry the
// X-Edgeshard-Inspector header (which a cross-site form cannot send, and a
// cross-site script cannot without a CORS preflight this API never
// grants) and, if it has an Origin, that of this listener.

const (
	// SessionCookie is the name of the inspector's session cookie.
	SessionCookie = "edgeshard_session"
	// InspectorHeader must accompany a session's request that changes
	// something (a trace switch, a logout).
	InspectorHeader = "X-Edgeshard-Inspector"
	// DefaultSessionTTL is how long a browser login lasts.
	DefaultSessionTTL = 12 * time.Hour
	// maxSessions bounds the sessions kept; the one closest to expiry goes
	// first.
	maxSessions = 1024
)

type sessions struct {
	mu  sync.Mutex
	ttl time.Duration
	m   map[[sha256.Size]byte]time.Time // sha256 of the cookie → expiry
}

func newSessions(ttl time.Duration) *sessions {
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	return &sessions{ttl: ttl, m: map[[sha256.Size]byte]time.Time{}}
}

// create starts a session and returns its cookie value.
func (s *sessions) create(now time.Time) string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	id := hex.EncodeToString(b[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, exp := range s.m {
		if !now.Before(exp) {
			delete(s.m, k)
		}
	}
	if len(s.m) >= maxSessions {
		var first [sha256.Size]byte
		var firstExp time.Time
		for k, exp := range s.m {
			if firstExp.IsZero() || exp.Before(firstExp) {
				first, firstExp = k, exp
			}
		}
		delete(s.m, first)
	}
	s.m[sha256.Sum256([]byte(id))] = now.Add(s.ttl)
	return id
}

// valid reports whether id is a live session.
func (s *sessions) valid(id string, now time.Time) bool {
	if id == "" {
		return false
	}
	k := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.m[k]
	if ok && !now.Before(exp) {
		delete(s.m, k)
		return false
	}
	return ok
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sha256.Sum256([]byte(id)))
}

type viaSessionKey struct{}

// viaSession reports whether r was let in by a session cookie rather than
// the bearer token.
func viaSession(r *http.Request) bool {
	v, _ := r.Context().Value(viaSessionKey{}).(bool)
	return v
}

// sessionCookie returns r's session id, "" when it has none.
func sessionCookie(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return ""
	}
	return c.Value
}

// authenticate lets a request in with the bearer token, or with a session
// cookie within a session's rights; the login form is the one thing
// served to anyone. Everything else is refused before any routing, so not
// even the existence of a route leaks: 401 with the JSON error envelope,
// or the login page for a browser asking for HTML.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if s.authorized(r.Header.Get("Authorization")) {
			next.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/login" {
			s.login(w, r)
			return
		}
		if id := sessionCookie(r); id != "" && s.sessions.valid(id, time.Now()) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				if msg := sameOrigin(r); msg != "" {
					s.log.Warn().Str("remote", r.RemoteAddr).Str("method", r.Method).Str("path", r.URL.Path).Str("reason", msg).Msg("inspector request refused")
					httpx.WriteError(w, http.StatusForbidden, "forbidden", msg)
					return
				}
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), viaSessionKey{}, true)))
			return
		}
		s.log.Warn().Str("remote", r.RemoteAddr).Str("method", r.Method).Str("path", r.URL.Path).Msg("admin request refused: missing or wrong bearer token")
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && wantsHTML(r) {
			s.loginPage(w, http.StatusUnauthorized, "")
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgeshard-admin"`)
		httpx.WriteError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid admin token: send Authorization: Bearer <admin token>")
	})
}

// sameOrigin checks a session's request that changes something: it must
// carry InspectorHeader and, if it has an Origin, come from this listener.
// It returns why not, or "".
func sameOrigin(r *http.Request) string {
	if r.Header.Get(InspectorHeader) == "" {
		return "a browser session's request must carry the " + InspectorHeader + " header"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return "cross-origin request refused"
		}
	}
	return ""
}

// bearerOnly refuses a request let in by a session: what the inspector
// does not do (push, rollback, jobs) needs the token itself.
func bearerOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if viaSession(r) {
			httpx.WriteError(w, http.StatusForbidden, "bearer_required", "a browser session may read and switch tracing only; this needs Authorization: Bearer <admin token>")
			return
		}
		h(w, r)
	}
}

// wantsHTML reports whether the client prefers a page (a browser's
// navigation) to JSON.
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// login serves the login form (GET) and checks it (POST): the right token
// starts a session and goes to the inspector; a wrong one shows the form
// again.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.loginPage(w, http.StatusOK, "")
		return
	case http.MethodPost:
	default:
		httpx.MethodNotAllowed().ServeHTTP(w, r)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	token := ""
	if err := r.ParseForm(); err == nil {
		token = r.PostForm.Get("token")
	}
	if !s.authorized("Bearer " + token) {
		s.log.Warn().Str("remote", r.RemoteAddr).Msg("inspector login refused: wrong token")
		s.loginPage(w, http.StatusUnauthorized, "That is not the admin token.")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: s.sessions.create(time.Now()), Path: "/",
		MaxAge: int(s.sessions.ttl / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil,
	})
	s.log.Info().Str("remote", r.RemoteAddr).Msg("inspector login")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout ends the request's session.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if id := sessionCookie(r); id != "" {
		s.sessions.end(id)
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}
