package nsdriver

import (
	"encoding/base64"
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
	t.Setenv("NSC_TOKEN_FILE", envFile)

	steps := []struct {
		token, file string
		want        string
		unset       string // variable to clear after this step
	}{
		{"explicit", explicitFile, "explicit", ""},
		{"", explicitFile, "from-explicit-file", "NAMESPACE_TOKEN"},
		{"", "", "from-nsc-token", "NSC_TOKEN"},
		{"", "", "from-nsc-token-file", "NSC_TOKEN_FILE"},
		{"", "", "from-login", "login"},
		{"", "", "from-workload", ""},
	}
	t.Setenv("NAMESPACE_TOKEN", "from-namespace-token")
	if got, err := ResolveToken("", ""); err != nil || got.Token != "from-namespace-token" {
		t.Fatalf("NAMESPACE_TOKEN: %v %v", got, err)
	}
	for _, s := range steps {
		got, err := ResolveToken(s.token, s.file)
		if err != nil || got.Token != s.want {
			t.Fatalf("step %q: got %q (%v), want %q", s.want, got.Token, err, s.want)
		}
		if strings.Contains(got.String(), got.Token) {
			t.Fatalf("String() shows the token: %s", got)
		}
		switch s.unset {
		case "login":
			os.Remove(filepath.Join(xdg, "ns", "token.json"))
		case "":
		default:
			t.Setenv(s.unset, "")
		}
	}
	workloadTokenPath = filepath.Join(dir, "absent.json")
	if _, err := ResolveToken("", ""); !errors.Is(err, ErrNoToken) {
		t.Fatalf("empty chain: %v", err)
	}
}

func TestLoginFileUnderHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", home)
	writeTokenFile(t, filepath.Join(home, ".config", "ns", "token.json"), "home-login")
	if got, err := ResolveToken("", ""); err != nil || got.Token != "home-login" {
		t.Fatalf("%v %v", got, err)
	}
}

func TestConfiguredButBrokenSourceIsAnError(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("NSC_TOKEN", "would-be-fallback")
	malformed := filepath.Join(dir, "bad.json")
	os.WriteFile(malformed, []byte("not json"), 0o600)
	empty := filepath.Join(dir, "empty.json")
	os.WriteFile(empty, []byte(`{"bearer_token":""}`), 0o600)
	for name, file := range map[string]string{"missing": filepath.Join(dir, "nope.json"), "malformed": malformed, "empty": empty} {
		if got, err := ResolveToken("", file); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("%s tokenFile: got %v err %v; want an error naming the file", name, got, err)
		}
	}
	t.Setenv("NSC_TOKEN", "")
	t.Setenv("NSC_TOKEN_FILE", malformed)
	if _, err := ResolveToken("", ""); err == nil {
		t.Error("malformed NSC_TOKEN_FILE fell through")
	}
	t.Setenv("NSC_TOKEN_FILE", "")
	xdg := filepath.Join(dir, "xdg")
	t.Setenv("XDG_CONFIG_HOME", xdg)
	os.MkdirAll(filepath.Join(xdg, "ns"), 0o700)
	os.WriteFile(filepath.Join(xdg, "ns", "token.json"), []byte("{"), 0o600)
	if _, err := ResolveToken("", ""); err == nil {
		t.Error("malformed login file fell through")
	}
}

func jwt(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(claims)) + ".sig"
}

func TestExpiredJWT(t *testing.T) {
	expired := jwt(fmt.Sprintf(`{"exp":%d}`, time.Now().Add(-time.Hour).Unix()))
	_, err := ResolveToken(expired, "")
	if !errors.Is(err, ErrTokenExpired) || !strings.Contains(err.Error(), "nsc login") || strings.Contains(err.Error(), expired) {
		t.Fatalf("err %v", err)
	}
	fresh := jwt(fmt.Sprintf(`{"exp":%d}`, time.Now().Add(time.Hour).Unix()))
	if _, err := ResolveToken(fresh, ""); err != nil {
		t.Fatalf("fresh JWT: %v", err)
	}
	for _, opaque := range []string{"nsct_abc", "a.b.c", jwt(`{"sub":"x"}`)} {
		if _, err := ResolveToken(opaque, ""); err != nil {
			t.Fatalf("%q: %v", opaque, err)
		}
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
	if got := ResolveEndpoint("", "eu"); got != "https://env.example" {
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
