//go:build integration

package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver"
)

// Assumption: the session exchange works as Namespace's SDKs do it. The
// user's `nsc login` file (a session token) is copied to a temp dir; two
// CLI processes run through it, and the second reuses the first's
// token.cache. NAMESPACE_TOKEN would hide the login file, so this test has
// its own gate:
//
//	nsc login && NSDRIVER_LIVE_LOGIN=1 go test -tags integration -run TestLiveLoginFile -v ./integration/
func TestLiveLoginFile(t *testing.T) {
	if os.Getenv("NSDRIVER_LIVE_LOGIN") != "1" {
		t.Skip("live login test: run `nsc login`, then set NSDRIVER_LIVE_LOGIN=1 (NAMESPACE_TOKEN must be unset)")
	}
	t.Setenv("NAMESPACE_TOKEN", "")
	t.Setenv("NSC_TOKEN", "")
	dir, err := os.UserConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	login, err := os.ReadFile(filepath.Join(dir, "ns", "token.json"))
	if err != nil {
		t.Fatalf("no nsc login file: %v", err)
	}
	if !strings.Contains(string(login), "session_token") {
		t.Skip("the nsc login file holds no session token; this test is for the session path")
	}
	tmp := t.TempDir()
	file := filepath.Join(tmp, "token.json")
	if err := os.WriteFile(file, login, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, "nsdriver")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/nsdriver").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	run := func() {
		cmd := exec.Command(bin, "run", "--quiet", "--label", runLabel+"=login-"+time.Now().Format("150405"), "--", "echo ok")
		cmd.Env = append(os.Environ(), "NSC_TOKEN_FILE="+file)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ok") {
			t.Fatalf("run: %v\n%s", err, out)
		}
	}
	run()
	cache := filepath.Join(tmp, "token.cache")
	first, err := os.Stat(cache)
	if err != nil || first.Mode().Perm() != 0o600 {
		t.Fatalf("token.cache after the first run: %v %v", first, err)
	}
	run()
	second, err := os.Stat(cache)
	if err != nil || !second.ModTime().Equal(first.ModTime()) {
		t.Fatalf("the second process did not reuse the cache (rewritten at %v)", second.ModTime())
	}
}

// Assumption: entrypoint [sleep infinity] keeps an arbitrary image's
// container up. curlimages/curl's ENTRYPOINT runs curl with the args, which
// would exit at once without the override.
func TestImageRefWithEntrypointStaysUp(t *testing.T) {
	cfg := liveConfig(t)
	cfg.Image = "docker.io/curlimages/curl:8.10.1"
	res := execute(t, cfg, command("sleep 5; echo still-up"))
	if res.Status != nsdriver.ResultSuccess || strings.TrimSpace(string(res.Outputs[0].Content)) != "still-up" {
		t.Fatalf("%+v", res)
	}
}

// Assumption: a failed boot's DescribeInstance carries shutdownReasons that
// say why.
func TestBadImageReportsShutdownReason(t *testing.T) {
	cfg := liveConfig(t)
	cfg.Image = "docker.io/library/nsdriver-this-image-does-not-exist:0"
	res := execute(t, cfg, command("true"))
	var bootErr *nsdriver.BootError
	if res.Status != nsdriver.ResultError || !errors.As(res.Err, &bootErr) || len(bootErr.Reasons) == 0 || bootErr.Reasons[0].ErrorMessage == "" {
		t.Fatalf("want a boot error with a reason: %+v (%v)", res, res.Err)
	}
	t.Logf("Namespace says: %s", res.Error)
}
