package nsdriver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/swamp-club/nsdriver/internal/denotest"

	"connectrpc.com/connect"

	"github.com/swamp-club/nsdriver/nsemu"
)

// denoPath finds Deno for the tests that need it, or skips them.
func denoPath(t testing.TB) string { return denotest.Path(t) }

// emuPath is the PATH images see in the emulator: the host's, with Deno
// first when it is installed.
func emuPath() string { return denotest.PathEnv() }

func startTestEmu(t testing.TB, opts nsemu.Options) *nsemu.Server {
	t.Helper()
	if opts.DefaultPath == "" {
		opts.DefaultPath = emuPath()
	}
	emu, err := nsemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return emu
}

type testEnv struct {
	emu    *nsemu.Server
	driver *Driver
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestEnv starts nsemu and a driver on it, and checks at the end that no
// instance is left alive.
func newTestEnv(t testing.TB, cfg Config, opts nsemu.Options) *testEnv {
	t.Helper()
	return newTestEnvOn(t, startTestEmu(t, opts), cfg)
}

// newTestEnvOn points a Driver at a running emulator.
func newTestEnvOn(t testing.TB, emu *nsemu.Server, cfg Config) *testEnv {
	t.Helper()
	cfg.Endpoint, cfg.Token = emu.URL(), emu.Token()
	logs := &syncBuffer{}
	d, err := New(cfg, WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		WithClientOptions(WithRetryPolicy(RetryPolicy{MaxAttempts: 3, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if live := emu.LiveInstances(); len(live) != 0 {
			t.Errorf("instances left alive: %v", live)
		}
	})
	return &testEnv{emu: emu, driver: d, logs: logs}
}

func commandRequest(script string) ExecutionRequest {
	return ExecutionRequest{ProtocolVersion: 1, ModelType: "@swamp/Shell Cmd", ModelID: "m1", MethodName: "execute",
		MethodArgs: map[string]any{"run": script}, DefinitionMeta: DefinitionMeta{ID: "d1", Name: "def", Version: 1}}
}

func TestCommandModeSuccess(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), commandRequest("echo hello; echo warn >&2"), Callbacks{})
	if res.Status != ResultSuccess || res.Error != "" || res.Err != nil {
		t.Fatalf("result %+v", res)
	}
	if len(res.Outputs) != 1 {
		t.Fatalf("outputs %+v", res.Outputs)
	}
	out := res.Outputs[0]
	if out.Kind != "pending" || out.Type != OutputResource || out.SpecName != "execute" || out.Name != "execute" || string(out.Content) != "hello\n" {
		t.Fatalf("output %+v", out)
	}
	if out.Metadata["exitCode"] != 0 || out.Metadata["command"] != "echo hello; echo warn >&2" || out.Metadata["stderr"] != "warn\n" {
		t.Fatalf("metadata %+v", out.Metadata)
	}
	if _, ok := out.Metadata["durationMs"].(int64); !ok {
		t.Fatalf("durationMs %T", out.Metadata["durationMs"])
	}
	if strings.Join(res.Logs, "|") != "warn" {
		t.Fatalf("logs %q", res.Logs)
	}
	m := res.Metadata
	if m == nil || m.InstanceID == "" || !m.Destroyed || m.Region != strings.TrimPrefix(env.emu.URL(), "http://") || m.MachineType != "2x4" || m.Arch != "amd64" || m.UnitMinutes <= 0 {
		t.Fatalf("metadata %+v", m)
	}
	// nsemu says it is one: no charge, while unitMinutes says what
	// Namespace would count.
	if !env.driver.Emulated() || m.EstimatedCostUSD != 0 {
		t.Fatalf("on nsemu: Emulated %v, estimatedCostUsd %v; want true and 0", env.driver.Emulated(), m.EstimatedCostUSD)
	}
	// On Namespace: unitMinutes = max(vCPU, GB/2) × minutes; $0.0015 each.
	for shape, units := range map[string]float64{"2x4": 2, "4x16": 8, "8x8": 8} {
		vms := &instances{cfg: Config{MachineType: shape}}
		unit, usd := vms.cost(time.Now().Add(-time.Minute))
		if unit < units || unit > units*1.01 || usd < unit*0.0015*0.99 || usd > unit*0.0015*1.01 {
			t.Errorf("%s for a minute: %v unit minutes, $%v; want %v and $%v", shape, unit, usd, units, units*0.0015)
		}
	}
	info := env.emu.Instances()
	if len(info) != 1 || info[0].Labels["nsdriver/managed-by"] != "nsdriver" || info[0].Labels["nsdriver/model-type"] != "-swamp-shell-cmd" ||
		info[0].Labels["nsdriver/method"] != "execute" || len(info[0].Labels["nsdriver/run-id"]) != 16 {
		t.Fatalf("instance labels %+v", info)
	}
	if !strings.Contains(env.logs.String(), "msg=cost") || !strings.Contains(env.logs.String(), "msg=\"instance destroyed\"") {
		t.Fatalf("driver log lacks the cost or destroy line:\n%s", env.logs)
	}
}

func TestSpecNamingKeepsDocumentOrder(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	req, err := DecodeExecutionRequest(strings.NewReader(`{"protocolVersion":1,"modelType":"m","modelId":"i","methodName":"run",
		"methodArgs":{"run":"printf out; printf err >&2"},"definitionMeta":{"id":"d","name":"n","version":1,"tags":{}},
		"resourceSpecs":{"zeta":{"a":1},"alpha":{}},"fileSpecs":{"log":{},"other":{}}}`))
	if err != nil {
		t.Fatal(err)
	}
	res := env.driver.Execute(context.Background(), req, Callbacks{})
	if res.Status != ResultSuccess || len(res.Outputs) != 2 {
		t.Fatalf("result %+v", res)
	}
	if res.Outputs[0].SpecName != "zeta" || res.Outputs[0].Name != "zeta" {
		t.Fatalf("resource output named %q, want the first key zeta", res.Outputs[0].SpecName)
	}
	f := res.Outputs[1]
	if f.Type != OutputFile || f.SpecName != "log" || string(f.Content) != "[stdout]\nout\n[stderr]\nerr" {
		t.Fatalf("file output %+v %q", f, f.Content)
	}
	// A part is left out when empty.
	req.MethodArgs["run"] = "printf only-out"
	res = env.driver.Execute(context.Background(), req, Callbacks{})
	if string(res.Outputs[1].Content) != "[stdout]\nonly-out" {
		t.Fatalf("file output %q", res.Outputs[1].Content)
	}
}

func TestNonZeroExit(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), commandRequest("echo partial; echo 'it broke' >&2; exit 3"), Callbacks{})
	var we *WorkloadError
	if res.Status != ResultError || res.Error != "it broke" || !errors.Is(res.Err, ErrWorkloadFailed) || !errors.As(res.Err, &we) ||
		we.ExitCode != 3 || len(res.Outputs) != 0 || !res.Metadata.Destroyed {
		t.Fatalf("result %+v", res)
	}
	res = env.driver.Execute(context.Background(), commandRequest("exit 7"), Callbacks{})
	if res.Status != ResultError || res.Error != "exited with code 7" {
		t.Fatalf("result %+v", res)
	}
}

// Stdout streams: the command prints "a" and waits until OnStdout has seen
// it (a file the callback creates) before it prints "b". No clock involved:
// output held back until the end would leave the command waiting.
func TestStderrLinesInOrderAndStdoutStreams(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	seen := filepath.Join(t.TempDir(), "a-seen")
	var lines []string
	var chunks []string
	res := env.driver.Execute(context.Background(), commandRequest(
		`for i in 1 2 3; do echo "line $i" >&2; done; printf 'no newline' >&2; printf a
		i=0; while [ ! -e '`+seen+`' ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done
		[ -e '`+seen+`' ] || { echo "a was not delivered while the command ran" >&2; exit 9; }
		printf b`),
		Callbacks{OnLog: func(l string) { lines = append(lines, l) }, OnStdout: func(b []byte) {
			chunks = append(chunks, string(b))
			if string(b) == "a" {
				_ = os.WriteFile(seen, nil, 0o600)
			}
		}})
	if res.Status != ResultSuccess {
		t.Fatalf("want success, got %+v", res)
	}
	want := "line 1|line 2|line 3|no newline"
	if strings.Join(lines, "|") != want || strings.Join(res.Logs, "|") != want {
		t.Fatalf("OnLog %q logs %q, want %q", lines, res.Logs, want)
	}
	if strings.Join(chunks, "|") != "a|b" {
		t.Fatalf("stdout chunks %q: want [a b], each as it was written", chunks)
	}
}

func TestOutputCap(t *testing.T) {
	env := newTestEnv(t, Config{MaxOutputBytes: 1000}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), commandRequest("head -c 5000 /dev/zero; sleep 30"), Callbacks{})
	if res.Status != ResultError || !errors.Is(res.Err, ErrOutputTooLarge) || !strings.Contains(res.Error, "1000") || !res.Metadata.Destroyed {
		t.Fatalf("result %+v", res)
	}
}

func TestLargeScriptIsUploaded(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	var script strings.Builder
	script.WriteString("total=0\n")
	for i := 0; script.Len() < 200<<10; i++ {
		fmt.Fprintf(&script, "total=$((total + %d)) # padding padding padding padding\n", i%7)
	}
	script.WriteString(`echo "total=$total"; pwd`)
	res := env.driver.Execute(context.Background(), commandRequest(script.String()), Callbacks{})
	if res.Status != ResultSuccess {
		t.Fatalf("result %+v", res)
	}
	if !strings.HasPrefix(string(res.Outputs[0].Content), "total=") || !strings.Contains(string(res.Outputs[0].Content), "nsdriver-") {
		t.Fatalf("output %q", res.Outputs[0].Content)
	}
}

func TestEnvAndTraceHeadersTravelInEnvFields(t *testing.T) {
	secret := "s3cr3t-'$(touch /tmp/pwned)'"
	env := newTestEnv(t, Config{Env: map[string]string{"API_KEY": secret}}, nsemu.Options{})
	req := commandRequest(`printf '%s|%s|%s' "$API_KEY" "$TRACEPARENT" "$TRACESTATE"`)
	req.TraceHeaders = map[string]string{"traceparent": "00-abc-def-01", "tracestate": "k=v"}
	res := env.driver.Execute(context.Background(), req, Callbacks{})
	if res.Status != ResultSuccess || string(res.Outputs[0].Content) != secret+"|00-abc-def-01|k=v" {
		t.Fatalf("result %+v %q", res, res.Outputs)
	}
	if strings.Contains(env.logs.String(), "s3cr3t") {
		t.Fatal("env value logged")
	}
}

func TestTimeoutDestroys(t *testing.T) {
	env := newTestEnv(t, Config{Timeout: Milliseconds(300 * time.Millisecond)}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), commandRequest("sleep 30"), Callbacks{})
	if res.Status != ResultError || !errors.Is(res.Err, ErrTimeout) || !strings.Contains(res.Error, "timed out after 300ms") || !res.Metadata.Destroyed {
		t.Fatalf("result %+v", res)
	}
}

func TestCallerCancelDestroys(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	res := env.driver.Execute(ctx, commandRequest("sleep 30"), Callbacks{})
	if res.Status != ResultError || !errors.Is(res.Err, context.Canceled) || !strings.Contains(res.Error, "canceled") || !res.Metadata.Destroyed {
		t.Fatalf("result %+v", res)
	}
}

func TestBootFailureDestroys(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{Faults: []nsemu.Fault{{Method: "Boot"}}})
	res := env.driver.Execute(context.Background(), commandRequest("true"), Callbacks{})
	if res.Status != ResultError || CodeOf(res.Err) != CodeInternal || res.Metadata == nil || !res.Metadata.Destroyed {
		t.Fatalf("result %+v", res)
	}
}

func TestFailingDestroyIsRetried(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{Faults: []nsemu.Fault{{Method: "DestroyInstance", Count: 4, Code: connect.CodeUnavailable}}})
	res := env.driver.Execute(context.Background(), commandRequest("echo ok"), Callbacks{})
	if res.Status != ResultSuccess || !res.Metadata.Destroyed || env.emu.Count("DestroyInstance") != 5 {
		t.Fatalf("result %+v after %d destroy calls", res, env.emu.Count("DestroyInstance"))
	}
}

func TestRequestWithoutModeCreatesNothing(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	for _, req := range []ExecutionRequest{{MethodName: "x"}, {MethodName: "x", MethodArgs: map[string]any{"run": "   "}}, {MethodName: "x", MethodArgs: map[string]any{"run": 5}}} {
		res := env.driver.Execute(context.Background(), req, Callbacks{})
		if res.Status != ResultError || !errors.Is(res.Err, ErrInvalidRequest) || res.Metadata != nil ||
			!strings.Contains(res.Error, "needs either a bundle or a methodArgs.run string") {
			t.Fatalf("result %+v", res)
		}
	}
	// Without a methodName nothing can be named: refused before any VM.
	res := env.driver.Execute(context.Background(), ExecutionRequest{MethodArgs: map[string]any{"run": "true"}}, Callbacks{})
	if !errors.Is(res.Err, ErrInvalidRequest) || !strings.Contains(res.Error, "methodName is missing") {
		t.Fatalf("no methodName: want ErrInvalidRequest saying methodName is missing, got %+v", res)
	}
	if n := env.emu.Count("CreateInstance"); n != 0 {
		t.Fatalf("%d instances created", n)
	}
}

func TestConcurrentExecutionsRespectMaxConcurrent(t *testing.T) {
	env := newTestEnv(t, Config{MaxConcurrent: 2}, nsemu.Options{MaxInstances: 2})
	var wg sync.WaitGroup
	results := make([]ExecutionResult, 6)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = env.driver.Execute(context.Background(), commandRequest(fmt.Sprintf("sleep 0.1; echo %d", i)), Callbacks{})
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.Status != ResultSuccess || string(r.Outputs[0].Content) != fmt.Sprintf("%d\n", i) {
			t.Fatalf("execution %d: %+v", i, r)
		}
	}
}

func TestResultJSONShape(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), commandRequest("printf hi"), Callbacks{})
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	_ = json.Unmarshal(b, &doc)
	if doc["status"] != "success" || doc["outputs"].([]any)[0].(map[string]any)["content"] != "aGk=" || doc["logs"] == nil {
		t.Fatalf("json %s", b)
	}
	if _, ok := doc["error"]; ok {
		t.Fatalf("error present on success: %s", b)
	}
	meta := doc["metadata"].(map[string]any)
	for _, k := range []string{"instanceId", "region", "machineType", "arch", "bootMs", "unitMinutes", "estimatedCostUsd", "destroyed"} {
		if _, ok := meta[k]; !ok {
			t.Fatalf("metadata lacks %s: %s", k, b)
		}
	}
	bad := env.driver.Execute(context.Background(), ExecutionRequest{}, Callbacks{})
	b, _ = json.Marshal(bad)
	if !strings.Contains(string(b), `"outputs":[]`) || !strings.Contains(string(b), `"logs":[]`) || strings.Contains(string(b), "metadata") {
		t.Fatalf("rejected request json %s", b)
	}
}

// A VM that fails to boot is reported with Namespace's own reason, and
// still destroyed.
func TestBootFailureSaysWhy(t *testing.T) {
	env := newTestEnv(t, Config{Image: "registry.invalid/team/tool:1"}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), commandRequest("true"), Callbacks{})
	var bootErr *BootError
	if res.Status != ResultError || !errors.As(res.Err, &bootErr) || len(bootErr.Reasons) != 1 || !res.Metadata.Destroyed {
		t.Fatalf("result %+v", res)
	}
	want := `The Namespace VM failed to start: failed to pull image "registry.invalid/team/tool:1": manifest unknown (container nsdriver, ImagePullBackOff). Check the image and its entrypoint.`
	if res.Error != want {
		t.Fatalf("error %q\nwant  %q", res.Error, want)
	}
}

// An image whose own ENTRYPOINT would exit given `sleep infinity` as args
// stays up, because the driver replaces the entrypoint; builtin images get
// knownImageId and args.
func TestContainerStaysUpOnAnyImage(t *testing.T) {
	const image = "example.com/entrypoint-exits:1"
	env := newTestEnv(t, Config{Image: image}, nsemu.Options{ExitingEntrypoints: []string{image}})
	if res := env.driver.Execute(context.Background(), commandRequest("echo up"), Callbacks{}); res.Status != ResultSuccess {
		t.Fatalf("result %+v", res)
	}
	env2 := newTestEnv(t, Config{}, nsemu.Options{})
	if res := env2.driver.Execute(context.Background(), commandRequest("echo up"), Callbacks{}); res.Status != ResultSuccess {
		t.Fatalf("builtin result %+v", res)
	}
}

func TestContainerRequestPerImageKind(t *testing.T) {
	var got []ContainerRequest
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		var req CreateInstanceRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		got = append(got, req.Containers...)
		writeJSON(w, 400, map[string]string{"code": "invalid_argument", "message": "stop here"})
	})
	for _, image := range []string{"builtin:base", "denoland/deno:debian-2.9.6"} {
		d, err := New(Config{Image: image}, WithClient(api.client(t)))
		if err != nil {
			t.Fatal(err)
		}
		d.Execute(context.Background(), commandRequest("true"), Callbacks{})
	}
	if len(got) != 2 ||
		got[0].KnownImageID != "builtin:base" || strings.Join(got[0].Args, " ") != "sleep infinity" || got[0].Entrypoint != nil ||
		got[1].ImageRef != "denoland/deno:debian-2.9.6" || strings.Join(got[1].Entrypoint, " ") != "sleep infinity" || got[1].Args != nil {
		t.Fatalf("containers %+v", got)
	}
}

// A failed command keeps its exit code in the metadata, and its error is
// the tail of its stderr, or says the code.
func TestFailedResultKeepsExitCode(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), commandRequest(`head -c 10000 /dev/zero | tr '\0' a >&2; echo >&2; echo "the real reason" >&2; exit 3`), Callbacks{})
	if res.Status != ResultError || res.Metadata.ExitCode == nil || *res.Metadata.ExitCode != 3 {
		t.Fatalf("result %+v", res.Metadata)
	}
	if !strings.HasPrefix(res.Error, "…") || !strings.HasSuffix(res.Error, "the real reason") || len(res.Error) > 4100 {
		t.Fatalf("error of %d bytes: ...%q", len(res.Error), res.Error[max(0, len(res.Error)-40):])
	}
	raw, _ := json.Marshal(res)
	if !strings.Contains(string(raw), `"exitCode":3`) {
		t.Fatalf("JSON %s", raw)
	}
	res = env.driver.Execute(context.Background(), commandRequest("exit 4"), Callbacks{})
	if res.Error != "exited with code 4" || *res.Metadata.ExitCode != 4 {
		t.Fatalf("silent failure: %q %+v", res.Error, res.Metadata)
	}
	res = env.driver.Execute(context.Background(), commandRequest("true"), Callbacks{})
	if raw, _ := json.Marshal(res.Metadata); !strings.Contains(string(raw), `"exitCode":0`) {
		t.Fatalf("success metadata %s", raw)
	}
}

// A long script is not echoed whole in metadata.command.
func TestLongScriptNotEchoed(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	script := "# " + strings.Repeat("é", 100<<10) + "\necho ok"
	res := env.driver.Execute(context.Background(), commandRequest(script), Callbacks{})
	if res.Status != ResultSuccess {
		t.Fatalf("result %s", res.Error)
	}
	m := res.Outputs[0].Metadata
	cmd, _ := m["command"].(string)
	if len(cmd) > maxEchoedCommand+len("…") || !strings.HasSuffix(cmd, "…") || !utf8.ValidString(cmd) || m["commandBytes"] != len(script) {
		t.Fatalf("command of %d bytes, commandBytes %v", len(cmd), m["commandBytes"])
	}
}
