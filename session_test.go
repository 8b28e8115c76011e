package nsdriver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

const testSession = "nscs_SESSION_never_sent_to_compute_2b7e"

// sessionEnv is an emulator serving the session exchange, and an nsc
// login file holding its session token.
type sessionEnv struct {
	emu  *nsemu.Server
	file string
}

func newSessionEnv(t *testing.T, opts nsemu.Options) *sessionEnv {
	t.Helper()
	if opts.SessionToken == "" {
		opts.SessionToken = testSession
	}
	emu := startTestEmu(t, opts)
	t.Setenv("NSC_IAM_ENDPOINT", emu.URL())
	file := filepath.Join(t.TempDir(), "ns", "token.json")
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(`{"session_token":"`+opts.SessionToken+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return &sessionEnv{emu: emu, file: file}
}

func (e *sessionEnv) client(t *testing.T) *Client {
	t.Helper()
	src, err := NewTokenSource("", e.file)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(WithEndpoint(e.emu.URL()), WithTokenSource(src))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *sessionEnv) exchanges() int { return e.emu.Count("IssueTenantTokenFromSession") }

// The session token buys a tenant token; the compute API only ever sees
// the latter. The exchange is cached beside the token file (0600) and a
// second process reuses it.
func TestSessionTokenIsExchangedAndCached(t *testing.T) {
	env := newSessionEnv(t, nsemu.Options{})
	if _, err := env.client(t).ListInstances(context.Background(), &ListInstancesRequest{}); err != nil {
		t.Fatal(err)
	}
	if env.exchanges() != 1 {
		t.Fatalf("%d exchanges", env.exchanges())
	}
	cache := filepath.Join(filepath.Dir(env.file), "token.cache")
	info, err := os.Stat(cache)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("cache %v %v", info, err)
	}
	cached, _ := os.ReadFile(cache)
	if claims, ok := jwtClaims(string(cached)); !ok || claims.TenantID != nsemu.Tenant {
		t.Fatalf("cache holds %q", cached)
	}
	// A second "process": a new source, same file.
	if _, err := env.client(t).ListInstances(context.Background(), &ListInstancesRequest{}); err != nil {
		t.Fatal(err)
	}
	if env.exchanges() != 1 {
		t.Fatalf("the cache was not reused: %d exchanges", env.exchanges())
	}
	// A new `nsc login` (token.json newer than the cache) invalidates it.
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(env.file, later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := env.client(t).ListInstances(context.Background(), &ListInstancesRequest{}); err != nil || env.exchanges() != 2 {
		t.Fatalf("after a new login: %v, %d exchanges", err, env.exchanges())
	}
}

// A cache that cannot be written (here token.cache is a directory, which
// fails for root too, unlike a read-only directory) only costs the cache.
func TestSessionWithUnwritableCache(t *testing.T) {
	env := newSessionEnv(t, nsemu.Options{})
	if err := os.Mkdir(filepath.Join(filepath.Dir(env.file), "token.cache"), 0o700); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := env.client(t).ListInstances(context.Background(), &ListInstancesRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if env.exchanges() != 2 {
		t.Fatalf("%d exchanges", env.exchanges())
	}
}

// A token with less than minValidity left is renewed before use; a
// hundred concurrent callers cause one exchange. nsemu's clock issues the
// first token 70 s in the past (so it already needs renewal), the later
// ones from now (a 60 s margin, however slow the machine), with no sleep.
func TestSessionRenewedBeforeExpiryOnceForManyCallers(t *testing.T) {
	var shift atomic.Int64
	shift.Store(int64(-70 * time.Second))
	env := newSessionEnv(t, nsemu.Options{TenantTokenLife: minValidity + time.Minute,
		Clock: func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }})
	c := env.client(t)
	ctx := context.Background()
	if _, err := c.ListInstances(ctx, &ListInstancesRequest{}); err != nil {
		t.Fatal(err)
	}
	shift.Store(0) // the first token now has 4 min 50 s left: below minValidity
	concurrently(t, 100, func() error {
		_, err := c.ListInstances(ctx, &ListInstancesRequest{})
		return err
	})
	if env.exchanges() != 2 {
		t.Fatalf("%d exchanges for 100 callers, want 2 in all", env.exchanges())
	}
}

// An unauthenticated answer renews the token once — one exchange for all
// the calls that saw it — and repeats each call once.
func TestSessionRenewedAfterUnauthenticated(t *testing.T) {
	env := newSessionEnv(t, nsemu.Options{})
	c := env.client(t)
	ctx := context.Background()
	if _, err := c.ListInstances(ctx, &ListInstancesRequest{}); err != nil {
		t.Fatal(err)
	}
	env.emu.RevokeTenantTokens()
	concurrently(t, 50, func() error {
		// CreateInstance too: a refused call ran nothing.
		_, err := c.CreateInstance(ctx, &CreateInstanceRequest{Shape: &InstanceShape{VirtualCPU: 2, MemoryMegabytes: 4096, MachineArch: "amd64", OS: "linux"},
			Containers: []ContainerRequest{{Name: "c", KnownImageID: "builtin:base", Args: []string{"sleep", "infinity"}}},
			Deadline:   NewTimestamp(time.Now().Add(time.Minute))})
		return err
	})
	refused := 0
	for _, call := range env.emu.Calls() {
		if call.Method == "CreateInstance" && call.Code == "unauthenticated" {
			refused++
		}
	}
	if env.exchanges() != 2 || refused == 0 || env.emu.Count("CreateInstance") != 50+refused {
		t.Fatalf("%d exchanges, %d creates of which %d refused; want 2 exchanges and each refused create repeated once",
			env.exchanges(), env.emu.Count("CreateInstance"), refused)
	}
	for _, id := range env.emu.LiveInstances() {
		_ = c.DestroyInstance(ctx, &DestroyInstanceRequest{InstanceID: id})
	}
}

// If the exchange fails while the current token is still valid, the
// current one is used: here it has 2 minutes left, inside the renewal
// window, so every call tries to renew and fails.
func TestSessionKeepsValidTokenWhenExchangeFails(t *testing.T) {
	env := newSessionEnv(t, nsemu.Options{TenantTokenLife: 2 * time.Minute})
	c := env.client(t)
	ctx := context.Background()
	if _, err := c.ListInstances(ctx, &ListInstancesRequest{}); err != nil {
		t.Fatal(err)
	}
	env.emu.InjectFault(nsemu.Fault{Method: "IssueTenantTokenFromSession", Code: 13, Count: -1})
	if _, err := c.ListInstances(ctx, &ListInstancesRequest{}); err != nil {
		t.Fatalf("a still-valid token was not used: %v", err)
	}
	if env.exchanges() != 2 {
		t.Fatalf("%d exchanges; the second call should have tried to renew", env.exchanges())
	}
}

// Once the token has expired, a failing exchange is reported.
func TestSessionReportsFailedExchangeAfterExpiry(t *testing.T) {
	env := newSessionEnv(t, nsemu.Options{TenantTokenLife: time.Second})
	c := env.client(t)
	ctx := context.Background()
	if _, err := c.ListInstances(ctx, &ListInstancesRequest{}); err != nil {
		t.Fatal(err)
	}
	env.emu.InjectFault(nsemu.Fault{Method: "IssueTenantTokenFromSession", Code: 13, Count: -1})
	time.Sleep(1100 * time.Millisecond)
	_, err := c.ListInstances(ctx, &ListInstancesRequest{})
	if err == nil || !strings.Contains(err.Error(), "exchanging the nsc login session") {
		t.Fatalf("after expiry: %v", err)
	}
}

// A session token refused by the IAM endpoint says to log in again; the
// session token itself never reaches the compute API.
func TestRevokedSessionSaysLogIn(t *testing.T) {
	env := newSessionEnv(t, nsemu.Options{})
	if err := os.WriteFile(env.file, []byte(`{"session_token":"revoked"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := env.client(t).ListInstances(context.Background(), &ListInstancesRequest{})
	if err == nil || !strings.Contains(err.Error(), "run `nsc login` again") || !strings.Contains(err.Error(), env.file) {
		t.Fatalf("err %v", err)
	}
	for _, call := range env.emu.Calls() {
		if call.Method == "ListInstances" {
			t.Fatal("the compute API was called without a tenant token")
		}
	}
}

// concurrently runs call n times at once and fails on any error.
func concurrently(t *testing.T, n int, call func() error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() { errs <- call() })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
