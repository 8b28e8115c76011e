package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// fanWorkflow: five steps for the fleet's workers (labels pool=namespace),
// which run 5 s each, one for other workers and one pinned to a named
// worker; the last two wait 45 s for a worker that never comes, and may
// fail.
const fanWorkflow = `id: 6c15f613-c7e2-43a4-8b18-3438aa6507fc
name: fan
jobs:
  - name: main
    labels: {pool: namespace}
    steps:
      - {name: s1, task: {type: model_method, modelIdOrName: m1, methodName: execute, inputs: {run: "echo ran s1; sleep 5"}}}
      - {name: s2, task: {type: model_method, modelIdOrName: m2, methodName: execute, inputs: {run: "echo ran s2; sleep 5"}}}
      - {name: s3, task: {type: model_method, modelIdOrName: m3, methodName: execute, inputs: {run: "echo ran s3; sleep 5"}}}
      - {name: s4, task: {type: model_method, modelIdOrName: m6, methodName: execute, inputs: {run: "echo ran s4; sleep 5"}}}
      - {name: s5, task: {type: model_method, modelIdOrName: m7, methodName: execute, inputs: {run: "echo ran s5; sleep 5"}}}
      - {name: pinned, target: somebody, queueTimeout: 45, allowFailure: true, task: {type: model_method, modelIdOrName: m4, methodName: execute, inputs: {run: "echo pinned"}}}
  - name: other
    labels: {pool: elsewhere}
    queueTimeout: 45
    steps:
      - {name: elsewhere, allowFailure: true, task: {type: model_method, modelIdOrName: m5, methodName: execute, inputs: {run: "echo elsewhere"}}}
version: 1
`

// fleetArgs is the swamp recipe of docs/fleets.md, on loopback and nsemu.
func (o *orchestrator) fleetArgs(emu *nsemu.Server, extra ...string) []string {
	args := []string{"fleet", "--json-logs", "--endpoint", emu.URL(), "--token", emu.Token(), "--poll", "1s",
		"--demand", shellJoin([]string{binary, "swamp-demand", "--server", o.url, "--labels", "pool=namespace", "--swamp", o.launcher}),
		"--ready", "Enrolled as", "--env-from-host", "SWAMP_WORKER_TOKEN",
		"--env", "SWAMP_ORCHESTRATOR_URL=" + o.url, "--env", "SWAMP_WORKER_LABELS=pool=namespace", "--env", "NO_COLOR=1"}
	if deno := os.Getenv("NSDRIVER_DENO"); deno != "" {
		args = append(args, "--env", "NSDRIVER_DENO="+deno)
	}
	args = append(args, extra...)
	return append(args, "--", "swamp", "worker", "connect", "--max-dispatches", "1", "--idle-timeout", "30s")
}

// startFleet runs nsdriver fleet with the enrollment token in its
// environment.
func (o *orchestrator) startFleet(args []string) (*exec.Cmd, *lockedBuffer, *lockedBuffer) {
	o.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "SWAMP_WORKER_TOKEN="+o.token)
	stdout, stderr := &lockedBuffer{}, &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		o.t.Fatal(err)
	}
	o.t.Cleanup(func() { stopGracefully(cmd) })
	return cmd, stdout, stderr
}

// A demand fleet of real swamp workers: it starts from zero VMs, runs every
// step that selects its labels, each on a fresh VM of its own, one VM per
// step, counts neither the step for other workers nor the pinned one,
// never more than --max alive, returns to zero, and keeps the enrollment
// token out of every argv, log, stored spec and file.
func TestRealSwampDemandFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("real swamp: not in -short")
	}
	o := newOrchestrator(t, []string{"m1", "m2", "m3", "m4", "m5", "m6", "m7"}, map[string]string{"fan": fanWorkflow})
	began := time.Now()
	emuDir := t.TempDir()
	emu := startEmu(t, nsemu.Options{DefaultPath: o.imagePath(), Dir: emuDir})
	leaks := watchFilesFor(t, emuDir, o.token)

	fleet, stdout, stderr := o.startFleet(o.fleetArgs(emu, "--max", "3"))
	waitFor(t, "the fleet's first demand", func() bool { return strings.Contains(stderr.String(), `"msg":"fleet demand"`) })
	if n := emu.Count("CreateInstance"); n != 0 {
		t.Fatalf("%d VMs before anything waited", n)
	}

	run := o.startWorkflow("fan")
	// Once the fleet's steps are taken, only the two it cannot serve wait:
	// swamp lists them, and swamp-demand counts neither.
	waitFor(t, "only the unservable steps waiting", func() bool {
		w := o.waitingSteps()
		slices.Sort(w)
		return slices.Equal(w, []string{"elsewhere", "pinned"})
	})
	r := nsd(t, "", "swamp-demand", "--server", o.url, "--labels", "pool=namespace", "--swamp", o.launcher)
	if r.code != 0 || r.stdout != "0\n" {
		t.Fatalf("swamp-demand with only the pinned and the elsewhere step waiting: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	statuses := run.stepStatuses(t)
	for _, s := range []string{"s1", "s2", "s3", "s4", "s5"} {
		if statuses[s] != "succeeded" {
			t.Fatalf("step %s: %q; want succeeded (all: %v)\nfleet stderr:\n%s", s, statuses[s], statuses, stderr)
		}
	}
	if statuses["pinned"] == "succeeded" || statuses["elsewhere"] == "succeeded" {
		t.Fatalf("a step no fleet worker may take ran: %v", statuses)
	}

	// Each step on a VM of its own.
	dispatched := map[string]string{} // step → instance
	for _, l := range jsonLines(stdout.String()) {
		if m := regexp.MustCompile(`Dispatch \w+: command/shell\.execute \(fan › (\w+)\)`).FindStringSubmatch(l.Msg); m != nil {
			if prev, ok := dispatched[m[1]]; ok {
				t.Fatalf("step %s dispatched twice (%s, %s)", m[1], prev, l.Instance)
			}
			dispatched[m[1]] = l.Instance
		}
	}
	instances := map[string]bool{}
	for _, inst := range dispatched {
		instances[inst] = true
	}
	if len(dispatched) != 5 || len(instances) != 5 {
		t.Fatalf("dispatches by step %v; want s1 to s5 each on its own VM", dispatched)
	}
	waitFor(t, "every VM gone", func() bool { return len(emu.LiveInstances()) == 0 })
	// swamp lists a running step as waiting until its dispatch ends:
	// counted, it would get a second VM while its first still runs it.
	if n, peak := emu.Count("CreateInstance"), emu.PeakLive(); n != 5 || peak != 3 {
		t.Fatalf("%d VMs for 5 steps, %d at once; want 5, and --max 3 at once\n%s", n, peak, stderr)
	}
	// swamp-demand's predicate, as real swamp evaluates it, returns the
	// leases that ended since a time, each naming its step and when it was
	// taken: what tells a just-finished step from a waiting one.
	var answer demandAnswer
	if err := json.Unmarshal([]byte(o.swamp("data", "query", demandPredicate(began), "--json", "--server", o.url)), &answer); err != nil {
		t.Fatal(err)
	}
	ended := map[string]bool{}
	for _, r := range answer.Results {
		if r.ModelType == "swamp/step-lease" && r.Content.State == "completed" && r.Content.CreatedAt.After(began) {
			ended[r.Content.StepName] = true
		}
	}
	if len(ended) != 5 {
		t.Fatalf("the demand predicate found the ended leases of %v; want s1 to s5", ended)
	}
	_ = fleet.Process.Signal(syscall.SIGTERM)
	if err := fleet.Wait(); err == nil || fleet.ProcessState.ExitCode() != 130 {
		t.Fatalf("fleet after SIGTERM: %v\n%s", err, stderr)
	}

	// The token: no argv, output, log, stored spec or file.
	for _, c := range emu.Commands() {
		if strings.Contains(strings.Join(c.Argv, " "), o.token) {
			t.Fatalf("the token is in argv %q", c.Argv)
		}
	}
	for _, inst := range emu.Instances() {
		if strings.Contains(inst.Spec, o.token) {
			t.Fatal("the token is in an instance's stored spec")
		}
	}
	for name, out := range map[string]string{"fleet stdout": stdout.String(), "fleet stderr": stderr.String(), "swamp serve's log": o.serveLog.String()} {
		if strings.Contains(out, o.token) {
			t.Fatalf("the token is in %s", name)
		}
	}
	if found := leaks(); len(found) > 0 {
		t.Fatalf("the token is in files on the VMs: %v", found)
	}
	t.Logf("the fleet's progress (-v):\n%s", stderr)
}

// jsonLine is a line of the fleet's --json-logs output: a command's line
// (stdout) or a progress record (stderr).
type jsonLine struct {
	Msg      string `json:"msg"`
	Instance string `json:"instance"`
	Slot     int    `json:"slot"`
	Time     time.Time
	BootMs   float64 `json:"bootMs"`
	ReadyMs  float64 `json:"readyMs"`
}

func jsonLines(s string) []jsonLine {
	var out []jsonLine
	for _, line := range strings.Split(s, "\n") {
		var l jsonLine
		if json.Unmarshal([]byte(line), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(3 * time.Minute); !cond(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within 3 minutes", what)
		}
	}
}

// watchFilesFor scans every file under dir for secret until the test ends
// (instances' directories go with them), and returns what it found.
func watchFilesFor(t *testing.T, dir, secret string) func() []string {
	var mu sync.Mutex
	found := map[string]bool{}
	stop := make(chan struct{})
	done := make(chan struct{})
	scan := func() {
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if info, err := d.Info(); err != nil || info.Size() > 16<<20 {
				return nil
			}
			if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(secret)) {
				mu.Lock()
				found[path] = true
				mu.Unlock()
			}
			return nil
		})
	}
	go func() {
		defer close(done)
		for {
			scan()
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		var paths []string
		for p := range found {
			paths = append(paths, p)
		}
		return paths
	}
}

// A real worker whose enrollment token is refused exits at once: the fleet
// stops after --max-failures such runs, exits 125 and names the likely
// causes in its last lines, instead of relaunching forever.
func TestRealSwampFleetRefusedTokenStops(t *testing.T) {
	if testing.Short() {
		t.Skip("real swamp: not in -short")
	}
	o := newOrchestrator(t, nil, nil)
	emu := startEmu(t, nsemu.Options{DefaultPath: o.imagePath()})
	o.token = "nsdriver-fleet.0000000000000000000000000000000000000000000000000000000000000000"
	args := []string{"fleet", "--endpoint", emu.URL(), "--token", emu.Token(), "--size", "1", "--max-failures", "2",
		"--env-from-host", "SWAMP_WORKER_TOKEN", "--env", "SWAMP_ORCHESTRATOR_URL=" + o.url, "--env", "NO_COLOR=1"}
	if deno := os.Getenv("NSDRIVER_DENO"); deno != "" {
		args = append(args, "--env", "NSDRIVER_DENO="+deno)
	}
	fleet, _, stderr := o.startFleet(append(args, "--", "swamp", "worker", "connect", "--max-dispatches", "1", "--idle-timeout", "30s"))
	done := make(chan struct{})
	go func() { _ = fleet.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the fleet did not stop:\n%s", stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	last := strings.Join(lines[max(0, len(lines)-12):], "\n")
	if fleet.ProcessState.ExitCode() != 125 || !strings.Contains(last, "2 runs in a row failed") ||
		!strings.Contains(last, "exited 1") || !strings.Contains(last, "enrollment token expired or was used up") {
		t.Fatalf("want exit 125 quoting the failure and the likely causes; got %d, last lines:\n%s", fleet.ProcessState.ExitCode(), last)
	}
	if n := emu.Count("CreateInstance"); n > 3 {
		t.Fatalf("%d VMs for a worker that cannot enroll", n)
	}
}
