package nsdriver

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	"github.com/swamp-club/nsdriver/nsemu"
)

// The fault matrix: every step of an execution × every fault nsemu can
// inject. Each scenario checks the result (status, and a message naming the
// cause and what to do), that the VM was destroyed or never created, and
// that no goroutine outlives Execute.

type step struct {
	name   string
	method string // the API method the fault hits
	script func() string
}

var matrixSteps = []step{
	{"create", "CreateInstance", func() string { return "echo ok" }},
	{"wait", "WaitInstance", func() string { return "echo ok" }},
	{"upload", "RunCommandSync", incompressibleScript},
	{"run", "RunCommand", func() string { return "echo started >&2; echo ok" }},
	{"mid-stream", "RunCommand", func() string { return "echo line1 >&2; sleep 0.1; echo line2 >&2; sleep 3; echo late" }},
	{"destroy", "DestroyInstance", func() string { return "echo ok" }},
}

// incompressibleScript is a script big enough that its upload spills into a
// RunCommandSync before the run.
func incompressibleScript() string {
	noise := make([]byte, 1600<<10)
	_, _ = rand.Read(noise)
	return "# " + base64.StdEncoding.EncodeToString(noise) + "\necho ok"
}

type faultKind struct {
	name string
	// fault builds the injected fault for a step; nil: not applicable.
	fault func(s step) *nsemu.Fault
}

var codeMessages = map[connect.Code]string{
	connect.CodeUnavailable:       "Namespace API unavailable. Retry later.",
	connect.CodeResourceExhausted: "Namespace quota exceeded. Check workspace billing.",
	connect.CodeUnauthenticated:   "Namespace auth failed. Check your API token.",
	connect.CodeInternal:          "Namespace API error. Retry; if it persists, contact Namespace support.",
}

func codeFault(code connect.Code) func(s step) *nsemu.Fault {
	return func(s step) *nsemu.Fault {
		f := &nsemu.Fault{Method: s.method, Code: code, Count: -1, Message: "injected " + code.String()}
		if s.name == "mid-stream" {
			f.CutAfter = 1
		}
		return f
	}
}

var matrixFaults = []faultKind{
	{"unavailable", codeFault(connect.CodeUnavailable)},
	{"resource_exhausted", codeFault(connect.CodeResourceExhausted)},
	{"unauthenticated", codeFault(connect.CodeUnauthenticated)},
	{"internal", codeFault(connect.CodeInternal)},
	{"dropped connection", func(s step) *nsemu.Fault {
		if s.name == "wait" || s.name == "mid-stream" {
			return &nsemu.Fault{Method: s.method, CutAfter: 1, Count: -1}
		}
		return &nsemu.Fault{Method: s.method, Drop: true, Count: -1}
	}},
	{"slower than the timeout", func(s step) *nsemu.Fault {
		if s.name == "mid-stream" {
			return &nsemu.Fault{} // the command itself outlives the timeout
		}
		return &nsemu.Fault{Method: s.method, Delay: 10 * time.Second, Count: -1} // outlasts every step's timeout
	}},
	{"caller cancellation", func(s step) *nsemu.Fault {
		if s.name == "mid-stream" {
			return &nsemu.Fault{} // canceled from OnLog
		}
		return &nsemu.Fault{Method: s.method, Delay: 100 * time.Millisecond, Count: -1}
	}},
	{"response lost after commit", func(s step) *nsemu.Fault {
		if s.name != "create" {
			return nil
		}
		// The create commits, then the connection closes unanswered: the
		// driver must find the VM by its create-id label and destroy it.
		return &nsemu.Fault{Method: s.method, LoseResponse: true}
	}},
	{"panic in OnLog", func(s step) *nsemu.Fault {
		if s.name != "run" && s.name != "mid-stream" {
			return nil
		}
		return &nsemu.Fault{}
	}},
}

func TestFaultMatrix(t *testing.T) {
	scenarios := 0
	for _, s := range matrixSteps {
		for _, fk := range matrixFaults {
			f := fk.fault(s)
			if f == nil {
				continue
			}
			scenarios++
			t.Run(s.name+"/"+fk.name, func(t *testing.T) { runScenario(t, s, fk.name, f) })
		}
	}
	if scenarios < 40 {
		t.Fatalf("%d scenarios, want at least 40", scenarios)
	}
}

func runScenario(t *testing.T, s step, faultName string, f *nsemu.Fault) {
	// Only the timeout scenarios may end at the timeout: the others get one
	// no busy machine reaches, so that they end at their fault.
	timeout := 2 * time.Minute
	if faultName == "slower than the timeout" {
		timeout = 800 * time.Millisecond
	}
	opts := nsemu.Options{Token: matrixToken}
	if f.Method != "" {
		opts.Faults = []nsemu.Fault{*f}
	}
	env := newTestEnv(t, Config{Timeout: Milliseconds(timeout), Env: map[string]string{"MATRIX_SECRET": matrixSecret}}, opts)
	switch s.name {
	case "destroy":
		env.driver.vms.destroyCap = 300 * time.Millisecond // how long a failing destroy keeps trying
	case "create":
		env.driver.vms.destroyCap = 2 * time.Second // how long the lost create is looked for
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var cb Callbacks
	lines := 0
	switch faultName {
	case "panic in OnLog":
		cb.OnLog = func(line string) {
			if lines++; s.name == "run" || lines == 2 {
				panic("callback exploded on " + line)
			}
		}
	case "caller cancellation":
		if s.name == "mid-stream" {
			cb.OnLog = func(string) { cancel() }
		} else {
			stop := make(chan struct{})
			defer close(stop)
			go cancelWhenCalled(env.emu, s.method, cancel, stop)
		}
	}
	if s.name == "mid-stream" && faultName == "slower than the timeout" {
		env.driver.cfg.Timeout = Milliseconds(500 * time.Millisecond)
	}

	ignore := goleak.IgnoreCurrent()
	res := env.driver.Execute(ctx, commandRequest(s.script()), cb)
	verifyNoLeaks(t, ignore)

	checkNoSecrets(t, env, res)
	wantMessage, wantErr := expectation(s, faultName)
	if s.name == "destroy" && faultName != "caller cancellation" {
		checkDestroyFailure(t, env, res)
		return
	}
	if wantErr == nil {
		if res.Status != ResultSuccess || !res.Metadata.Destroyed {
			t.Fatalf("%s: want success with the VM destroyed, got %+v", t.Name(), res)
		}
		return
	}
	if res.Status != ResultError || !matches(res.Err, wantErr) || !strings.Contains(res.Error, wantMessage) || len(res.Outputs) != 0 {
		t.Fatalf("%s: want an error matching %v saying %q, got %+v", t.Name(), wantErr, wantMessage, res)
	}
	created := env.emu.Count("CreateInstance") > 0 && (s.name != "create")
	if created && (res.Metadata == nil || !res.Metadata.Destroyed) {
		t.Fatalf("%s: the VM was created but not destroyed: %+v", t.Name(), res.Metadata)
	}
	if !created && res.Metadata != nil {
		t.Fatalf("%s: metadata %+v for a VM that was never created", t.Name(), res.Metadata)
	}
}

// cancelWhenCalled cancels once the emulator has seen the method.
func cancelWhenCalled(emu *nsemu.Server, method string, cancel func(), stop <-chan struct{}) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			if emu.Count(method) > 0 {
				cancel()
				return
			}
		}
	}
}

// expectation is the error a scenario must produce and the words its
// message must contain.
func expectation(s step, faultName string) (string, error) {
	for code, msg := range codeMessages {
		if faultName == code.String() {
			return msg, codeIs(Code(code.String()))
		}
	}
	switch faultName {
	case "response lost after commit":
		return "could not reach the Namespace API; check the network and the endpoint, then retry", ErrUnreachable
	case "dropped connection":
		if s.name == "wait" || s.name == "mid-stream" {
			return "ended without an end-of-stream message (connection cut?); retry", ErrStreamTruncated
		}
		return "could not reach the Namespace API; check the network and the endpoint, then retry", ErrUnreachable
	case "slower than the timeout":
		return "raise it if the work needs longer", ErrTimeout
	case "caller cancellation":
		if s.name == "destroy" {
			return "", nil // the work was done; destroy goes on regardless
		}
		return "canceled by the caller", context.Canceled
	case "panic in OnLog":
		return "callback exploded", ErrPanicked
	}
	panic(fmt.Sprintf("no expectation for %s/%s", s.name, faultName))
}

// checkDestroyFailure: the workload's result stands, destroyed is false,
// the log names the instance, and the VM still carries its deadline.
func checkDestroyFailure(t *testing.T, env *testEnv, res ExecutionResult) {
	t.Helper()
	if res.Status != ResultSuccess || res.Metadata == nil || res.Metadata.Destroyed {
		t.Fatalf("%s: want the work's success with destroyed false, got %+v %+v", t.Name(), res, res.Metadata)
	}
	id := res.Metadata.InstanceID
	if !strings.Contains(env.logs.String(), "could not destroy the instance") || !strings.Contains(env.logs.String(), id) {
		t.Fatalf("%s: log does not name instance %s:\n%s", t.Name(), id, env.logs)
	}
	var found bool
	for _, inst := range env.emu.Instances() {
		if inst.ID == id && inst.Status == "RUNNING" {
			found = true
			if until := time.Until(inst.Deadline); until < 5*time.Minute || until > 20*time.Minute {
				t.Fatalf("%s: leftover VM's deadline is %v away; want timeout + 5m", t.Name(), until)
			}
		}
	}
	if !found {
		t.Fatalf("%s: instance %s should still be running after the failed destroy", t.Name(), id)
	}
	env.emu.ClearFaults()
	if err := env.driver.client.DestroyInstance(context.Background(), &DestroyInstanceRequest{InstanceID: id}); err != nil {
		t.Fatal(err)
	}
}

const (
	matrixToken  = "nsct_MATRIX_token_never_printed_51c0"
	matrixSecret = "matrix-env-secret-9d2e"
)

// checkNoSecrets scans what a scenario leaves for a person or a program to
// read — debug logs, the error in every rendering, the result JSON — for
// the token and the env secret, on failure paths as on happy ones.
func checkNoSecrets(t *testing.T, env *testEnv, res ExecutionResult) {
	t.Helper()
	resultJSON, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	texts := map[string]string{"logs": env.logs.String(), "result": string(resultJSON)}
	if res.Err != nil {
		texts["error %v"] = fmt.Sprintf("%v", res.Err)
		texts["error %+v"] = fmt.Sprintf("%+v", res.Err)
		texts["error %#v"] = fmt.Sprintf("%#v", res.Err)
	}
	for where, text := range texts {
		for _, secret := range []string{matrixToken, matrixSecret} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds a secret:\n%s", where, text)
			}
		}
	}
}

// codeIs stands for "an error whose CodeOf is c" in an expectation.
type codeIs Code

func (c codeIs) Error() string { return "code " + string(c) }

func matches(err, want error) bool {
	if c, ok := want.(codeIs); ok {
		return CodeOf(err) == Code(c)
	}
	return errors.Is(err, want)
}
