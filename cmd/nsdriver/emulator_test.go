package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// startEmulator runs `nsdriver emulator ARGS…` and returns its export
// lines; the emulator stops with the test.
func startEmulator(t *testing.T, n int, args ...string) (*exec.Cmd, []string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"emulator"}, args...)...)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopGracefully(cmd) })
	sc := bufio.NewScanner(stdout)
	var lines []string
	for len(lines) < n && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return cmd, lines
}

// stopGracefully ends a CLI process with SIGTERM, so that it removes its
// temporary files (a SIGKILL would leave them in $TMPDIR), and kills it if
// it has not ended within a minute.
func stopGracefully(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
	}
}

// pasted runs a shell that evaluates the export lines, as a person pasting
// them would, then the CLI.
func pasted(t *testing.T, exports []string, cli string) result {
	t.Helper()
	script := strings.Join(exports, "\n") + "\n" + binary + " " + cli
	return runCmd(t, exec.Command("sh", "-c", script))
}

func TestEmulatorCommand(t *testing.T) {
	cmd, lines := startEmulator(t, 2, "--token", "tok123", "--boot", "10ms")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "export NSC_ENDPOINT=http://127.0.0.1:") || lines[1] != "export NAMESPACE_TOKEN=tok123" {
		t.Fatalf("lines %q", lines)
	}
	// Pasted as printed, the lines point `run` at this emulator, not at a
	// built-in one.
	r := pasted(t, lines, "run -- echo via-emulator")
	if r.code != 0 || r.stdout != "via-emulator\n" || strings.Contains(r.stderr, "not in a VM") || strings.Contains(r.stderr, "built-in emulator") {
		t.Fatalf("%+v", r)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("emulator did not stop cleanly on SIGINT: %v", err)
	}
}

func TestEmulatorRefusesNonLoopbackListen(t *testing.T) {
	r := nsd(t, "", "emulator", "--listen", "0.0.0.0:0")
	if r.code != 2 || !strings.Contains(r.stderr, "is not a loopback address") {
		t.Fatalf("%+v", r)
	}
}

// With --session-token the pasted lines go through the nsc login path: a
// 0600 token.json with the session, exchanged at the emulator's IAM
// endpoint for tenant tokens.
func TestEmulatorSessionToken(t *testing.T) {
	_, lines := startEmulator(t, 3, "--session-token", "sess-abc")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "export NSC_TOKEN_FILE=") || !strings.HasPrefix(lines[2], "export NSC_IAM_ENDPOINT=http://127.0.0.1:") {
		t.Fatalf("lines %q", lines)
	}
	file := strings.Trim(strings.TrimPrefix(lines[1], "export NSC_TOKEN_FILE="), "'")
	info, err := os.Stat(file)
	data, _ := os.ReadFile(file)
	if err != nil || info.Mode().Perm() != 0o600 || !strings.Contains(string(data), `"session_token": "sess-abc"`) {
		t.Fatalf("token file %v %v %s", info, err, data)
	}
	if r := pasted(t, lines, "run --quiet -- echo logged-in"); r.code != 0 || r.stdout != "logged-in\n" {
		t.Fatalf("%+v", r)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(file), "token.cache")); err != nil {
		t.Fatalf("no token.cache beside the token file: %v", err)
	}
}

// The exchanged token is cached for other processes: two CLI runs, one
// exchange.
func TestSessionCacheSharedByTwoProcesses(t *testing.T) {
	emu := startEmu(t, nsemu.Options{SessionToken: "sess-shared"})
	file := filepath.Join(t.TempDir(), "token.json")
	if err := os.WriteFile(file, []byte(`{"session_token":"sess-shared"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	exports := []string{"export NSC_ENDPOINT=" + emu.URL(), "export NSC_TOKEN_FILE=" + file, "export NSC_IAM_ENDPOINT=" + emu.URL()}
	for i := range 2 {
		if r := pasted(t, exports, "run --quiet -- true"); r.code != 0 {
			t.Fatalf("run %d: %+v", i, r)
		}
	}
	if n := emu.Count("IssueTenantTokenFromSession"); n != 1 {
		t.Fatalf("%d exchanges for two processes, want 1", n)
	}
}

// --tls serves HTTPS with HTTP/2; the pasted SSL_CERT_FILE line makes the
// CLI trust it.
func TestEmulatorTLS(t *testing.T) {
	_, lines := startEmulator(t, 3, "--tls")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "export NSC_ENDPOINT=https://127.0.0.1:") || !strings.HasPrefix(lines[1], "export SSL_CERT_FILE=") {
		t.Fatalf("lines %q", lines)
	}
	if r := pasted(t, lines, "run --quiet -- echo over-tls"); r.code != 0 || r.stdout != "over-tls\n" {
		t.Fatalf("%+v", r)
	}
	if r := pasted(t, lines[:1], "run --quiet --token x -- true"); r.code == 0 || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("without the certificate: %+v", r)
	}
}
