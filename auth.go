package nsdriver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Credentials are live, not a string (design.md decision 16): a
// TokenSource answers "a bearer token for this call". Token files are
// re-read as their token nears expiry, session tokens are exchanged and
// renewed (session.go), and a static token is used until its exp.

// TokenSource supplies the bearer token for each API call. It must be safe
// for concurrent use.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// minValidity is how much life a token must have left to be handed out
// without renewal, as Namespace's SDKs require per call.
const minValidity = 5 * time.Minute

// StaticToken is a TokenSource that always returns the same token. A JWT is
// used until its exp claim passes, then refused with ErrTokenExpired.
type StaticToken string

// Token returns the token, or ErrTokenExpired once its exp has passed.
func (t StaticToken) Token(context.Context) (string, error) {
	if exp, ok := jwtExpiry(string(t)); ok && !time.Now().Before(exp) {
		return "", expiredError(exp, "the token setting or NAMESPACE_TOKEN")
	}
	return string(t), nil
}

// String hides the token so a stray %v cannot print it.
func (t StaticToken) String() string { return "StaticToken(…)" }

// workloadTokenPath is where Namespace puts a token inside its instances.
var workloadTokenPath = "/var/run/nsc/token.json"

// NewTokenSource walks the token chain of docs/config.md; the first source
// that is set wins: token, tokenFile, NAMESPACE_TOKEN, NSC_TOKEN
// (deprecated; see Deprecation), NSC_TOKEN_SPEC / NSC_TOKEN_SPEC_FILE (the
// metadata-service spec nsc reads inside Namespace instances),
// NSC_TOKEN_FILE, the workload file /var/run/nsc/token.json, the `nsc
// login` file <os.UserConfigDir()>/ns/token.json. A configured source that
// cannot be read or is malformed is an error, not a fall-through; an
// expired token is ErrTokenExpired; no source at all is ErrNoToken.
func NewTokenSource(token, tokenFile string) (TokenSource, error) {
	if t := strings.TrimSpace(token); t != "" {
		return checkedStatic(t, "the token setting")
	}
	if tokenFile != "" {
		return newFileSource(tokenFile, "the tokenFile setting")
	}
	if t := strings.TrimSpace(os.Getenv("NAMESPACE_TOKEN")); t != "" {
		return checkedStatic(t, "NAMESPACE_TOKEN")
	}
	if t := strings.TrimSpace(os.Getenv("NSC_TOKEN")); t != "" {
		src, err := checkedStatic(t, "NSC_TOKEN")
		if err != nil {
			return nil, err
		}
		return deprecatedToken{src.(StaticToken)}, nil
	}
	if spec, origin, err := tokenSpec(); err != nil || spec != "" {
		if err != nil {
			return nil, err
		}
		return newSpecSource(spec, origin)
	}
	if f := os.Getenv("NSC_TOKEN_FILE"); f != "" {
		return newFileSource(f, "NSC_TOKEN_FILE")
	}
	// Well-known files count only when they exist.
	for _, f := range []string{workloadTokenPath, loginTokenPath()} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return newFileSource(f, f)
	}
	return nil, ErrNoToken
}

// deprecatedToken is a token from NSC_TOKEN, a name nsdriver invented in
// nsc's namespace: still read, with a notice.
type deprecatedToken struct{ StaticToken }

// Deprecation is a one-line notice when src comes from a deprecated
// setting (NSC_TOKEN), else "". New logs it; the CLI prints it.
func Deprecation(src TokenSource) string {
	if _, ok := src.(deprecatedToken); ok {
		return "NSC_TOKEN is deprecated (the name belongs to nsc); set NAMESPACE_TOKEN instead"
	}
	return ""
}

func checkedStatic(token, origin string) (TokenSource, error) {
	if exp, ok := jwtExpiry(token); ok && !time.Now().Before(exp) {
		return nil, expiredError(exp, origin)
	}
	return StaticToken(token), nil
}

func expiredError(exp time.Time, origin string) error {
	return fmt.Errorf("%w (the token from %s expired %s)", ErrTokenExpired, origin, exp.UTC().Format(time.RFC3339))
}

// loginTokenPath is the file `nsc login` writes: <user config dir>/ns/
// token.json, i.e. $XDG_CONFIG_HOME or ~/.config on Linux, ~/Library/
// Application Support on macOS.
func loginTokenPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "ns", "token.json")
}

// tokenFile is what a token file holds: a bearer token (bearer_token, the
// legacy tenant_token, or raw text), a session token to exchange, or both
// (the bearer is used while valid, then the session).
type tokenFile struct {
	bearer, session string
}

// readTokenFile reads a token file in any of the SDKs' formats.
func readTokenFile(path, origin string) (tokenFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return tokenFile{}, fmt.Errorf("reading the Namespace token file %s (from %s): %w; run `nsc login` or fix the path", path, origin, err)
	}
	text := strings.TrimSpace(string(data))
	if !strings.HasPrefix(text, "{") {
		// What `nsc auth generate-dev-token --output_to` writes.
		if text == "" || strings.ContainsAny(text, " \t\n") {
			return tokenFile{}, fmt.Errorf("the Namespace token file %s (from %s) is neither JSON nor a single token; run `nsc login` to write a new one", path, origin)
		}
		return tokenFile{bearer: text}, nil
	}
	var f struct {
		BearerToken  string `json:"bearer_token"`
		SessionToken string `json:"session_token"`
		TenantToken  string `json:"tenant_token"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return tokenFile{}, fmt.Errorf("the Namespace token file %s (from %s) is not valid JSON (%v); run `nsc login` to write a new one", path, origin, err)
	}
	tf := tokenFile{bearer: strings.TrimSpace(f.BearerToken), session: strings.TrimSpace(f.SessionToken)}
	if tf.bearer == "" {
		tf.bearer = strings.TrimSpace(f.TenantToken)
	}
	if tf.bearer != "" || tf.session != "" {
		return tf, nil
	}
	return tokenFile{}, fmt.Errorf("the Namespace token file %s (from %s) has no bearer_token, session_token or tenant_token; run `nsc login`", path, origin)
}

// fileSource serves the token of a token file: a bearer token, re-read
// when it nears expiry (the workload file is rotated in place), or a
// session exchanged for tenant tokens (session.go). A file with both uses
// the bearer while it has minValidity left, then the session.
type fileSource struct {
	path, origin string

	mu      sync.Mutex
	current string    // the bearer token handed out; "" once only the session serves
	exp     time.Time // its expiry; zero: none known
	session *session  // non-nil when the file holds a session token
	// claims is the token whose claims name the region: the session's, as
	// nsc reads it, else the bearer's (as read at start).
	claims string
}

func newFileSource(path, origin string) (*fileSource, error) {
	f, err := readTokenFile(path, origin)
	if err != nil {
		return nil, err
	}
	src := &fileSource{path: path, origin: origin, current: f.bearer, claims: f.bearer}
	src.exp, _ = jwtExpiry(f.bearer)
	if f.session != "" {
		src.claims = f.session
		src.session, err = newSession(path, f.session)
		return src, err
	}
	if !src.exp.IsZero() && !time.Now().Before(src.exp) {
		return nil, expiredError(src.exp, path)
	}
	return src, nil
}

// String names the file, never the token.
func (s *fileSource) String() string { return "token file " + s.path }

func (s *fileSource) claimToken() string { return s.claims }

// Token returns a token with at least minValidity left when one can be
// had; a bearer token that cannot be replaced is used until its exp.
func (s *fileSource) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	if s.current != "" && (s.exp.IsZero() || time.Until(s.exp) >= minValidity) {
		defer s.mu.Unlock()
		return s.current, nil
	}
	if s.session != nil {
		s.current = "" // from now on the session serves
		s.mu.Unlock()
		return s.session.token(ctx)
	}
	defer s.mu.Unlock()
	// Near expiry: the file may have been rotated in place.
	if f, err := readTokenFile(s.path, s.origin); err == nil && f.bearer != "" && f.bearer != s.current {
		s.current = f.bearer
		s.exp, _ = jwtExpiry(f.bearer)
	}
	if !s.exp.IsZero() && !time.Now().Before(s.exp) {
		return "", expiredError(s.exp, s.path)
	}
	return s.current, nil
}

// renew replaces a token the API refused as unauthenticated: a refused
// bearer gives way to the session, and a session's tenant token is
// exchanged afresh (once for every caller that saw the same refused
// token). It reports whether the call is worth repeating.
func (s *fileSource) renew(ctx context.Context, refused string) bool {
	if s.session == nil {
		return false
	}
	s.mu.Lock()
	if s.current != "" && refused == s.current {
		s.current = ""
		s.mu.Unlock()
		_, err := s.session.token(ctx)
		return err == nil
	}
	s.mu.Unlock()
	return s.session.renew(ctx, refused)
}

// jwtClaims decodes a JWT's payload (a token may carry an nsct_/nscw_
// prefix before it); ok is false for tokens that are not JWTs.
func jwtClaims(token string) (claims struct {
	Exp            *float64 `json:"exp"`
	TenantID       string   `json:"tenant_id"`
	WorkloadRegion string   `json:"workload_region"`
	PrimaryRegion  string   `json:"primary_region"`
}, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return claims, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil || json.Unmarshal(payload, &claims) != nil {
		return claims, false
	}
	return claims, true
}

// jwtExpiry is a JWT's exp; ok is false when there is none.
func jwtExpiry(token string) (time.Time, bool) {
	c, ok := jwtClaims(token)
	if !ok || c.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(int64(*c.Exp), 0), true
}
