package nsdriver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Inside a Namespace instance nsc finds its credentials through a metadata
// spec (NSC_TOKEN_SPEC, or the file NSC_TOKEN_SPEC_FILE names): base64 of
// JSON {version, metadata_url, token_url, inline_token}. An inline token is
// used as it is; version v1 fetches the token from
// <metadata_url>/workload_token (foundation internal/fnapi/tokens.go
// ResolveSpec, internal/providers/nscloud/metadata). nsdriver reads it the
// same way, so that a command a fleet runs in a VM finds its token.

// specFetchTimeout bounds one fetch from the metadata service, as nsc's.
const specFetchTimeout = 5 * time.Second

// tokenSpec returns the spec from NSC_TOKEN_SPEC or NSC_TOKEN_SPEC_FILE,
// and where it came from; "" when neither is set.
func tokenSpec() (spec, origin string, err error) {
	if spec := strings.TrimSpace(os.Getenv("NSC_TOKEN_SPEC")); spec != "" {
		return spec, "NSC_TOKEN_SPEC", nil
	}
	file := os.Getenv("NSC_TOKEN_SPEC_FILE")
	if file == "" {
		return "", "", nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", "", fmt.Errorf("reading the Namespace token spec %s (from NSC_TOKEN_SPEC_FILE): %w", file, err)
	}
	if strings.TrimSpace(string(data)) == "" {
		return "", "", fmt.Errorf("the Namespace token spec %s (from NSC_TOKEN_SPEC_FILE) is empty", file)
	}
	return strings.TrimSpace(string(data)), "NSC_TOKEN_SPEC_FILE " + file, nil
}

// metadataSpec is the decoded spec, with nsc's field names.
type metadataSpec struct {
	Version     string `json:"version"`
	MetadataURL string `json:"metadata_url"`
	TokenURL    string `json:"token_url"`
	InlineToken string `json:"inline_token"`
}

// specSource serves the token a metadata spec names, fetching it again
// when it nears expiry; a fetch that fails while the current token is
// still valid keeps the current one.
type specSource struct {
	origin string
	url    string // <metadata_url>/workload_token

	mu      sync.Mutex
	current string
	exp     time.Time
}

func newSpecSource(spec, origin string) (TokenSource, error) {
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(spec, "="))
	var s metadataSpec
	if err != nil || json.Unmarshal(raw, &s) != nil {
		return nil, fmt.Errorf("the Namespace token spec from %s is not base64 of a JSON spec; unset it, or set NAMESPACE_TOKEN", origin)
	}
	if t := strings.TrimSpace(s.InlineToken); t != "" {
		return checkedStatic(t, origin)
	}
	if s.Version != "v1" {
		return nil, fmt.Errorf("the Namespace token spec from %s has version %q; nsdriver (like nsc) reads only v1", origin, s.Version)
	}
	if s.MetadataURL == "" {
		return nil, fmt.Errorf("the Namespace token spec from %s has no metadata_url", origin)
	}
	return &specSource{origin: origin, url: strings.TrimSuffix(s.MetadataURL, "/") + "/workload_token"}, nil
}

// String names the origin, never the token.
func (s *specSource) String() string { return "token spec from " + s.origin }

func (s *specSource) claimToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == "" {
		_ = s.fetchLocked(context.Background())
	}
	return s.current
}

// Token returns the metadata service's token, fetched when there is none
// with at least minValidity left.
func (s *specSource) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != "" && (s.exp.IsZero() || time.Until(s.exp) >= minValidity) {
		return s.current, nil
	}
	err := s.fetchLocked(ctx)
	switch {
	case s.current != "" && (s.exp.IsZero() || time.Now().Before(s.exp)):
		return s.current, nil // a failed refresh keeps a still-valid token
	case err != nil:
		return "", err
	}
	return "", expiredError(s.exp, s.origin)
}

func (s *specSource) fetchLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, specFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return fmt.Errorf("the Namespace token spec from %s: bad metadata_url: %w", s.origin, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching the Namespace token from the metadata service (spec from %s): %w", s.origin, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("fetching the Namespace token from the metadata service (spec from %s): %w", s.origin, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching the Namespace token from the metadata service (spec from %s): HTTP %s", s.origin, resp.Status)
	}
	tok := strings.TrimSpace(string(body))
	if tok == "" {
		return fmt.Errorf("the metadata service (spec from %s) returned no token", s.origin)
	}
	s.current = tok
	s.exp, _ = jwtExpiry(tok)
	return nil
}
