package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver"
	"github.com/swamp-club/nsdriver/nsemu"
)

func TestRunStdin(t *testing.T) {
	r := nsd(t, "1\n2\n3\n4\n5\n", "run", "-i", "--quiet", "--", "wc -l")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "5" {
		t.Fatalf("-i: %+v", r)
	}
	r = nsd(t, "ignored\n", "run", "--quiet", "--", "cat; echo done")
	if r.code != 0 || r.stdout != "done\n" || strings.Count(r.stderr, "stdin is not sent to the command; pass -i") != 1 {
		t.Fatalf("without -i: %+v", r)
	}
	big := filepath.Join(t.TempDir(), "big")
	f, _ := os.Create(big)
	_ = f.Truncate(nsdriver.MaxStdinBytes + 1)
	f.Close()
	cmd := exec.Command(binary, "run", "-i", "--", "wc -c")
	cmd.Stdin, _ = os.Open(big)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "over the 16 MiB cap") || strings.Contains(string(out), "creating") {
		t.Fatalf("oversized file: %v %s", err, out)
	}
}

// /dev/null is a character device but no terminal: -i takes it as empty
// input.
func TestRunStdinFromDevNull(t *testing.T) {
	cmd := exec.Command(binary, "run", "-i", "--quiet", "--", "wc -c")
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	cmd.Stdin = devNull
	r := runCmd(t, cmd)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "0" {
		t.Fatalf("run -i < /dev/null: want exit 0 and 0 bytes read, got exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// A pipe that never closes holds off neither --timeout nor SIGINT nor
// SIGTERM, and the VM is destroyed each time.
func TestRunStdinPipeThatNeverCloses(t *testing.T) {
	emu := startEmu(t, nsemu.Options{})
	for _, tc := range []struct {
		name     string
		timeout  string
		signal   os.Signal
		wantCode int
		wantText string
	}{
		{"timeout", "2s", nil, 124, "timed out after 2000ms"},
		{"SIGINT", "10m", os.Interrupt, 130, "interrupted"},
		{"SIGTERM", "10m", syscall.SIGTERM, 130, "interrupted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pw.Close() // held open for the whole run: the pipe never ends
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, "run", "-i", "--endpoint", emu.URL(), "--token", emu.Token(), "--timeout", tc.timeout, "--", "cat")
			cmd.Stdin = pr
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if tc.signal != nil {
				waitForLive(ctx, emu)
				_ = cmd.Process.Signal(tc.signal)
			}
			_ = cmd.Wait()
			r := result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
			pr.Close()
			if ctx.Err() != nil {
				t.Fatalf("still running after 2 minutes with stdin open; want exit %d; stderr:\n%s", tc.wantCode, r.stderr)
			}
			if r.code != tc.wantCode || !strings.Contains(r.stderr, tc.wantText) || !strings.Contains(r.stderr, "destroyed") {
				t.Fatalf("want exit %d, %q and the VM destroyed; got exit %d, stderr:\n%s", tc.wantCode, tc.wantText, r.code, r.stderr)
			}
			if live := emu.LiveInstances(); len(live) != 0 {
				t.Fatalf("instances left alive: %v", live)
			}
		})
	}
}

// waitForLive returns once emu has a live instance, or ctx ends.
func waitForLive(ctx context.Context, emu *nsemu.Server) {
	for len(emu.LiveInstances()) == 0 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}
