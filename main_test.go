package nsdriver

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain isolates every test from the developer's own Namespace login:
// no token variables, no nsc login file, no workload token.
func TestMain(m *testing.M) {
	if os.Getenv(rssLauncherEnv) != "" {
		os.Exit(launchAndReportMaxRSS())
	}
	if recording() {
		liveRecordToken = os.Getenv("NAMESPACE_TOKEN")
	}
	for _, name := range []string{"NAMESPACE_TOKEN", "NSC_TOKEN", "NSC_TOKEN_SPEC", "NSC_TOKEN_SPEC_FILE", "NSC_TOKEN_FILE", "NSC_ENDPOINT", "NSC_IAM_ENDPOINT", "NSC_GLOBAL_ENDPOINT"} {
		os.Unsetenv(name)
	}
	goToolEnv = os.Environ()
	dir, err := os.MkdirTemp("", "nsdriver-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	os.Setenv("HOME", filepath.Join(dir, "home"))
	workloadTokenPath = filepath.Join(dir, "no-workload-token.json")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// goToolEnv is the environment before TestMain moved HOME: the go command
// finds its module cache, build cache and settings through it (offline,
// a fresh HOME has no modules).
var goToolEnv []string

// goTool is the go command with the developer's own caches and settings.
func goTool(args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Env = goToolEnv
	return cmd
}

// helperFailure says how a helper command failed, with its stderr.
func helperFailure(cmd *exec.Cmd, err error) string {
	msg := fmt.Sprintf("%s: %v", strings.Join(cmd.Args, " "), err)
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		msg += "\n" + string(ee.Stderr)
	}
	return msg
}

const testToken = "nsct_TESTTOKEN_do_not_leak_7f3a"

// recorded is one request a fake API server received.
type recorded struct {
	Path   string
	Header http.Header
	Body   []byte
}

// fakeAPI is an httptest server whose handler a test supplies; it records
// every request.
type fakeAPI struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

func newFakeAPI(t *testing.T, handler http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, recorded{Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		handler(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPI) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

func (f *fakeAPI) client(t *testing.T, opts ...ClientOption) *Client {
	t.Helper()
	c, err := NewClient(append([]ClientOption{WithEndpoint(f.URL), WithToken(testToken),
		WithRetryPolicy(RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// envelope frames a stream message.
func envelope(flags byte, payload string) []byte {
	b := make([]byte, 5+len(payload))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	copy(b[5:], payload)
	return b
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeStream(w http.ResponseWriter, frames ...[]byte) {
	w.Header().Set("Content-Type", "application/connect+json")
	w.WriteHeader(http.StatusOK)
	for _, f := range frames {
		_, _ = w.Write(f)
		w.(http.Flusher).Flush()
	}
}

// verifyNoLeaks fails when a goroutine that ignore did not know of is
// still running. Keep-alive connections of the shared transport, the
// emulator's side of them, and the emulator's command processes (which
// end with their instances) are not the driver's.
func verifyNoLeaks(t *testing.T, ignore goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, ignore,
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreAnyFunction("github.com/swamp-club/nsdriver/nsemu.(*Server).run"),
		goleak.IgnoreAnyFunction("github.com/swamp-club/nsdriver/nsemu.(*Server).run.func1"),
		goleak.IgnoreAnyFunction("github.com/swamp-club/nsdriver/nsemu.(*Server).run.func2"),
		goleak.IgnoreAnyFunction("github.com/swamp-club/nsdriver/nsemu.(*Server).run.func3"),
		goleak.IgnoreAnyFunction("os/exec.(*Cmd).Wait"),
	)
}
