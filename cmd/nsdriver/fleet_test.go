package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// standInSwamp puts a `swamp` on a PATH for the emulator's images: it
// prints its arguments and its SWAMP_* variables' names, sleeps, exits.
func standInSwamp(t *testing.T, sleep string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"swamp $*\"\nenv | cut -d= -f1 | grep SWAMP_ | sort\necho started >&2\nsleep " + sleep + "\n"
	if err := os.WriteFile(filepath.Join(dir, "swamp"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir + string(os.PathListSeparator) + os.Getenv("PATH")
}

const cliFleetSecret = "enroll-token.value-never-shown-4e1f"

func TestFleetCommand(t *testing.T) {
	emu := startEmu(t, nsemu.Options{DefaultPath: standInSwamp(t, "0.1")})
	cmd := exec.Command(binary, "fleet", "--endpoint", emu.URL(), "--token", emu.Token(), "--size", "2", "--total", "5",
		"--env-from-host", "SWAMP_WORKER_TOKEN", "--env", "SWAMP_ORCHESTRATOR_URL=wss://orch:4000",
		"--", "swamp", "worker", "connect", "--max-dispatches", "1", "--idle-timeout", "5m")
	cmd.Env = append(os.Environ(), "SWAMP_WORKER_TOKEN="+cliFleetSecret)
	r := runCmd(t, cmd)
	if r.code != 0 || strings.Count(r.stdout, "] swamp worker connect --max-dispatches 1 --idle-timeout 5m") != 5 ||
		strings.Count(r.stdout, "] SWAMP_WORKER_TOKEN") != 5 || strings.Count(r.stderr, "the command exited 0") != 5 {
		t.Fatalf("%+v", r)
	}
	if len(emu.Instances()) != 5 || len(emu.LiveInstances()) != 0 {
		t.Fatalf("%d VMs, live %v", len(emu.Instances()), emu.LiveInstances())
	}
	for _, where := range []string{r.stdout, r.stderr} {
		if strings.Contains(where, cliFleetSecret) {
			t.Fatal("the secret reached the CLI's output")
		}
	}
	for _, inst := range emu.Instances() {
		if strings.Contains(inst.Spec, cliFleetSecret) || strings.Contains(fmt.Sprint(inst.Labels), cliFleetSecret) {
			t.Fatal("the secret is in an instance's stored spec or labels")
		}
	}
	for _, c := range emu.Commands() {
		if strings.Contains(strings.Join(c.Argv, " "), cliFleetSecret) {
			t.Fatalf("the secret is in argv %q", c.Argv)
		}
	}
	if r := nsd(t, "", "fleet", "--emulator", "--size", "1", "--env-from-host", "NSDRIVER_UNSET_VARIABLE", "--", "true"); r.code != 2 ||
		!strings.Contains(r.stderr, "NSDRIVER_UNSET_VARIABLE is not set") {
		t.Fatalf("unset variable: %+v", r)
	}
}

// SIGTERM mid-run stops launching, destroys every VM and exits 130; cleanup
// leaves fleet VMs alone unless --include-fleet.
func TestFleetSIGTERMAndCleanup(t *testing.T) {
	emu := startEmu(t, nsemu.Options{DefaultPath: standInSwamp(t, "30")})
	flags := []string{"--endpoint", emu.URL(), "--token", emu.Token()}
	cmd := exec.Command(binary, append(append([]string{"fleet"}, flags...), "--size", "2", "--", "swamp", "worker", "connect")...)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for strings.Count(stderr.String(), "ready after") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("two VMs never ran: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Cleanup now: the busy fleet VMs are left alone by default. What
	// cleanup did is judged by the calls it made, not by a live count the
	// fleet would refill.
	fleetVMs := emu.LiveInstances()
	destroysBefore := emu.Count("DestroyInstance")
	r := nsd(t, "", append([]string{"cleanup", "--older-than", "0s"}, flags...)...)
	if destroyed := emu.Count("DestroyInstance") - destroysBefore; r.code != 0 || destroyed != 0 || !strings.Contains(r.stdout, "destroyed 0 of 0") {
		t.Fatalf("cleanup without --include-fleet: want exit 0 and no DestroyInstance; got exit %d, %d destroys, stdout:\n%s\nstderr:\n%s", r.code, destroyed, r.stdout, r.stderr)
	}
	r = nsd(t, "", append([]string{"cleanup", "--older-than", "0s", "--include-fleet", "--dry-run"}, flags...)...)
	for _, id := range fleetVMs {
		if !strings.Contains(r.stdout, "would destroy "+id) {
			t.Fatalf("cleanup --include-fleet --dry-run: want %s listed; got exit %d, stdout:\n%s\nstderr:\n%s", id, r.code, r.stdout, r.stderr)
		}
	}
	if destroyed := emu.Count("DestroyInstance") - destroysBefore; destroyed != 0 {
		t.Fatalf("cleanup --dry-run destroyed %d instances", destroyed)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit %v: %s", err, stderr.String())
	}
	if live := emu.LiveInstances(); len(live) != 0 {
		t.Fatalf("live after SIGTERM: %v", live)
	}
}

// lockedBuffer is a bytes.Buffer a running process may write to while the
// test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A command that fails at once stops the fleet: exit 125, with the last
// failure's exit code and stderr in the fleet's own last lines, not an
// endless stream of VMs.
func TestFleetCommandThatFailsAtOnceStops(t *testing.T) {
	emu := startEmu(t, nsemu.Options{})
	cmd := exec.Command(binary, "fleet", "--endpoint", emu.URL(), "--token", emu.Token(), "--size", "2", "--max-failures", "2",
		"--", "sh", "-c", "echo 'token expired' >&2; exit 1")
	r := runCmd(t, cmd)
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := strings.Join(lines[max(0, len(lines)-3):], "\n")
	if r.code != 125 || !strings.Contains(last, "2 runs in a row failed") || !strings.Contains(last, "exited 1") || !strings.Contains(last, "token expired") {
		t.Fatalf("want exit 125 with the failure quoted in the last lines; got exit %d, last lines:\n%s\nall stderr:\n%s", r.code, last, r.stderr)
	}
	if n := emu.Count("CreateInstance"); n > 3 {
		t.Fatalf("%d VMs created; want 2, or 3 with one in flight", n)
	}
	if !strings.Contains(r.stderr, "the command exited 1") || strings.Contains(r.stderr, "exited 0") {
		t.Fatalf("end lines do not say exited 1:\n%s", r.stderr)
	}
}

// --max 3 --demand "cat FILE": nothing while FILE says 0, at most 3 alive
// while it says 5, none again once it says 0 and the workers left; the
// fleet keeps running until SIGTERM (exit 130).
func TestFleetOnDemandCLI(t *testing.T) {
	emu := startEmu(t, nsemu.Options{})
	dir := t.TempDir()
	file, polls, gate := filepath.Join(dir, "waiting"), filepath.Join(dir, "polls"), filepath.Join(dir, "gate")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pollCount := func() int { b, _ := os.ReadFile(polls); return len(b) }
	waitPolls := func(n int) {
		target := pollCount() + n
		for end := time.Now().Add(time.Minute); pollCount() < target; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatal("the demand command stopped running")
			}
		}
	}
	write("0")
	cmd := exec.Command(binary, "fleet", "--endpoint", emu.URL(), "--token", emu.Token(), "--max", "3", "--poll", "50ms",
		"--demand", "printf x >>'"+polls+"'; cat '"+file+"'", "--max-failures", "0",
		"--", "sh", "-c", "echo up; while [ ! -e '"+gate+"' ]; do sleep 0.02; done")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitPolls(5)
	if n := emu.Count("CreateInstance"); n != 0 {
		t.Fatalf("%d VMs with nothing waiting", n)
	}
	write("5")
	for end := time.Now().Add(time.Minute); strings.Count(stderr.String(), "ready after") < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("three VMs never ran:\n%s", stderr)
		}
	}
	waitPolls(5)
	write("0")
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(time.Minute); strings.Count(stderr.String(), "the command exited 0") < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the workers never left:\n%s", stderr)
		}
	}
	waitPolls(5)
	if peak, live, created := emu.PeakLive(), len(emu.LiveInstances()), emu.Count("CreateInstance"); peak != 3 || live != 0 || created != 3 {
		t.Fatalf("peak %d, live %d, created %d; want 3, 0, 3:\n%s", peak, live, created, stderr)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit %v after SIGTERM: %s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "demand: 5 job(s) waiting") {
		t.Fatalf("no demand progress line:\n%s", stderr)
	}
}

func TestFleetOnDemandUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--size", "2", "--demand", "echo 1"}, "--demand goes with --max N"},
		{[]string{"--demand", "echo 1"}, "--demand goes with --max N"},
		{[]string{"--size", "2", "--poll", "1s"}, "--poll goes with --demand"},
		{[]string{"--max", "2"}, "--max goes with --demand"},
		{[]string{"--max", "2", "--demand", "echo 1", "--ready", "("}, "is not a regular expression"},
		{[]string{"--max", "2", "--min", "3", "--demand", "echo 1"}, "minimum (3) is above its maximum (2)"},
	} {
		r := nsd(t, "", append(append([]string{"fleet", "--emulator"}, tc.args...), "--", "true")...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: want exit 2 and %q; got %d: %s", tc.args, tc.want, r.code, r.stderr)
		}
	}
}

// The demand command runs here in its own process group: a timeout kills
// it whole (a background child included), and a failure or a wrong answer
// is an error that says what it printed.
func TestHostDemand(t *testing.T) {
	ctx := context.Background()
	if n, err := hostDemand("echo 4")(ctx); n != 4 || err != nil {
		t.Fatalf("echo 4: %d %v", n, err)
	}
	if _, err := hostDemand("echo swamp is down >&2; exit 3")(ctx); err == nil || !strings.Contains(err.Error(), "swamp is down") {
		t.Fatalf("a failing command: %v", err)
	}
	if _, err := hostDemand("echo many")(ctx); err == nil || !strings.Contains(err.Error(), `"many"`) {
		t.Fatalf("a wrong answer: %v", err)
	}
	if _, err := hostDemand("echo -1")(ctx); err == nil {
		t.Fatal("a negative count: no error")
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := hostDemand("sleep 60 & echo $! >'" + pidFile + "'; wait")(short); err == nil || !strings.Contains(err.Error(), "--demand-timeout") {
		t.Fatalf("a hung command: %v", err)
	}
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	for end := time.Now().Add(time.Minute); pid > 0 && syscall.Kill(pid, 0) == nil && !zombie(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the demand command's child outlived its timeout")
		}
	}
}

func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	_, after, _ := strings.Cut(string(stat), ") ")
	return err != nil || strings.HasPrefix(after, "Z")
}

// The check, as a user sees it: with every RunCommand stream cut
// after 1 s, `echo early; sleep 5; echo late` prints each line exactly
// once, early before late (--json-logs times), and the VM is destroyed
// only after late.
func TestFleetOutputSurvivesStreamCuts(t *testing.T) {
	emu := startEmu(t, nsemu.Options{Faults: []nsemu.Fault{{Method: "RunCommand", Count: -1, CutAfterTime: time.Second}}})
	r := nsd(t, "", "fleet", "--json-logs", "--endpoint", emu.URL(), "--token", emu.Token(), "--size", "1", "--total", "1",
		"--", "sh", "-c", "echo early; sleep 5; echo late")
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	var early, late []jsonLine
	for _, l := range jsonLines(r.stdout) {
		switch l.Msg {
		case "early":
			early = append(early, l)
		case "late":
			late = append(late, l)
		}
	}
	if len(early) != 1 || len(late) != 1 || !early[0].Time.Before(late[0].Time) {
		t.Fatalf("want early then late, once each; stdout:\n%s", r.stdout)
	}
	var destroyed time.Time
	for _, c := range emu.Calls() {
		if c.Method == "DestroyInstance" {
			destroyed = c.Start
		}
	}
	if !destroyed.After(late[0].Time) || !strings.Contains(r.stderr, "fleet output stream lost") {
		t.Fatalf("the VM was destroyed at %v, late arrived at %v; stderr:\n%s", destroyed, late[0].Time, r.stderr)
	}
	t.Logf("late %v after early; destroyed %v after late; %d RunCommand streams",
		late[0].Time.Sub(early[0].Time), destroyed.Sub(late[0].Time), emu.Count("RunCommand"))
}
