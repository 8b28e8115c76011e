package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Today's swamp (NSDRIVER_SWAMP names its launcher: ../shared/realswamp/
// setup today prints one; ./scripts/test sets it): a repository with an
// enrollment token and models, and `swamp serve` on loopback, for fleets of
// real `swamp worker connect` on nsemu.

type orchestrator struct {
	swampCLI
	url      string // ws://127.0.0.1:PORT
	token    string // the enrollment token: a secret
	serveLog *lockedBuffer
}

func newOrchestrator(t testing.TB, models []string, workflows map[string]string) *orchestrator {
	t.Helper()
	launcher := os.Getenv("NSDRIVER_SWAMP")
	if launcher == "" {
		t.Skip("NSDRIVER_SWAMP is not set: run ../shared/realswamp/setup today and set it to the launcher it prints (./scripts/test does)")
	}
	o := &orchestrator{swampCLI: swampCLI{t: t, launcher: launcher, dir: t.TempDir()}, serveLog: &lockedBuffer{}}
	o.env = append(os.Environ(), "NO_COLOR=1", "TMPDIR="+t.TempDir())
	if out, err := o.command("git", "init", "-q", ".").CombinedOutput(); err != nil {
		t.Fatalf("git init: %v\n%s", err, out)
	}
	o.swamp("init", "--tool", "none")
	o.swamp("vault", "create", "local_encryption", "main-vault")
	var minted struct{ Token string }
	if err := json.Unmarshal([]byte(o.swamp("worker", "token", "create", "nsdriver-fleet", "--duration", "1h", "--max-enrollments", "unlimited", "--json")), &minted); err != nil || minted.Token == "" {
		t.Fatalf("minting an enrollment token: %v", err)
	}
	o.token = minted.Token
	for _, m := range models {
		o.swamp("model", "create", "command/shell", m)
	}
	for name, yaml := range workflows {
		if err := os.WriteFile(filepath.Join(o.dir, "workflows", "workflow-"+name+".yaml"), []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	o.url = fmt.Sprintf("ws://127.0.0.1:%d", port)
	serve := o.command(launcher, "serve", "--host", "127.0.0.1", "--port", fmt.Sprint(port), "--log")
	serve.Stdout, serve.Stderr = o.serveLog, o.serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopGracefully(serve) })
	for end := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", port))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(end) {
			t.Fatalf("swamp serve never became ready:\n%s", o.serveLog)
		}
	}
	return o
}

// swamp runs swamp and fails the test when it fails; it returns stdout.
func (o *orchestrator) swamp(args ...string) string {
	o.t.Helper()
	return o.run(args...).stdout
}

// swampCLI is a swamp launcher in a repository of its own.
type swampCLI struct {
	t        testing.TB
	launcher string
	dir      string
	env      []string
}

func (c *swampCLI) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = c.dir, c.env
	return cmd
}

// run runs swamp and fails the test when it fails.
func (c *swampCLI) run(args ...string) result {
	c.t.Helper()
	res := runCmd(c.t, c.command(c.launcher, args...))
	if res.code != 0 {
		c.t.Fatalf("swamp %s: exit %d\n%s", strings.Join(args, " "), res.code, res.stderr)
	}
	return res
}

// workflowRun is a `swamp workflow run --server` in the background.
type workflowRun struct {
	cmd    *exec.Cmd
	stdout *lockedBuffer
	done   chan struct{}
}

func (o *orchestrator) startWorkflow(name string) *workflowRun {
	o.t.Helper()
	w := &workflowRun{cmd: o.command(o.launcher, "workflow", "run", name, "--server", o.url, "--json"), stdout: &lockedBuffer{}, done: make(chan struct{})}
	w.cmd.Stdout = w.stdout
	if err := w.cmd.Start(); err != nil {
		o.t.Fatal(err)
	}
	go func() { _ = w.cmd.Wait(); close(w.done) }()
	o.t.Cleanup(func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		<-w.done
	})
	return w
}

// stepStatuses waits for the run's end and returns each step's status by
// name.
func (w *workflowRun) stepStatuses(t testing.TB) map[string]string {
	t.Helper()
	statuses := map[string]string{}
	for name, s := range w.steps(t) {
		statuses[name] = s.Status
	}
	return statuses
}

// stepResult is a step of a finished run as swamp reports it; Duration
// (ms) runs from the step's start, queueing included.
type stepResult struct {
	Status   string
	Duration int64
}

func (w *workflowRun) steps(t testing.TB) map[string]stepResult {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(5 * time.Minute):
		t.Fatal("the workflow run did not end within 5 minutes")
	}
	var run struct {
		Jobs []struct {
			Steps []struct {
				Name string
				stepResult
			}
		}
	}
	if err := json.Unmarshal([]byte(w.stdout.String()), &run); err != nil {
		t.Fatalf("the workflow run printed no result (%v):\n%s", err, w.stdout)
	}
	steps := map[string]stepResult{}
	for _, j := range run.Jobs {
		for _, s := range j.Steps {
			steps[s.Name] = s.stepResult
		}
	}
	return steps
}

// waitingSteps is swamp's own list of the steps waiting for a worker.
func (o *orchestrator) waitingSteps() []string {
	o.t.Helper()
	var items []struct{ StepName string }
	out := o.swamp("worker", "queue", "--server", o.url, "--json")
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		o.t.Fatalf("swamp worker queue --json: %v\n%s", err, out)
	}
	var names []string
	for _, it := range items {
		names = append(names, it.StepName)
	}
	return names
}

// imagePath is a PATH for the emulator's images that has swamp and
// nsdriver.
func (o *orchestrator) imagePath() string {
	bin := o.t.TempDir()
	for name, target := range map[string]string{"swamp": o.launcher, "nsdriver": binary} {
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			o.t.Fatal(err)
		}
	}
	return bin + string(os.PathListSeparator) + os.Getenv("PATH")
}
