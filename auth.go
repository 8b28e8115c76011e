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
	"time"
)

// TokenSource supplies the bearer token for each API call.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// StaticToken is a TokenSource that always returns the same token.
type StaticToken string

// Token returns the token.
func (t StaticToken) Token(context.Context) (string, error) { return string(t), nil }

// workloadTokenPath is where Namespace puts a token inside its instances.
var workloadTokenPath = "/var/run/nsc/token.json"

// ResolvedToken is a token and a description of where it came from. The
// description is safe to log; the token is not.
type ResolvedToken struct {
	Token  string
	Source string
}

// String hides the token so a stray %v cannot print it.
func (r ResolvedToken) String() string { return "token from " + r.Source }

// ResolveToken walks the token chain of interfaces.md; the first source that
// is set wins: explicit token, explicit token file, NAMESPACE_TOKEN,
// NSC_TOKEN, NSC_TOKEN_FILE, the `nsc login` file, the in-instance workload
// token. A configured source that cannot be read is an error, not a
// fall-through; a JWT whose exp has passed is ErrTokenExpired.
func ResolveToken(token, tokenFile string) (ResolvedToken, error) {
	resolved, err := findToken(token, tokenFile)
	if err != nil {
		return ResolvedToken{}, err
	}
	if err := checkJWTExpiry(resolved.Token, time.Now()); err != nil {
		return ResolvedToken{}, fmt.Errorf("%s: %w", resolved.Source, err)
	}
	return resolved, nil
}

func findToken(token, tokenFile string) (ResolvedToken, error) {
	if t := strings.TrimSpace(token); t != "" {
		return ResolvedToken{t, "the token setting"}, nil
	}
	if tokenFile != "" {
		return readTokenFile(tokenFile, "the tokenFile setting")
	}
	for _, name := range []string{"NAMESPACE_TOKEN", "NSC_TOKEN"} {
		if t := strings.TrimSpace(os.Getenv(name)); t != "" {
			return ResolvedToken{t, name}, nil
		}
	}
	if f := os.Getenv("NSC_TOKEN_FILE"); f != "" {
		return readTokenFile(f, "NSC_TOKEN_FILE")
	}
	// Well-known files count only when they exist.
	for _, f := range []string{loginTokenPath(), workloadTokenPath} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return readTokenFile(f, f)
	}
	return ResolvedToken{}, ErrNoToken
}

// loginTokenPath is the file `nsc login` writes.
func loginTokenPath() string {
	if dir := os.Getenv("XDG_CONFIG_HOME"); dir != "" {
		return filepath.Join(dir, "ns", "token.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".config", "ns", "token.json")
}

func readTokenFile(path, origin string) (ResolvedToken, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ResolvedToken{}, fmt.Errorf("reading the token file from %s: %w", origin, err)
	}
	var file struct {
		BearerToken string `json:"bearer_token"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return ResolvedToken{}, fmt.Errorf("token file %s (from %s) is not JSON with a bearer_token field: %w", path, origin, errors.Unwrap(err))
	}
	if strings.TrimSpace(file.BearerToken) == "" {
		return ResolvedToken{}, fmt.Errorf("token file %s (from %s) has no bearer_token; run `nsc login`", path, origin)
	}
	return ResolvedToken{strings.TrimSpace(file.BearerToken), "token file " + path}, nil
}

// checkJWTExpiry reports ErrTokenExpired for a JWT whose exp has passed.
// Tokens that are not JWTs are left to the server.
func checkJWTExpiry(token string, now time.Time) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return nil
	}
	expiry := time.Unix(int64(*claims.Exp), 0)
	if now.After(expiry) {
		return fmt.Errorf("%w (expired %s)", ErrTokenExpired, expiry.UTC().Format(time.RFC3339))
	}
	return nil
}

// ResolveEndpoint picks the API base URL: the explicit endpoint, else
// NSC_ENDPOINT, else the region's URL (us when region is empty). An
// endpoint may be a host, host:port or a URL; no scheme means https.
func ResolveEndpoint(endpoint, region string) string {
	if endpoint != "" {
		return normalizeEndpoint(endpoint)
	}
	if env := os.Getenv("NSC_ENDPOINT"); env != "" {
		return normalizeEndpoint(env)
	}
	if region == "" {
		region = "us"
	}
	return "https://" + region + ".compute.namespaceapis.com"
}
