package nsdriver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// The shared token.cache, judged by what other processes can observe.

// A new tenant token replaces token.cache through a new file and a rename:
// a reader that has the old file open keeps a whole old token, and the new
// file is 0600 even where the old one was not (an in-place write keeps the
// old file and its mode).
func TestTokenCacheIsReplacedNotRewritten(t *testing.T) {
	env := newSessionEnv(t, nsemu.Options{})
	cache := filepath.Join(filepath.Dir(env.file), "token.cache")
	expired := jwt(map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "tenant_id": nsemu.Tenant})
	if err := os.WriteFile(cache, []byte(expired), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Second) // newer than token.json, so only its expiry makes it stale
	if err := os.Chtimes(cache, later, later); err != nil {
		t.Fatal(err)
	}
	old, err := os.Stat(cache)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.client(t).ListInstances(context.Background(), &ListInstancesRequest{}); err != nil {
		t.Fatal(err)
	}
	now, err := os.Stat(cache)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(old, now) || now.Mode().Perm() != 0o600 {
		t.Fatalf("token.cache was rewritten in place (same file: %v, mode %v); want a new 0600 file renamed over it", os.SameFile(old, now), now.Mode().Perm())
	}
	if data, _ := os.ReadFile(cache); string(data) == expired {
		t.Fatal("token.cache still holds the expired token")
	}
}

// A cached token of another tenant is never sent, even while it is valid:
// the session's own tenant decides, so no compute call is refused.
func TestTokenCacheOfAnotherTenantIsIgnored(t *testing.T) {
	session := "nscs_" + jwt(map[string]any{"tenant_id": nsemu.Tenant})[len("nsct_"):]
	env := newSessionEnv(t, nsemu.Options{SessionToken: session})
	cache := filepath.Join(filepath.Dir(env.file), "token.cache")
	other := jwt(map[string]any{"exp": time.Now().Add(time.Hour).Unix(), "tenant_id": "tenant_someone_else"})
	if err := os.WriteFile(cache, []byte(other), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(cache, later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := env.client(t).ListInstances(context.Background(), &ListInstancesRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, call := range env.emu.Calls() {
		if call.Code == "unauthenticated" {
			t.Fatalf("%s was refused: the other tenant's cached token was sent", call.Method)
		}
	}
	if env.exchanges() != 1 {
		t.Fatalf("%d exchanges; want 1, since the cache belongs to another tenant", env.exchanges())
	}
}

// A call refused as unauthenticated renews its token once and is repeated
// once: a server that refuses every token gets two calls and causes one
// renewal, not a loop.
func TestRefusedCallRenewsOnlyOnce(t *testing.T) {
	env := newSessionEnv(t, nsemu.Options{Faults: []nsemu.Fault{{Method: "ListInstances", Code: 16, Count: -1, Message: "token refused"}}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := env.client(t).ListInstances(ctx, &ListInstancesRequest{})
	if CodeOf(err) != CodeUnauthenticated || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the refusal reported as unauthenticated, got %v", err)
	}
	if calls, exchanges := env.emu.Count("ListInstances"), env.exchanges(); calls != 2 || exchanges != 2 {
		t.Fatalf("%d calls and %d exchanges; want 2 of each (the first try, one renewal, one repeat)", calls, exchanges)
	}
}
