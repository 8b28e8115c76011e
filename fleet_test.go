package nsdriver

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/swamp-club/nsdriver/nsemu"
)

const fleetSecret = "swamp-enroll.s3cr3t-value-77aa"

// standInSwamp is a `swamp` on the emulator's PATH: it prints the names of
// its environment variables (never their values), sleeps briefly, exits.
func standInSwamp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"swamp $*\"\nenv | cut -d= -f1 | grep SWAMP_ | sort\necho \"to stderr\" >&2\nsleep 0.1\n"
	if err := os.WriteFile(filepath.Join(dir, "swamp"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir + string(os.PathListSeparator) + os.Getenv("PATH")
}

type fleetEnv struct {
	emu   *nsemu.Server
	logs  *syncBuffer
	mu    sync.Mutex
	lines []FleetOutput
}

func newFleet(t *testing.T, opts nsemu.Options, fo FleetOptions) (*Fleet, *fleetEnv) {
	t.Helper()
	if opts.DefaultPath == "" {
		opts.DefaultPath = standInSwamp(t)
	}
	if fo.LaunchesPerMinute == 0 {
		fo.LaunchesPerMinute = -1 // no pacing, unless a test is about it
	}
	env := &fleetEnv{emu: startTestEmu(t, opts), logs: &syncBuffer{}}
	fo.OnOutput = func(o FleetOutput) {
		env.mu.Lock()
		defer env.mu.Unlock()
		env.lines = append(env.lines, o)
	}
	cfg := Config{Endpoint: env.emu.URL(), Token: env.emu.Token(), Env: map[string]string{"SWAMP_WORKER_TOKEN": fleetSecret, "SWAMP_ORCHESTRATOR_URL": "wss://orch:4000"}}
	f, err := NewFleet(cfg, fo, WithLogger(slog.New(slog.NewTextHandler(env.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		WithClientOptions(WithRetryPolicy(RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})))
	if err != nil {
		t.Fatal(err)
	}
	f.backoff = RetryPolicy{InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	f.quotaWait, f.failureBackoff = f.backoff, f.backoff
	t.Cleanup(func() {
		if live := env.emu.LiveInstances(); len(live) != 0 {
			t.Errorf("instances left alive: %v", live)
		}
	})
	return f, env
}

func (e *fleetEnv) output() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, o := range e.lines {
		b.WriteString(o.Line + "\n")
	}
	return b.String()
}

func TestFleetRunsTotalCommandsOnFreshVMs(t *testing.T) {
	f, env := newFleet(t, nsemu.Options{}, FleetOptions{Size: 2, Total: 5, Script: "swamp worker connect --max-dispatches 1"})
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	insts := env.emu.Instances()
	if len(insts) != 5 || env.emu.Count("CreateInstance") != 5 {
		t.Fatalf("%d instances, %d creates; want 5 VMs", len(insts), env.emu.Count("CreateInstance"))
	}
	for _, inst := range insts {
		if inst.Labels["nsdriver/fleet"] != f.ID() || inst.Labels["nsdriver/managed-by"] != "nsdriver" {
			t.Fatalf("labels %v", inst.Labels)
		}
		if until := time.Until(inst.Deadline); until > fleetDeadline+time.Minute {
			t.Fatalf("a fleet VM's deadline is %v away, want about %v", until, fleetDeadline)
		}
	}
	out := env.output()
	if strings.Count(out, "swamp worker connect --max-dispatches 1") != 5 || strings.Count(out, "SWAMP_WORKER_TOKEN") != 5 ||
		strings.Count(out, "to stderr") != 5 {
		t.Fatalf("output:\n%s", out)
	}
	if n := strings.Count(env.logs.String(), "fleet command ended"); n != 5 {
		t.Fatalf("%d end lines:\n%s", n, env.logs)
	}
	// The secret went in the RunCommand environment only: not in any
	// instance's stored spec, any command line, the output or the logs.
	for _, inst := range insts {
		if strings.Contains(inst.Spec, fleetSecret) || strings.Contains(inst.Spec, "SWAMP_WORKER_TOKEN") {
			t.Fatalf("the secret is in the stored spec: %s", inst.Spec)
		}
	}
	starts := 0
	for _, c := range env.emu.Commands() {
		if strings.Contains(strings.Join(c.Argv, " "), fleetSecret) {
			t.Fatalf("the secret is in argv %q", c.Argv)
		}
		// Only the call that starts a command carries its environment.
		if len(c.Argv) > 3 && c.Argv[3] == "nsdriver-fleet" {
			starts++
		} else if len(c.EnvNames) != 0 {
			t.Fatalf("a follow-up call carries variables %v: %q", c.EnvNames, c.Argv)
		}
	}
	if starts != 5 {
		t.Fatalf("%d start calls, want 5", starts)
	}
	if strings.Contains(out, fleetSecret) || strings.Contains(env.logs.String(), fleetSecret) {
		t.Fatal("the secret reached the output or the logs")
	}
}

// A VM that fails to boot is reported with its reason and replaced; the
// fleet still runs Total commands.
func TestFleetReplacesAVMThatFailsToBoot(t *testing.T) {
	f, env := newFleet(t, nsemu.Options{Faults: []nsemu.Fault{{Method: "Boot", Message: "node lost"}}},
		FleetOptions{Size: 1, Total: 2, Script: "swamp worker connect"})
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	logs := env.logs.String()
	if env.emu.Count("CreateInstance") != 3 || strings.Count(logs, "fleet command ended") != 2 ||
		!strings.Contains(logs, "fleet boot failed") || !strings.Contains(logs, "node lost") {
		t.Fatalf("%d creates; logs:\n%s", env.emu.Count("CreateInstance"), logs)
	}
}

// Three failed boots in a row end a fleet that cannot work: with one slot
// the boots are sequential, so exactly three VMs are tried.
func TestFleetStopsAfterThreeFailedBoots(t *testing.T) {
	f, env := newFleet(t, nsemu.Options{Faults: []nsemu.Fault{{Method: "Boot", Count: -1}}}, FleetOptions{Size: 1, Script: "true"})
	err := f.Run(context.Background())
	if !errors.Is(err, ErrFleetFailed) || !strings.Contains(err.Error(), "3 VMs in a row failed to boot") {
		t.Fatalf("want ErrFleetFailed saying 3 VMs in a row failed to boot, got %v", err)
	}
	if n := env.emu.Count("CreateInstance"); n != fleetMaxBootFailures || fleetMaxBootFailures != 3 {
		t.Fatalf("%d VMs created before the fleet stopped (limit %d); want exactly 3", n, fleetMaxBootFailures)
	}
	// Two slots: the fleet still stops, having tried at most one VM more.
	f, env = newFleet(t, nsemu.Options{Faults: []nsemu.Fault{{Method: "Boot", Count: -1}}}, FleetOptions{Size: 2, Script: "true"})
	if err := f.Run(context.Background()); !errors.Is(err, ErrFleetFailed) {
		t.Fatalf("two slots: want ErrFleetFailed, got %v", err)
	}
	if n := env.emu.Count("CreateInstance"); n < 3 || n > 4 {
		t.Fatalf("two slots: %d VMs created; want 3, or 4 with one in flight", n)
	}
}

// resource_exhausted slows launching; the fleet waits and recovers.
func TestFleetWaitsOutTheQuota(t *testing.T) {
	f, env := newFleet(t, nsemu.Options{MaxInstances: 1}, FleetOptions{Size: 3, Total: 4, Script: "swamp worker connect"})
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	logs := env.logs.String()
	if strings.Count(logs, "fleet command ended") != 4 || !strings.Contains(logs, "fleet quota") {
		t.Fatalf("logs:\n%s", logs)
	}
	refused := 0
	for _, c := range env.emu.Calls() {
		if c.Method == "CreateInstance" && c.Code == connect.CodeResourceExhausted.String() {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("the quota never refused a create")
	}
}

// Canceling the context stops launching and destroys every VM before Run
// returns.
func TestFleetCancelDestroysEveryVM(t *testing.T) {
	f, env := newFleet(t, nsemu.Options{}, FleetOptions{Size: 3, Script: "echo up; sleep 30"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitUntil(t, "three commands running", func() bool { return strings.Count(env.output(), "up") == 3 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if live := env.emu.LiveInstances(); len(live) != 0 {
		t.Fatalf("live after Run returned: %v", live)
	}
}

func TestFleetTimeoutEndsACommand(t *testing.T) {
	f, env := newFleet(t, nsemu.Options{}, FleetOptions{Size: 1, Total: 1, Script: "sleep 30", Timeout: 300 * time.Millisecond})
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(env.logs.String(), "fleet's --timeout") {
		t.Fatalf("want the fleet's --timeout blamed in the logs, whichever timer fired first; logs:\n%s", env.logs)
	}
}

func TestNewFleetRefusesBadOptions(t *testing.T) {
	for _, fo := range []FleetOptions{{Size: 0, Script: "x"}, {Size: 1, Total: -1, Script: "x"}, {Size: 1, Script: " "}} {
		if _, err := NewFleet(Config{Token: "t", Endpoint: "http://127.0.0.1:1"}, fo); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%+v: %v", fo, err)
		}
	}
}

// A VM's short deadline is renewed (ensureMinimum) while its command runs:
// the command waits until the emulator has seen three renewals (a file the
// test creates then), so no clock decides how many fit.
func TestFleetRenewsDeadlinesWhileRunning(t *testing.T) {
	renewed := filepath.Join(t.TempDir(), "renewed")
	f, env := newFleet(t, nsemu.Options{}, FleetOptions{Size: 1, Total: 1,
		Script: "i=0; while [ ! -e '" + renewed + "' ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done; [ -e '" + renewed + "' ]"})
	f.renewEvery = 50 * time.Millisecond
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for env.emu.Count("ExtendInstance") < 3 {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		_ = os.WriteFile(renewed, nil, 0o600)
	}()
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(env.logs.String(), "exitCode=0") {
		t.Fatalf("want the command to see three renewals while it ran and exit 0; %d renewals, logs:\n%s", env.emu.Count("ExtendInstance"), env.logs)
	}
	for _, c := range env.emu.Calls() {
		if c.Method == "ExtendInstance" && c.Code != "" {
			t.Fatalf("a renewal failed: %+v", c)
		}
	}
}
