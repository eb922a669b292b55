// Package auth says who an API request comes from. A Principal is the
// user and project a token stands for; an Authenticator turns a token
// into one. Two implement it: identity.Store (the embedded mode: tokens
// the controller issued itself) and Keystone here (OpenStack mode: tokens
// a real Keystone issued, checked with Keystone).
//
// auth decides identity only. Which project may touch which resource is
// the API's rule (every resource belongs to one project); auth must not
// know about resources.
package auth

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Principal is an authenticated caller.
type Principal struct {
	UserID      string
	UserName    string
	DomainID    string
	ProjectID   string
	ProjectName string
	Roles       []string
	ExpiresAt   time.Time
}

// IsAdmin reports whether the caller has the admin role.
func (p Principal) IsAdmin() bool { return slices.Contains(p.Roles, "admin") }

// Authenticator validates a token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Principal, error)
}

// ErrUnauthorized is returned for a missing, unknown or expired token.
var ErrUnauthorized = errors.New("the token is missing, unknown or expired")

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal a request was authenticated as.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}
