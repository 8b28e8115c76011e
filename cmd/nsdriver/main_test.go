package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
	for _, name := range []string{"NAMESPACE_TOKEN", "NSC_TOKEN", "NSC_TOKEN_FILE", "NSC_ENDPOINT"} {
		os.Unsetenv(name)
	}
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
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
func runCmd(t *testing.T, cmd *exec.Cmd) result {
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

// startEmulator runs `nsdriver emulator ARGS…` and returns its export
// lines; the emulator stops with the test.
func startEmulator(t *testing.T, n int, args ...string) (*exec.Cmd, []string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"emulator"}, args...)...)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	var lines []string
	for len(lines) < n && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return cmd, lines
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
	emu, err := nsemu.Start(nsemu.Options{SessionToken: "sess-shared"})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
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

func TestCleanup(t *testing.T) {
	emu, err := nsemu.Start(nsemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
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
	emu, err := nsemu.Start(nsemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	flags := []string{"--endpoint", emu.URL(), "--token", emu.Token()}
	orphan := func() string {
		cmd := exec.Command(binary, append([]string{"exec"}, flags...)...)
		cmd.Stdin = strings.NewReader(`{"methodName":"m","methodArgs":{"run":"sleep 60"}}`)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		before := len(emu.LiveInstances())
		deadline := time.Now().Add(10 * time.Second)
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
	for end := time.Now().Add(5 * time.Second); len(emu.LiveInstances()) != 0; time.Sleep(20 * time.Millisecond) {
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

// -h/--help prints usage to stdout and exits 0, for every subcommand, and
// each lists only its own flags.
func TestHelpEverywhere(t *testing.T) {
	cases := map[string][2][]string{ // subcommand: {flags it lists, flags it must not}
		"run":      {{"--machine-type", "--stdin", "--quiet", "--env"}, {"--older-than", "--progress"}},
		"exec":     {{"--machine-type", "--progress"}, {"--older-than", "--stdin"}},
		"cleanup":  {{"--older-than", "--token", "--endpoint", "--dry-run"}, {"--machine-type", "--image", "--warm-pool", "--env"}},
		"emulator": {{"--listen", "--session-token"}, {"--machine-type"}},
		"fleet":    {{"--size", "--total", "--timeout", "--env-from-host", "--machine-type", "--image"}, {"--warm-pool", "--max-output-bytes", "--bundle-image"}},
		"schema":   {{}, {"--machine-type"}},
		"version":  {{"--json"}, {"--machine-type"}},
	}
	for sub, flags := range cases {
		for _, h := range []string{"-h", "--help"} {
			r := nsd(t, "", sub, h)
			if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "Usage: nsdriver "+sub) {
				t.Errorf("%s %s: %+v", sub, h, r)
				continue
			}
			for _, f := range flags[0] {
				if !strings.Contains(r.stdout, f+" ") {
					t.Errorf("%s help lacks %s", sub, f)
				}
			}
			for _, f := range flags[1] {
				if strings.Contains(r.stdout, f+" ") {
					t.Errorf("%s help lists %s", sub, f)
				}
			}
		}
	}
	if r := nsd(t, "", "--help"); r.code != 0 || !strings.Contains(r.stdout, "nsdriver exec [flags] [FILE|-]") {
		t.Errorf("top help: %+v", r)
	}
	if r := nsd(t, "", "version", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"driverType":"@swamp/namespace"`) {
		t.Errorf("version --json: %+v", r)
	}
}

func TestDidYouMean(t *testing.T) {
	r := nsd(t, "", "run", "--machine", "4x8", "--", "true")
	if r.code != 2 || !strings.Contains(r.stderr, "unknown flag --machine; did you mean --machine-type?") {
		t.Errorf("flag: %+v", r)
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(cfg, []byte("machine-type: 4x8\n"), 0o600)
	r = nsd(t, "", "run", "--emulator", "--config", cfg, "--", "true")
	if r.code != 2 || !strings.Contains(r.stderr, `"machine-type": unknown key; did you mean "machineType"?`) {
		t.Errorf("config key: %+v", r)
	}
	if r := nsd(t, "", "exce"); r.code != 2 || !strings.Contains(r.stderr, `did you mean "exec"?`) {
		t.Errorf("command: %+v", r)
	}
}

func TestTimeoutFlagNeedsAUnit(t *testing.T) {
	r := nsd(t, "", "run", "--emulator", "--timeout", "5", "--", "true")
	if r.code != 2 || !strings.Contains(r.stderr, "--timeout 5 needs a unit, e.g. 5s or 5m") {
		t.Fatalf("%+v", r)
	}
	if r := nsd(t, "", "run", "--emulator", "--quiet", "--timeout", "30s", "--", "echo ok"); r.code != 0 || r.stdout != "ok\n" {
		t.Fatalf("with a unit: %+v", r)
	}
	cfg := filepath.Join(t.TempDir(), "c.json")
	_ = os.WriteFile(cfg, []byte(`{"timeout": 30000}`), 0o600) // a config file keeps milliseconds
	if r := nsd(t, "", "run", "--emulator", "--quiet", "--config", cfg, "--", "echo ok"); r.code != 0 {
		t.Fatalf("config ms: %+v", r)
	}
}

func TestExecReadsFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "req.json")
	_ = os.WriteFile(file, []byte(`{"methodName":"m","methodArgs":{"run":"echo from-file"}}`), 0o600)
	r := nsd(t, `{"methodName":"m","methodArgs":{"run":"echo from-stdin"}}`, "exec", "--emulator", file)
	var res nsdriver.ExecutionResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 || string(res.Outputs[0].Content) != "from-file\n" {
		t.Fatalf("%+v %v", r, err)
	}
	r = nsd(t, "", "exec", "--emulator", filepath.Join(t.TempDir(), "missing.json"))
	if r.code != 2 || !strings.Contains(r.stdout, `"status":"error"`) || !strings.Contains(r.stderr, "missing.json") {
		t.Fatalf("missing file: %+v", r)
	}
}

// A failed result keeps the exit code and the stderr tail.
func TestExecFailedResultHasExitCode(t *testing.T) {
	r := nsd(t, `{"methodName":"m","methodArgs":{"run":"echo disk full >&2; exit 3"}}`, "exec", "--emulator")
	var res struct {
		Error    string
		Metadata struct{ ExitCode *int }
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 1 || res.Error != "disk full" || res.Metadata.ExitCode == nil || *res.Metadata.ExitCode != 3 {
		t.Fatalf("%+v %+v %v", r, res, err)
	}
}

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
	emu, err := nsemu.Start(nsemu.Options{DefaultPath: standInSwamp(t, "0.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
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
	emu, err := nsemu.Start(nsemu.Options{DefaultPath: standInSwamp(t, "30")})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	flags := []string{"--endpoint", emu.URL(), "--token", emu.Token()}
	cmd := exec.Command(binary, append(append([]string{"fleet"}, flags...), "--size", "2", "--", "swamp", "worker", "connect")...)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(stderr.String(), "ready after") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("two VMs never ran: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Cleanup now: the busy fleet VMs are left alone by default.
	if r := nsd(t, "", append([]string{"cleanup", "--older-than", "0s"}, flags...)...); r.code != 0 || len(emu.LiveInstances()) != 2 {
		t.Fatalf("cleanup touched fleet VMs: %+v %v", r, emu.LiveInstances())
	}
	if r := nsd(t, "", append([]string{"cleanup", "--older-than", "0s", "--include-fleet", "--dry-run"}, flags...)...); strings.Count(r.stdout, "would destroy") != 2 {
		t.Fatalf("--include-fleet: %+v", r)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
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
