package nsdriver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// A command that fails at once does not loop: MaxFailures failed runs in a
// row stop launching, and the error quotes the last failure's exit code
// and stderr, with the likely causes for swamp workers.
func TestFleetStopsAfterMaxFailures(t *testing.T) {
	f, env := newFleet(t, nsemu.Options{}, FleetOptions{Size: 2, MaxFailures: 3,
		Script: "echo 'enrollment token expired' >&2; exit 7 # swamp worker connect"})
	err := f.Run(context.Background())
	if !errors.Is(err, ErrFleetFailed) {
		t.Fatalf("want ErrFleetFailed, got %v", err)
	}
	for _, want := range []string{"3 runs in a row failed", "exited 7", "enrollment token expired", "--max-enrollments unlimited", "SWAMP_SERVER_TOKEN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
	// Two slots: the third failure stops launching; the other slot's run
	// in flight may make a fourth VM, never more.
	if n := env.emu.Count("CreateInstance"); n < 3 || n > 4 {
		t.Fatalf("%d VMs created; want 3, or 4 with one in flight", n)
	}
	if n := strings.Count(env.logs.String(), "outcome=\"exited 7\""); n < 3 {
		t.Fatalf("%d end lines say exited 7; logs:\n%s", n, env.logs)
	}
}

// Failed runs back off the next launch for the whole fleet, doubling; a
// success resets the count. Judged by the backoff the fleet set, not by a
// clock.
func TestFleetBacksOffAfterFailedAndShortRuns(t *testing.T) {
	f, _ := newFleet(t, nsemu.Options{}, FleetOptions{Size: 1, MaxFailures: -1, Script: "true"})
	f.failureBackoff = RetryPolicy{InitialBackoff: time.Second, MaxBackoff: 5 * time.Minute}
	f.shortRun = time.Minute
	waits := func() time.Duration { f.mu.Lock(); defer f.mu.Unlock(); return time.Until(f.notBefore) }
	f.recordRun(runOutcome{kind: outcomeExited, exitCode: 1, duration: 2 * time.Minute})
	first := waits()
	f.recordRun(runOutcome{kind: outcomeLost, duration: 2 * time.Minute})
	second := waits()
	if first <= 0 || first > time.Second || second < first {
		t.Fatalf("backoffs %v then %v: want a wait after each failure, growing", first, second)
	}
	if f.failuresInRow != 2 {
		t.Fatalf("%d failures in a row; want 2", f.failuresInRow)
	}
	f.recordRun(runOutcome{kind: outcomeExited, exitCode: 0, duration: time.Second}) // a success, but short
	if f.failuresInRow != 0 || waits() <= 0 {
		t.Fatalf("a short success: %d failures in a row, backoff %v; want 0 and still a backoff", f.failuresInRow, waits())
	}
	f.recordRun(runOutcome{kind: outcomeExited, exitCode: 0, duration: 2 * time.Minute})
	if f.backoffStep != 0 {
		t.Fatalf("a long success left backoff step %d; want 0", f.backoffStep)
	}
	f.recordRun(runOutcome{kind: outcomeInterrupted})
	if f.failuresInRow != 0 {
		t.Fatal("an interrupted run counted as a failure")
	}
}

// Past a first burst of Size, launches are spaced by 60/LaunchesPerMinute
// seconds: the gaps between creates are at least that (a lower bound, which
// a busy machine can only widen).
func TestFleetPacesLaunches(t *testing.T) {
	f, env := newFleet(t, nsemu.Options{}, FleetOptions{Size: 1, Total: 4, LaunchesPerMinute: 300, MaxFailures: -1, Script: "true"})
	f.shortRun = 0 // no backoff: pacing alone spaces these
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var creates []time.Time
	for _, c := range env.emu.Calls() {
		if c.Method == "CreateInstance" {
			creates = append(creates, c.Start)
		}
	}
	if len(creates) != 4 {
		t.Fatalf("%d creates; want 4", len(creates))
	}
	for i := 1; i < len(creates); i++ {
		if gap := creates[i].Sub(creates[i-1]); gap < 190*time.Millisecond {
			t.Errorf("launch %d came %v after the one before; want at least 200ms at 300 a minute", i+1, gap)
		}
	}
}

// Each VM's end says how its command ended: its exit code, timed out, lost
// or interrupted — never "exited 0" for a command that did not.
func TestFleetTrueOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fo      FleetOptions
		cancel  bool // once the command printed "up"
		destroy bool // the VM, from outside, once the command printed "up"
		want    string
	}{
		{"exit code", FleetOptions{Script: "exit 3"}, false, false, `outcome="exited 3"`},
		{"timeout", FleetOptions{Script: "sleep 30", Timeout: 300 * time.Millisecond}, false, false, `outcome="timed out (--timeout)"`},
		{"lost", FleetOptions{Script: "echo up; sleep 30"}, false, true, "outcome=lost"},
		{"interrupted", FleetOptions{Script: "echo up; sleep 30"}, true, false, "outcome=interrupted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fo.Size, tc.fo.Total, tc.fo.MaxFailures = 1, 1, -1
			f, env := newFleet(t, nsemu.Options{}, tc.fo)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel || tc.destroy {
				go func() {
					for !strings.Contains(env.output(), "up") && ctx.Err() == nil {
						time.Sleep(5 * time.Millisecond)
					}
					if tc.cancel {
						cancel()
						return
					}
					for _, id := range env.emu.LiveInstances() {
						_ = f.d.client.DestroyInstance(ctx, &DestroyInstanceRequest{InstanceID: id})
					}
				}()
			}
			_ = f.Run(ctx)
			logs := env.logs.String()
			if !strings.Contains(logs, tc.want) || strings.Contains(logs, `outcome="exited 0"`) {
				t.Fatalf("want the end line to say %s (and never exited 0); logs:\n%s", tc.want, logs)
			}
		})
	}
}

// A lost stream is not an ended command: with every RunCommand stream cut
// 300 ms after it began, each line arrives exactly once, "early" while the
// command still runs (it waits for the test to see it, after a cut), and
// the VM lives until the command's exit status exists.
func TestFleetFollowsAcrossStreamCuts(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "gate")
	f, env := newFleet(t, nsemu.Options{Faults: []nsemu.Fault{{Method: "RunCommand", Count: -1, CutAfterTime: 300 * time.Millisecond}}},
		FleetOptions{Size: 1, Total: 1, MaxFailures: -1,
			Script: "echo early; echo warn >&2; while [ ! -e '" + gate + "' ]; do sleep 0.02; done; echo late; exit 4"})
	f.refollow = RetryPolicy{InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	waitUntil(t, "early, then two cut streams", func() bool {
		return strings.Contains(env.output(), "early") && env.emu.Count("RunCommand") >= 3
	})
	if len(env.emu.LiveInstances()) != 1 {
		t.Fatalf("the VM was destroyed while its command ran: %s", env.logs)
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range env.lines {
		got = append(got, string(l.Stream)+":"+l.Line)
	}
	if strings.Join(got, ",") != "STDOUT:early,STDERR:warn,STDOUT:late" && strings.Join(got, ",") != "STDERR:warn,STDOUT:early,STDOUT:late" {
		t.Fatalf("lines %q; want early, warn and late, each once", got)
	}
	if logs := env.logs.String(); !strings.Contains(logs, `outcome="exited 4"`) || !strings.Contains(logs, "fleet output stream lost") {
		t.Fatalf("want the cut reported and the true exit; logs:\n%s", logs)
	}
}

// A start call whose answer is lost is repeated with the same run id: the
// command, already started by the first, runs once, and its output is
// followed as usual.
func TestFleetStartAnswerLost(t *testing.T) {
	count := filepath.Join(t.TempDir(), "count")
	f, env := newFleet(t, nsemu.Options{Faults: []nsemu.Fault{{Method: "RunCommandSync", LoseResponse: true}}},
		FleetOptions{Size: 1, Total: 1, MaxFailures: -1, Script: "echo ran >>'" + count + "'; echo done"})
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(count); string(b) != "ran\n" {
		t.Fatalf("the command ran %q", b)
	}
	if out := env.output(); !strings.Contains(out, "done") || !strings.Contains(env.logs.String(), `outcome="exited 0"`) {
		t.Fatalf("output %q; logs:\n%s", out, env.logs)
	}
	if n := env.emu.Count("RunCommandSync"); n < 3 {
		t.Fatalf("%d RunCommandSync calls; want the lost start, its repeat and the status read", n)
	}
}
