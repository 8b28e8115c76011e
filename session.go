package nsdriver

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// A session token (what `nsc login` stores by default) is never sent to the
// compute API: it buys short-lived tenant tokens at the IAM endpoint, which
// are cached for other processes in token.cache beside the token file and
// renewed before they have less than minValidity left, one exchange at a
// time however many calls wait.

const (
	defaultIAMEndpoint = "https://private-api.global.namespaceapis.com"
	// tenantTokenLife is what an exchange asks for: twice the minimum
	// validity, as Namespace's SDKs ask (they cap it at 1 h).
	tenantTokenLife = 2 * minValidity
	// exchangeTimeout bounds one exchange, which no caller can cancel.
	exchangeTimeout = 30 * time.Second
	// exchangeBackoff spaces exchanges that fail while the current token
	// is still valid (and keeps being used).
	exchangeBackoff = 10 * time.Second
)

var procIssueTenantToken = procedure{path: "namespace.private.sessions.v1beta.UserSessionsService/IssueTenantTokenFromSession",
	idempotency: idempotent, transient: []Code{CodeUnavailable}}

// renewer is a TokenSource that can replace a token the API refused as
// unauthenticated; it reports whether the call is worth repeating.
type renewer interface {
	renew(ctx context.Context, refused string) bool
}

// session exchanges one token file's session token for tenant tokens.
type session struct {
	file  string // token.json, re-read at each exchange (a new `nsc login`)
	cache string // token.cache beside it
	iam   string

	mu        sync.Mutex
	sessionTk string    // the session token (exchange goroutine and newSession only)
	current   string    // the tenant token handed out
	exp       time.Time // its expiry
	inflight  chan struct{}
	lastErr   error
	skipCache bool      // the cached token was refused: ask the IAM endpoint
	nextTry   time.Time // after a failed exchange, while current is valid
}

func newSession(file, sessionToken string) (*session, error) {
	iam := defaultIAMEndpoint
	for _, name := range []string{"NSC_IAM_ENDPOINT", "NSC_GLOBAL_ENDPOINT"} {
		if v := strings.TrimSpace(os.Getenv(name)); v != "" {
			iam = v
			break
		}
	}
	u, err := checkEndpoint(iam)
	if err != nil {
		return nil, fmt.Errorf("the IAM endpoint for the nsc login session: %w", err)
	}
	return &session{file: file, cache: filepath.Join(filepath.Dir(file), "token.cache"), iam: u.String(), sessionTk: sessionToken}, nil
}

// token returns a tenant token with at least minValidity left, exchanging
// the session when there is none. If the exchange fails while the current
// token is still valid, the current one is returned.
func (s *session) token(ctx context.Context) (string, error) {
	s.mu.Lock()
	now := time.Now()
	valid := s.current != "" && now.Before(s.exp)
	if valid && (s.exp.Sub(now) >= minValidity || now.Before(s.nextTry)) {
		tok := s.current
		s.mu.Unlock()
		return tok, nil
	}
	if s.inflight == nil {
		s.inflight = make(chan struct{})
		go s.exchange(s.inflight)
	}
	done := s.inflight
	s.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != "" && time.Now().Before(s.exp) {
		return s.current, nil
	}
	return "", s.lastErr
}

// renew forgets a refused tenant token — only if it is still the current
// one, so that many refused calls cause one exchange — and gets another.
func (s *session) renew(ctx context.Context, refused string) bool {
	s.mu.Lock()
	if refused == s.current {
		s.current, s.exp, s.nextTry, s.skipCache = "", time.Time{}, time.Time{}, true
	}
	s.mu.Unlock()
	_, err := s.token(ctx)
	return err == nil
}

// exchange gets a tenant token (from the cache, else the IAM endpoint) on a
// context of its own, and wakes every waiter by closing done.
func (s *session) exchange(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), exchangeTimeout)
	defer cancel()
	s.mu.Lock()
	useCache := !s.skipCache
	s.mu.Unlock()
	tok, exp, err := s.fetch(ctx, useCache)
	s.mu.Lock()
	if err == nil {
		s.current, s.exp, s.skipCache = tok, exp, false
	} else {
		s.nextTry = time.Now().Add(exchangeBackoff)
	}
	s.lastErr, s.inflight = err, nil
	s.mu.Unlock()
	close(done)
}

func (s *session) fetch(ctx context.Context, useCache bool) (string, time.Time, error) {
	// A new `nsc login` replaces the session in place.
	if f, err := readTokenFile(s.file, s.file); err == nil && f.session != "" {
		s.sessionTk = f.session
	}
	if useCache {
		if tok, exp, ok := s.readCache(); ok {
			return tok, exp, nil
		}
	}
	tok, err := s.issue(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	exp, ok := jwtExpiry(tok)
	if !ok {
		exp = time.Now().Add(tenantTokenLife)
	}
	s.writeCache(tok)
	return tok, exp, nil
}

// issue calls IssueTenantTokenFromSession with the session token.
func (s *session) issue(ctx context.Context) (string, error) {
	t := transport{
		http:   &http.Client{Transport: defaultTransport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		token:  StaticToken(s.sessionTk),
		logger: slog.New(slog.DiscardHandler),
		retry:  DefaultRetryPolicy(),
	}
	var resp struct {
		TenantToken string `json:"tenantToken"`
	}
	err := t.unary(ctx, s.iam, procIssueTenantToken, map[string]any{"tokenDuration": ProtoDuration(tenantTokenLife)}, &resp)
	switch {
	case CodeOf(err) == CodeUnauthenticated:
		return "", fmt.Errorf("%w: Namespace refused the nsc login session in %s; run `nsc login` again", ErrUnauthenticated, s.file)
	case err != nil:
		return "", fmt.Errorf("exchanging the nsc login session in %s for a token at %s: %w", s.file, s.iam, err)
	case resp.TenantToken == "":
		return "", fmt.Errorf("the session exchange at %s returned no token", s.iam)
	}
	return resp.TenantToken, nil
}

// readCache returns the cached tenant token if another process (or an
// earlier run) left one with at least minValidity, for the same tenant,
// written after the current login.
func (s *session) readCache() (string, time.Time, bool) {
	info, err := os.Stat(s.cache)
	if err != nil {
		return "", time.Time{}, false
	}
	if login, err := os.Stat(s.file); err == nil && login.ModTime().After(info.ModTime()) {
		return "", time.Time{}, false // written before the latest `nsc login`
	}
	data, err := os.ReadFile(s.cache)
	if err != nil {
		return "", time.Time{}, false
	}
	tok := strings.TrimSpace(string(data))
	claims, ok := jwtClaims(tok)
	if !ok || claims.Exp == nil {
		return "", time.Time{}, false
	}
	if sc, ok := jwtClaims(s.sessionTk); ok && sc.TenantID != "" && sc.TenantID != claims.TenantID {
		return "", time.Time{}, false
	}
	exp := time.Unix(int64(*claims.Exp), 0)
	if time.Until(exp) < minValidity {
		return "", time.Time{}, false
	}
	return tok, exp, true
}

// writeCache stores tok for other processes: 0600, through a temporary
// file and a rename, so a reader never sees half a token. A directory
// that cannot be written only costs the cache.
func (s *session) writeCache(tok string) {
	f, err := os.CreateTemp(filepath.Dir(s.cache), ".token.cache-*")
	if err != nil {
		return
	}
	defer os.Remove(f.Name()) // a no-op after the rename
	if f.Chmod(0o600) != nil {
		f.Close()
		return
	}
	_, werr := f.WriteString(tok)
	if cerr := f.Close(); werr != nil || cerr != nil {
		return
	}
	_ = os.Rename(f.Name(), s.cache)
}
