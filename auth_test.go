package nsdriver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeTokenFile(t *testing.T, path, token string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(fmt.Sprintf(`{"bearer_token":%q}`, token)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// jwt builds an unsigned JWT-shaped token with the given claims.
func jwt(claims map[string]any) string {
	body, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return "nsct_" + enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(body) + ".sig"
}

func tokenOf(t *testing.T, src TokenSource) string {
	t.Helper()
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenChainOrder(t *testing.T) {
	dir := t.TempDir()
	xdg := filepath.Join(dir, "xdg")
	t.Setenv("XDG_CONFIG_HOME", xdg)
	explicitFile := writeTokenFile(t, filepath.Join(dir, "explicit.json"), "from-explicit-file")
	envFile := writeTokenFile(t, filepath.Join(dir, "env.json"), "from-nsc-token-file")
	writeTokenFile(t, filepath.Join(xdg, "ns", "token.json"), "from-login")
	workload := writeTokenFile(t, filepath.Join(dir, "workload.json"), "from-workload")
	old := workloadTokenPath
	workloadTokenPath = workload
	t.Cleanup(func() { workloadTokenPath = old })
	t.Setenv("NAMESPACE_TOKEN", "from-namespace-token")
	t.Setenv("NSC_TOKEN", "from-nsc-token")
	t.Setenv("NSC_TOKEN_SPEC", specOf(map[string]string{"inline_token": "from-spec"}))
	specFile := filepath.Join(dir, "spec")
	if err := os.WriteFile(specFile, []byte(specOf(map[string]string{"inline_token": "from-spec-file"})), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NSC_TOKEN_SPEC_FILE", specFile)
	t.Setenv("NSC_TOKEN_FILE", envFile)

	steps := []struct {
		token, file string
		want        string
		unset       string // what to take away after this step
	}{
		{"explicit", explicitFile, "explicit", ""},
		{"", explicitFile, "from-explicit-file", "NAMESPACE_TOKEN"},
		{"", "", "from-nsc-token", "NSC_TOKEN"},
		{"", "", "from-spec", "NSC_TOKEN_SPEC"},
		{"", "", "from-spec-file", "NSC_TOKEN_SPEC_FILE"},
		{"", "", "from-nsc-token-file", "NSC_TOKEN_FILE"},
		{"", "", "from-workload", "workload"},
		{"", "", "from-login", ""},
	}
	if got := tokenOf(t, must(NewTokenSource("", ""))); got != "from-namespace-token" {
		t.Fatalf("first: %q", got)
	}
	for _, s := range steps {
		if got := tokenOf(t, must(NewTokenSource(s.token, s.file))); got != s.want {
			t.Fatalf("token %q file %q: got %q, want %q", s.token, s.file, got, s.want)
		}
		switch s.unset {
		case "workload":
			workloadTokenPath = filepath.Join(dir, "absent.json")
		case "":
		default:
			t.Setenv(s.unset, "")
		}
	}
	os.RemoveAll(xdg)
	if _, err := NewTokenSource("", ""); !errors.Is(err, ErrNoToken) {
		t.Fatalf("no source: %v", err)
	}
}

func must(src TokenSource, err error) TokenSource {
	if err != nil {
		panic(err)
	}
	return src
}

// The nsc login file lives under os.UserConfigDir(): $XDG_CONFIG_HOME, or
// ~/.config when it is unset (macOS: ~/Library/Application Support).
func TestLoginFileLocation(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	dir, err := os.UserConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	writeTokenFile(t, filepath.Join(dir, "ns", "token.json"), "home-login")
	if got := tokenOf(t, must(NewTokenSource("", ""))); got != "home-login" {
		t.Fatalf("got %q", got)
	}
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	writeTokenFile(t, filepath.Join(xdg, "ns", "token.json"), "xdg-login")
	if got := tokenOf(t, must(NewTokenSource("", ""))); got != "xdg-login" {
		t.Fatalf("got %q", got)
	}
}

// Every format Namespace's SDKs and nsc write; a malformed file is an
// error that names the file and says what to do.
func TestTokenFileFormats(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, content, want, errWant string
	}{
		{"bearer", `{"bearer_token":"b1"}`, "b1", ""},
		{"legacy tenant token", `{"tenant_token":"t1"}`, "t1", ""},
		{"raw text", "  raw-token-1\n", "raw-token-1", ""},
		{"bearer wins over session", `{"bearer_token":"b2","session_token":"s"}`, "b2", ""},
		{"malformed JSON", `{"bearer_token":`, "", "is not valid JSON"},
		{"no known field", `{"token":"x"}`, "", "has no bearer_token, session_token or tenant_token; run `nsc login`"},
		{"empty", ``, "", "is neither JSON nor a single token"},
		{"prose", "not a token at all", "", "is neither JSON nor a single token"},
	}
	for _, tc := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".json")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		src, err := NewTokenSource("", path)
		if tc.errWant != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errWant) || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "%!") {
				t.Errorf("%s: err %v", tc.name, err)
			}
			continue
		}
		if err != nil || tokenOf(t, src) != tc.want {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := NewTokenSource("", filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "nsc login") {
		t.Errorf("missing file: %v", err)
	}
}

// A static token is used until its exp, not refused minValidity early; an
// expired one says to run nsc login.
func TestStaticTokenUsedUntilExp(t *testing.T) {
	soon := jwt(map[string]any{"exp": time.Now().Add(time.Minute).Unix()})
	if got := tokenOf(t, must(NewTokenSource(soon, ""))); got != soon {
		t.Fatal("a token with a minute left was refused")
	}
	expired := jwt(map[string]any{"exp": time.Now().Add(-time.Minute).Unix()})
	if _, err := NewTokenSource(expired, ""); !errors.Is(err, ErrTokenExpired) || !strings.Contains(err.Error(), "nsc login") {
		t.Fatalf("expired: %v", err)
	}
	if _, err := StaticToken(expired).Token(context.Background()); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired static: %v", err)
	}
	if got := fmt.Sprint(StaticToken("secret-value")); strings.Contains(got, "secret-value") {
		t.Fatalf("StaticToken prints its value: %s", got)
	}
}

// A token file is re-read when its token nears expiry: the workload file
// is rotated in place.
func TestTokenFileReReadNearExpiry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.json")
	first := jwt(map[string]any{"exp": time.Now().Add(2 * time.Minute).Unix()})
	writeTokenFile(t, path, first)
	src := must(NewTokenSource("", path))
	if tokenOf(t, src) != first {
		t.Fatal("first token")
	}
	rotated := jwt(map[string]any{"exp": time.Now().Add(time.Hour).Unix()})
	writeTokenFile(t, path, rotated)
	if tokenOf(t, src) != rotated {
		t.Fatal("the rotated token was not picked up")
	}
	far := jwt(map[string]any{"exp": time.Now().Add(2 * time.Hour).Unix()})
	writeTokenFile(t, path, far)
	if tokenOf(t, src) != rotated {
		t.Fatal("a token with plenty of life left was re-read anyway")
	}
}

func TestResolveEndpoint(t *testing.T) {
	if got := ResolveEndpoint("", ""); got != "https://us.compute.namespaceapis.com" {
		t.Error(got)
	}
	if got := ResolveEndpoint("", "eu"); got != "https://eu.compute.namespaceapis.com" {
		t.Error(got)
	}
	t.Setenv("NSC_ENDPOINT", "https://env.example/")
	if got := ResolveEndpoint("", ""); got != "https://env.example" {
		t.Error(got)
	}
	// An explicitly set region wins over NSC_ENDPOINT, as nsc's --region.
	if got := ResolveEndpoint("", "eu"); got != "https://eu.compute.namespaceapis.com" {
		t.Error(got)
	}
	if got := ResolveEndpoint("https://flag.example", "eu"); got != "https://flag.example" {
		t.Error(got)
	}
}

func TestNewClientWithoutTokenFails(t *testing.T) {
	if _, err := NewClient(WithEndpoint("http://127.0.0.1:1")); !errors.Is(err, ErrNoToken) {
		t.Fatalf("err %v", err)
	}
}
