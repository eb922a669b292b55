package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Keystone validates tokens with a real Keystone v3 (OpenStack mode), as
// keystonemiddleware does: the controller holds a token of its own service
// user and asks GET /v3/auth/tokens about each caller's token. Answers are
// cached for CacheTTL (never beyond the token's expiry).
type Keystone struct {
	// URL is the identity endpoint including /v3 ("http://keystone:5000/v3").
	URL string
	// The controller's service user.
	Username, Password, UserDomain string
	Project, ProjectDomain         string
	// HTTP defaults to a client with a 15 s timeout.
	HTTP *http.Client
	// CacheTTL defaults to 60 s; negative disables the cache.
	CacheTTL time.Duration

	mu            sync.Mutex
	serviceToken  string
	serviceExpiry time.Time
	cache         map[[32]byte]cached
}

type cached struct {
	p     Principal
	until time.Time
}

var _ Authenticator = (*Keystone)(nil)

func (k *Keystone) client() *http.Client {
	if k.HTTP != nil {
		return k.HTTP
	}
	return &http.Client{Timeout: 15 * time.Second}
}

// Authenticate implements Authenticator.
func (k *Keystone) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" || len(token) > 8192 {
		return Principal{}, ErrUnauthorized
	}
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	k.mu.Lock()
	if c, ok := k.cache[key]; ok && now.Before(c.until) {
		k.mu.Unlock()
		return c.p, nil
	}
	k.mu.Unlock()

	p, err := k.validate(ctx, token, false)
	if err != nil {
		return Principal{}, err
	}
	ttl := k.CacheTTL
	if ttl == 0 {
		ttl = time.Minute
	}
	if ttl > 0 {
		until := now.Add(ttl)
		if !p.ExpiresAt.IsZero() && p.ExpiresAt.Before(until) {
			until = p.ExpiresAt
		}
		k.mu.Lock()
		if k.cache == nil || len(k.cache) > 10000 {
			k.cache = map[[32]byte]cached{}
		}
		k.cache[key] = cached{p, until}
		k.mu.Unlock()
	}
	return p, nil
}

func (k *Keystone) validate(ctx context.Context, token string, retried bool) (Principal, error) {
	svc, err := k.service(ctx, retried)
	if err != nil {
		return Principal{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(k.URL, "/")+"/auth/tokens?nocatalog=1", nil)
	if err != nil {
		return Principal{}, err
	}
	req.Header.Set("X-Auth-Token", svc)
	req.Header.Set("X-Subject-Token", token)
	req.Header.Set("Accept", "application/json")
	resp, err := k.client().Do(req)
	if err != nil {
		return Principal{}, fmt.Errorf("keystone %s: %w", k.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusUnauthorized && !retried:
		// Our own token expired or was revoked: get a new one once.
		return k.validate(ctx, token, true)
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusUnauthorized:
		return Principal{}, ErrUnauthorized
	default:
		return Principal{}, fmt.Errorf("keystone %s: validating a token: HTTP %d: %s", k.URL, resp.StatusCode, trunc(string(body)))
	}
	var doc struct {
		Token struct {
			User struct {
				ID     string `json:"id"`
				Name   string `json:"name"`
				Domain struct {
					ID string `json:"id"`
				} `json:"domain"`
			} `json:"user"`
			Project *struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"project"`
			Roles []struct {
				Name string `json:"name"`
			} `json:"roles"`
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"token"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return Principal{}, fmt.Errorf("keystone %s: token document: %w", k.URL, err)
	}
	t := doc.Token
	if t.Project == nil || t.Project.ID == "" {
		// Trove's API is per project: an unscoped token cannot use it.
		return Principal{}, ErrUnauthorized
	}
	p := Principal{UserID: t.User.ID, UserName: t.User.Name, DomainID: t.User.Domain.ID,
		ProjectID: t.Project.ID, ProjectName: t.Project.Name, ExpiresAt: t.ExpiresAt}
	for _, r := range t.Roles {
		p.Roles = append(p.Roles, r.Name)
	}
	if !p.ExpiresAt.IsZero() && !time.Now().Before(p.ExpiresAt) {
		return Principal{}, ErrUnauthorized
	}
	return p, nil
}

// service returns the controller's own token, fetching a new one when it
// is missing, near expiry or (refresh) rejected.
func (k *Keystone) service(ctx context.Context, refresh bool) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !refresh && k.serviceToken != "" && time.Until(k.serviceExpiry) > time.Minute {
		return k.serviceToken, nil
	}
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": k.Username, "password": k.Password, "domain": map[string]string{"name": orDefault(k.UserDomain)}}}},
		"scope": map[string]any{"project": map[string]any{"name": k.Project, "domain": map[string]string{"name": orDefault(k.ProjectDomain)}}},
	}}
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(k.URL, "/")+"/auth/tokens?nocatalog=1", bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.client().Do(req)
	if err != nil {
		return "", fmt.Errorf("keystone %s: %w", k.URL, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("keystone %s: the controller's service user %q could not authenticate: HTTP %d: %s", k.URL, k.Username, resp.StatusCode, trunc(string(rb)))
	}
	var doc struct {
		Token struct {
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"token"`
	}
	json.Unmarshal(rb, &doc)
	tok := resp.Header.Get("X-Subject-Token")
	if tok == "" {
		return "", errors.New("keystone: no X-Subject-Token in the authentication response")
	}
	k.serviceToken, k.serviceExpiry = tok, doc.Token.ExpiresAt
	if k.serviceExpiry.IsZero() {
		k.serviceExpiry = time.Now().Add(time.Hour)
	}
	return tok, nil
}

func orDefault(d string) string {
	if d == "" {
		return "Default"
	}
	return d
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}
