package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/internal/denotest"

	"github.com/swamp-club/nsdriver"
	"github.com/swamp-club/nsdriver/nsemu"
)

var binary string

// TestMain builds the CLI once; every test runs it as a subprocess with no
// token in its environment.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nsdriver-cli-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "nsdriver")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	for _, name := range []string{"NAMESPACE_TOKEN", "NSC_TOKEN", "NSC_TOKEN_SPEC", "NSC_TOKEN_SPEC_FILE", "NSC_TOKEN_FILE", "NSC_ENDPOINT", "NSC_IAM_ENDPOINT", "NSC_GLOBAL_ENDPOINT"} {
		os.Unsetenv(name)
	}
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startEmu starts an emulator in this process, closed when the test ends.
func startEmu(t testing.TB, opts nsemu.Options) *nsemu.Server {
	t.Helper()
	emu, err := nsemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return emu
}

type result struct {
	stdout, stderr string
	code           int
}

func nsd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	} // else /dev/null, as for a person who pipes nothing
	return runCmd(t, cmd)
}

// runCmd runs cmd and collects its output and exit code.
func runCmd(t testing.TB, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{stdout.String(), stderr.String(), code}
}

func TestRunFallsBackToEmulatorAndStreams(t *testing.T) {
	r := nsd(t, "", "run", "--", "echo hello; echo to-stderr >&2")
	if r.code != 0 || r.stdout != "hello\n" || !strings.Contains(r.stderr, "to-stderr") {
		t.Fatalf("%+v", r)
	}
	if n := strings.Count(r.stderr, "runs on this machine, not in a VM"); n != 1 {
		t.Fatalf("fallback notice appears %d times:\n%s", n, r.stderr)
	}
	// On its own emulator the CLI says so: "emulator", never "VM", and no
	// charge.
	for _, want := range []string{"creating a 2x4 amd64 emulator instance", "emulator instance", "ready after", "destroyed", "no charge"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("progress lacks %q:\n%s", want, r.stderr)
		}
	}
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.Contains(line, "VM") && !strings.Contains(line, "not in a VM") || strings.Contains(line, "estimated cost") {
			t.Errorf("emulator progress line speaks of a VM or a cost: %q", line)
		}
	}
	q := nsd(t, "", "run", "--quiet", "--", "echo quiet")
	if q.stdout != "quiet\n" || strings.Contains(q.stderr, "creating") {
		t.Fatalf("--quiet: %+v", q)
	}
}

func TestRunExitCodes(t *testing.T) {
	if r := nsd(t, "", "run", "--quiet", "--", "exit 7"); r.code != 7 {
		t.Errorf("remote exit 7: got %d %s", r.code, r.stderr)
	}
	if r := nsd(t, "", "run", "--quiet", "--timeout", "300ms", "--", "sleep 10"); r.code != 124 || !strings.Contains(r.stderr, "timed out after 300ms") {
		t.Errorf("timeout: %+v", r)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String()
	ln.Close()
	if r := nsd(t, "", "run", "--quiet", "--endpoint", closed, "--token", "x", "--", "true"); r.code != 125 {
		t.Errorf("API unreachable: %+v", r)
	}
	for _, args := range [][]string{{"run"}, {"run", "--no-such-flag", "--", "true"}, {"run", "--machine-type", "3x3", "--", "true"}, {"frobnicate"}} {
		if r := nsd(t, "", args...); r.code != 2 || r.stderr == "" {
			t.Errorf("%v: %+v", args, r)
		}
	}
	r := nsd(t, "", "run", "--machine-type", "3x3", "--region", "mars", "--", "true")
	if !strings.Contains(r.stderr, "machineType") || !strings.Contains(r.stderr, "region") {
		t.Errorf("not every problem reported: %s", r.stderr)
	}
}

func TestRunArgumentQuoting(t *testing.T) {
	r := nsd(t, "", "run", "--quiet", "--", "printf", "%s|", "a b", "it's", "$HOME", "*")
	if r.code != 0 || r.stdout != "a b|it's|$HOME|*|" {
		t.Fatalf("%+v", r)
	}
}

func TestRunJSONLogs(t *testing.T) {
	r := nsd(t, "", "run", "--json-logs", "--", "echo workload-line >&2")
	sources := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("stderr line is not JSON: %q", line)
		}
		sources[rec["source"].(string)] = true
		if rec["source"] == "workload" && rec["msg"] != "workload-line" {
			t.Fatalf("workload record %v", rec)
		}
	}
	if !sources["driver"] || !sources["workload"] {
		t.Fatalf("sources %v", sources)
	}
}

func TestExec(t *testing.T) {
	r := nsd(t, `{"protocolVersion":1,"methodName":"m","methodArgs":{"run":"printf hi; echo log >&2"},"resourceSpecs":{"b":{},"a":{}}}`,
		"exec", "--emulator")
	var res nsdriver.ExecutionResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 {
		t.Fatalf("%+v %v", r, err)
	}
	if res.Status != "success" || string(res.Outputs[0].Content) != "hi" || res.Outputs[0].SpecName != "b" || r.stderr != "log\n" {
		t.Fatalf("%+v stderr %q", res, r.stderr)
	}
	r = nsd(t, `{"methodName":"m","methodArgs":{"run":"exit 3"}}`, "exec", "--emulator", "--progress")
	if r.code != 1 || !strings.Contains(r.stdout, `"status":"error"`) || !strings.Contains(r.stderr, "destroyed") {
		t.Fatalf("error result: %+v", r)
	}
	for _, input := range []string{"not json", "", `{"methodName":1}`} {
		r = nsd(t, input, "exec", "--emulator")
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 2 || res.Status != "error" || r.stderr == "" {
			t.Fatalf("unreadable %q: %+v", input, r)
		}
	}
	r = nsd(t, `{"methodName":"m","methodArgs":{"run":"true"}}`, "exec")
	if r.code != 2 || !strings.Contains(r.stderr, "needs a Namespace token") || !strings.Contains(r.stdout, `"status":"error"`) {
		t.Fatalf("no token: %+v", r)
	}
}

func TestExecBundle(t *testing.T) {
	t.Setenv("NSDRIVER_DENO", denotest.Path(t)) // the CLI's emulator finds Deno through it
	bundle := `export const model = { methods: { hello: { execute(args, ctx) { console.log("noise"); ctx.writeResource("r", "greeting", { hi: args.name }); } } } };`
	req, _ := json.Marshal(map[string]any{"methodName": "hello", "methodArgs": map[string]any{"name": "swamp"}, "bundle": []byte(bundle)})
	r := nsd(t, string(req), "exec", "--emulator")
	var res nsdriver.ExecutionResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 || string(res.Outputs[0].Content) != `{"hi":"swamp"}` || !strings.Contains(r.stderr, "noise") {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestSchemaAndVersion(t *testing.T) {
	r := nsd(t, "", "schema")
	want, _ := os.ReadFile("../../schema/driver-config.schema.json")
	if r.code != 0 || r.stdout != string(want) {
		t.Fatalf("schema differs from the committed file")
	}
	if r := nsd(t, "", "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "nsdriver ") {
		t.Fatalf("%+v", r)
	}
}

func TestCleanup(t *testing.T) {
	emu := startEmu(t, nsemu.Options{})
	client, err := nsdriver.NewClient(nsdriver.WithEndpoint(emu.URL()), nsdriver.WithToken(emu.Token()))
	if err != nil {
		t.Fatal(err)
	}
	create := func(labels ...nsdriver.Label) string {
		inst, err := client.CreateInstance(context.Background(), &nsdriver.CreateInstanceRequest{
			Shape:  &nsdriver.InstanceShape{VirtualCPU: 2, MemoryMegabytes: 4096, MachineArch: "amd64"},
			Labels: labels, Containers: []nsdriver.ContainerRequest{{Name: "c", KnownImageID: "builtin:base"}}})
		if err != nil {
			t.Fatal(err)
		}
		return inst.InstanceID()
	}
	managed := nsdriver.Label{Name: "nsdriver/managed-by", Value: "nsdriver"}
	leftover := create(managed, nsdriver.Label{Name: "nsdriver/method", Value: "execute"})
	pooled := create(managed, nsdriver.Label{Name: "nsdriver/pool", Value: "abc"})
	foreign := create(nsdriver.Label{Name: "owner", Value: "someone-else"})
	flags := []string{"--endpoint", emu.URL(), "--token", emu.Token()}

	// Nothing old enough: say how many younger ones exist and how to look.
	r := nsd(t, "", append([]string{"cleanup", "--older-than", "1h"}, flags...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "no instance is older than 1h0m0s; 1 younger one(s) may still be in use") ||
		!strings.Contains(r.stdout, "--dry-run --older-than") || len(emu.LiveInstances()) != 3 {
		t.Fatalf("age filter: %+v", r)
	}
	r = nsd(t, "", append([]string{"cleanup", "--older-than", "0s", "--dry-run"}, flags...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "would destroy "+leftover) || strings.Contains(r.stdout, pooled) || len(emu.LiveInstances()) != 3 {
		t.Fatalf("dry run: %+v", r)
	}
	r = nsd(t, "", append([]string{"cleanup", "--older-than", "0s"}, flags...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "destroyed "+leftover) {
		t.Fatalf("cleanup: %+v", r)
	}
	r = nsd(t, "", append([]string{"cleanup", "--older-than", "0s", "--include-pool"}, flags...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "destroyed "+pooled) {
		t.Fatalf("include pool: %+v", r)
	}
	if live := emu.LiveInstances(); len(live) != 1 || live[0] != foreign {
		t.Fatalf("live %v, want only the foreign instance %s", live, foreign)
	}
	if r := nsd(t, "", "cleanup"); r.code != 2 || !strings.Contains(r.stderr, "needs a Namespace token") {
		t.Fatalf("no token: %+v", r)
	}
}

func TestConfigFileAndFlagsMerge(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cfg.yaml")
	os.WriteFile(file, []byte("machineType: 4x8\nenv:\n  FROM_FILE: file\n  OVERRIDE: file\n"), 0o600)
	r := nsd(t, "", "run", "--config", file, "--env", "OVERRIDE=flag", "--", `echo "$FROM_FILE $OVERRIDE"`)
	if r.code != 0 || r.stdout != "file flag\n" || !strings.Contains(r.stderr, "creating a 4x8") {
		t.Fatalf("%+v", r)
	}
	os.WriteFile(file, []byte("machineType: [nonsense\n"), 0o600)
	if r := nsd(t, "", "run", "--config", file, "--", "true"); r.code != 2 {
		t.Fatalf("bad config file: %+v", r)
	}
}

// TestCrashSafety: a process running Execute is SIGKILLed mid-run. Its VM
// outlives it; `nsdriver cleanup --older-than 0s` finds and destroys it, and
// a VM nobody cleans up dies at its platform deadline.
func TestCrashSafety(t *testing.T) {
	emu := startEmu(t, nsemu.Options{})
	flags := []string{"--endpoint", emu.URL(), "--token", emu.Token()}
	orphan := func() string {
		cmd := exec.Command(binary, append([]string{"exec"}, flags...)...)
		cmd.Stdin = strings.NewReader(`{"methodName":"m","methodArgs":{"run":"sleep 60"}}`)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		before := len(emu.LiveInstances())
		deadline := time.Now().Add(time.Minute)
		for emu.Count("RunCommand") == 0 || len(emu.LiveInstances()) == before {
			if time.Now().After(deadline) {
				t.Fatal("the child never started its command")
			}
			time.Sleep(10 * time.Millisecond)
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		live := emu.LiveInstances()
		return live[len(live)-1]
	}

	first := orphan()
	time.Sleep(100 * time.Millisecond)
	if live := emu.LiveInstances(); len(live) != 1 || live[0] != first {
		t.Fatalf("after SIGKILL, live %v; want the orphan %s", live, first)
	}
	r := nsd(t, "", append([]string{"cleanup", "--older-than", "0s"}, flags...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "destroyed "+first) || len(emu.LiveInstances()) != 0 {
		t.Fatalf("cleanup: %+v, live %v", r, emu.LiveInstances())
	}

	second := orphan()
	var deadline time.Time
	for _, inst := range emu.Instances() {
		if inst.ID == second {
			deadline = inst.Deadline
		}
	}
	if until := time.Until(deadline); until < 14*time.Minute || until > 16*time.Minute {
		t.Fatalf("orphan's deadline is %v away; want the default timeout + 5m", until)
	}
	// Let the platform's deadline arrive now rather than in 15 minutes: the
	// same timer nsemu arms at creation, moved with ExtendInstance.
	client, err := nsdriver.NewClient(nsdriver.WithEndpoint(emu.URL()), nsdriver.WithToken(emu.Token()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.ExtendInstance(context.Background(), &nsdriver.ExtendInstanceRequest{InstanceID: second,
		NewDeadline: nsdriver.NewTimestamp(time.Now().Add(300 * time.Millisecond))}); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(time.Minute); len(emu.LiveInstances()) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the orphan outlived its deadline: %v", emu.LiveInstances())
		}
	}
}

// A VM that fails to boot: the CLI says why, in Namespace's words, and
// exits 125.
func TestRunReportsBootFailureReason(t *testing.T) {
	r := nsd(t, "", "run", "--emulator", "--quiet", "--image", "registry.invalid/none:1", "--", "true")
	want := `nsdriver: The Namespace VM failed to start: failed to pull image "registry.invalid/none:1": manifest unknown`
	if r.code != 125 || !strings.Contains(r.stderr, want) {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
}
