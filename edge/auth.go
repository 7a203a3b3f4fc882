package edge

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/plugins/proto"
	"github.com/golang-jwt/jwt/v5"
)

// authenticator establishes the caller's user id.
type authenticator struct {
	cfg    AuthConfig
	parser *jwt.Parser
	key    []byte
}

func newAuthenticator(cfg AuthConfig, now func() time.Time) *authenticator {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(now),
		jwt.WithIssuedAt(),
	}
	if !cfg.AllowNoExp {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &authenticator{cfg: cfg, parser: jwt.NewParser(opts...), key: []byte(cfg.JWTSecret)}
}

// errCritHeader refuses a token with a "crit" header.
var errCritHeader = errors.New("token has a crit header: critical extensions are not supported")

// authError is the cause of every 401; its message is safe to show.
type authError struct{ msg string }

func (e *authError) Error() string { return e.msg }

// userID returns the caller's user id: the trusted header when configured
// and present, else the sub of a valid HS256 bearer token.
func (au *authenticator) userID(r *http.Request) (string, error) {
	if h := au.cfg.TrustUserHeader; h != "" {
		if vals := r.Header.Values(h); len(vals) > 0 {
			if len(vals) > 1 || !proto.ValidID(vals[0]) {
				return "", &authError{h + " header: want one user id of " + proto.IDRule}
			}
			return vals[0], nil
		}
	}
	authz := r.Header.Get("Authorization")
	if authz == "" {
		if au.cfg.TrustUserHeader != "" && au.cfg.JWTSecret == "" {
			return "", &authError{"missing " + au.cfg.TrustUserHeader + " header"}
		}
		return "", &authError{"missing Authorization: Bearer token"}
	}
	scheme, tok, ok := strings.Cut(authz, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", &authError{"Authorization: want Bearer <token>"}
	}
	if au.cfg.JWTSecret == "" {
		return "", &authError{"bearer tokens are not accepted (no jwt_secret configured)"}
	}
	var claims jwt.RegisteredClaims
	_, err := au.parser.ParseWithClaims(strings.TrimSpace(tok), &claims, func(t *jwt.Token) (any, error) {
		// RFC 7515 §4.1.11: a "crit" header names extensions the recipient
		// must understand; this host understands none.
		if _, ok := t.Header["crit"]; ok {
			return nil, errCritHeader
		}
		return au.key, nil
	})
	if err != nil {
		msg := "invalid token"
		switch {
		case errors.Is(err, errCritHeader):
			msg = errCritHeader.Error()
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			msg = "token has no exp (expiry); tokens without one are refused unless [auth] allow_tokens_without_exp = true"
		case errors.Is(err, jwt.ErrTokenExpired):
			msg = "token expired"
		case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
			msg = "token not valid yet"
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			msg = "token signature invalid"
		case errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenInvalidAudience):
			msg = "token issuer or audience not accepted"
		case errors.Is(err, jwt.ErrTokenMalformed):
			msg = "token malformed"
		}
		return "", &authError{msg}
	}
	if !proto.ValidID(claims.Subject) {
		return "", &authError{"token sub: want a user id of " + proto.IDRule}
	}
	return claims.Subject, nil
}

// userKey is the context key of the authenticated user id.
type userKey struct{}

// authed wraps a handler that needs a user: it answers 401 without one.
func (a *API) authed(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid, err := a.auth.userID(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edgeshard"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", err.Error())
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), userKey{}, uid)))
	})
}

// userFrom returns the user id authed stored.
func userFrom(r *http.Request) string {
	s, _ := r.Context().Value(userKey{}).(string)
	return s
}
