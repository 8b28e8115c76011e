package nsdriver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// specOf encodes a metadata spec as nsc reads it: base64 (no padding) of
// its JSON.
func specOf(fields map[string]string) string {
	raw, _ := json.Marshal(fields)
	return base64.RawStdEncoding.EncodeToString(raw)
}

// NSC_TOKEN_SPEC_FILE naming a v1 spec: the token comes from a stand-in
// metadata service at <metadata_url>/workload_token, and is fetched again
// as it nears expiry.
func TestTokenSpecFetchesFromTheMetadataService(t *testing.T) {
	var served atomic.Int32
	tokens := []string{
		jwt(map[string]any{"exp": time.Now().Add(time.Minute).Unix(), "n": 1}), // inside the renewal window
		jwt(map[string]any{"exp": time.Now().Add(time.Hour).Unix(), "n": 2}),
	}
	md := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/md/workload_token" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(tokens[min(int(served.Add(1))-1, 1)] + "\n"))
	})
	specFile := filepath.Join(t.TempDir(), "spec")
	if err := os.WriteFile(specFile, []byte(specOf(map[string]string{"version": "v1", "metadata_url": md.URL + "/md"})), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NSC_TOKEN_SPEC_FILE", specFile)
	src, err := NewTokenSource("", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := tokenOf(t, src); got != tokens[0] {
		t.Fatalf("first token %q; want the metadata service's", got)
	}
	if got := tokenOf(t, src); got != tokens[1] {
		t.Fatalf("a token a minute from expiry was not fetched again: got %q", got)
	}
	if got := tokenOf(t, src); got != tokens[1] || served.Load() != 2 {
		t.Fatalf("a valid token was fetched again (%d fetches)", served.Load())
	}
	// The spec's token works against the API: nsemu's, served by the stand-in.
	emu := startTestEmu(t, nsemu.Options{})
	tokens[0], tokens[1] = emu.Token(), emu.Token()
	served.Store(0)
	src, err = NewTokenSource("", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(WithEndpoint(emu.URL()), WithTokenSource(src))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListInstances(context.Background(), &ListInstancesRequest{}); err != nil {
		t.Fatalf("ListInstances with the spec's token: %v", err)
	}
}

// A spec that is set but unusable is an error naming it, not a fall-through.
func TestBadTokenSpecIsAnError(t *testing.T) {
	for spec, want := range map[string]string{
		"not base64 !": "not base64 of a JSON spec",
		specOf(map[string]string{"version": "v2"}):           `version "v2"`,
		specOf(map[string]string{"version": "v1"}):           "no metadata_url",
		specOf(map[string]string{"inline_token": "  tok  "}): "",
	} {
		t.Setenv("NSC_TOKEN_SPEC", spec)
		src, err := NewTokenSource("", "")
		if want == "" {
			if err != nil || tokenOf(t, src) != "tok" {
				t.Errorf("inline token: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "NSC_TOKEN_SPEC") {
			t.Errorf("spec %q: want an error saying %q and naming NSC_TOKEN_SPEC, got %v", spec, want, err)
		}
	}
	t.Setenv("NSC_TOKEN_SPEC", "")
	t.Setenv("NSC_TOKEN_SPEC_FILE", filepath.Join(t.TempDir(), "absent"))
	if _, err := NewTokenSource("", ""); err == nil || errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "NSC_TOKEN_SPEC_FILE") {
		t.Errorf("missing spec file: want an error naming NSC_TOKEN_SPEC_FILE, got %v", err)
	}
}

// NSC_TOKEN is still read, with a one-line notice; NAMESPACE_TOKEN has none.
func TestNSCTokenIsDeprecated(t *testing.T) {
	t.Setenv("NSC_TOKEN", "from-nsc-token")
	src, err := NewTokenSource("", "")
	if err != nil || tokenOf(t, src) != "from-nsc-token" {
		t.Fatalf("NSC_TOKEN not read: %v", err)
	}
	if msg := Deprecation(src); !strings.Contains(msg, "NSC_TOKEN is deprecated") || !strings.Contains(msg, "NAMESPACE_TOKEN") || strings.Contains(msg, "\n") {
		t.Fatalf("notice %q: want one line naming NAMESPACE_TOKEN", msg)
	}
	t.Setenv("NAMESPACE_TOKEN", "from-namespace-token")
	if src := must(NewTokenSource("", "")); Deprecation(src) != "" {
		t.Fatalf("NAMESPACE_TOKEN got a notice: %q", Deprecation(src))
	}
}

// A token file with both a bearer and a session token uses the bearer
// while it is valid, then exchanges the session: an expired bearer is no
// failure, and neither is one the API refuses.
func TestBearerThenSessionInOneFile(t *testing.T) {
	env := newSessionEnv(t, nsemu.Options{})
	for name, bearer := range map[string]string{
		"expired":  jwt(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}),
		"expiring": jwt(map[string]any{"exp": time.Now().Add(time.Minute).Unix()}),
		"refused":  jwt(map[string]any{"exp": time.Now().Add(time.Hour).Unix()}),
	} {
		body, _ := json.Marshal(map[string]string{"bearer_token": bearer, "session_token": testSession})
		if err := os.WriteFile(env.file, body, 0o600); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(filepath.Join(filepath.Dir(env.file), "token.cache"))
		before := env.exchanges()
		if _, err := env.client(t).ListInstances(context.Background(), &ListInstancesRequest{}); err != nil {
			t.Fatalf("%s bearer beside a session: %v", name, err)
		}
		if env.exchanges() != before+1 {
			t.Fatalf("%s bearer: %d exchanges; want the session exchanged once", name, env.exchanges()-before)
		}
	}
	// A valid bearer is used as it is: nsemu refuses it unless it is its own.
	body, _ := json.Marshal(map[string]string{"bearer_token": env.emu.Token(), "session_token": testSession})
	if err := os.WriteFile(env.file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	before := env.exchanges()
	if _, err := env.client(t).ListInstances(context.Background(), &ListInstancesRequest{}); err != nil || env.exchanges() != before {
		t.Fatalf("valid bearer: %v, %d exchanges; want it used without an exchange", err, env.exchanges()-before)
	}
}
