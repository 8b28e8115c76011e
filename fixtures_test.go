package nsdriver

import (
	"bytes"
	"context"
	"errors"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/swamp-club/nsdriver/nsemu"
)

const fixtureSecret = "fixture-secret-value-93ac"

// scenario is one recorded flow; it asserts the same things whether it is
// recording or replaying.
type scenario struct {
	name  string
	setup cassetteSetup
	run   func(t *testing.T, c *cassetteRun)
}

var scenarios = []scenario{
	{"client_methods", cassetteSetup{emu: nsemu.Options{BootTime: 200 * time.Millisecond}}, clientMethods},
	{"client_errors", cassetteSetup{emulatorOnly: true, emu: nsemu.Options{MaxInstances: 1, BootTime: time.Hour, Faults: []nsemu.Fault{
		{Method: "ListInstances", Code: connect.CodeUnavailable, Message: "try again"},
		{Method: "WaitInstanceSync", Code: connect.CodeDeadlineExceeded, Message: "the server's deadline passed"},
	}}}, clientErrors},
	{"command_mode", cassetteSetup{emu: nsemu.Options{BootTime: 300 * time.Millisecond}, secrets: []string{fixtureSecret}}, commandMode},
	{"command_failure", cassetteSetup{emu: nsemu.Options{BootTime: 300 * time.Millisecond}}, commandFailure},
	{"boot_failure", cassetteSetup{emulatorOnly: true, emu: nsemu.Options{Faults: []nsemu.Fault{{Method: "Boot"}}}}, bootFailure},
	{"bundle_mode", cassetteSetup{emu: nsemu.Options{BootTime: 300 * time.Millisecond}}, bundleMode},
	{"bundle_spilled", cassetteSetup{emu: nsemu.Options{BootTime: 300 * time.Millisecond}}, bundleSpilled},
}

func TestFixtures(t *testing.T) {
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			if recording() && strings.HasPrefix(s.name, "bundle") {
				denoPath(t)
			}
			c := useCassette(t, s.name, s.setup)
			s.run(t, c)
		})
	}
}

// TestFixturesRecordDeterministically records flows twice against fresh
// emulators and requires identical cassettes.
func TestFixturesRecordDeterministically(t *testing.T) {
	for _, s := range scenarios {
		if s.name != "client_methods" && s.name != "command_mode" && s.name != "client_errors" {
			continue
		}
		t.Run(s.name, func(t *testing.T) {
			var files [2][]byte
			for i := range files {
				dir := t.TempDir()
				t.Run("record", func(t *testing.T) {
					s.run(t, useCassetteIn(t, dir, s.name, s.setup, true))
				})
				var err error
				if files[i], err = os.ReadFile(filepath.Join(dir, s.name+".yaml")); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(files[0], files[1]) {
				t.Fatalf("two recordings of %s differ:\n%s", s.name, firstDifference(files[0], files[1]))
			}
		})
	}
}

func firstDifference(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < len(la) && i < len(lb); i++ {
		if la[i] != lb[i] {
			return "line " + strconv.Itoa(i+1) + ":\n  " + la[i] + "\n  " + lb[i]
		}
	}
	return "lengths differ"
}

// TestFixturesHoldNoSecrets scans every committed cassette.
func TestFixturesHoldNoSecrets(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(fixturesDir, "*.yaml"))
	if len(files) < len(scenarios) {
		t.Fatalf("%d cassettes in %s, want %d", len(files), fixturesDir, len(scenarios))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{fixtureSecret, testToken, "nsemu_", "Bearer ey", "Bearer nsct"} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s contains %q", f, bad)
			}
		}
		if bytes.Contains(b, []byte("Authorization")) && !bytes.Contains(b, []byte("Bearer "+redacted)) {
			t.Errorf("%s has an unredacted Authorization header", f)
		}
	}
}

func fixtureCreate() *CreateInstanceRequest {
	r := testCreateRequest()
	r.Deadline = NewTimestamp(recordClock.Add(time.Hour))
	return r
}

func clientMethods(t *testing.T, c *cassetteRun) {
	ctx := context.Background()
	cl := c.client(t)
	req := fixtureCreate()
	if c.live {
		req.Deadline = NewTimestamp(time.Now().Add(10 * time.Minute))
	}
	inst, err := cl.CreateInstance(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	id := inst.InstanceID()
	ws, err := cl.WaitInstanceSync(ctx, &WaitInstanceRequest{InstanceID: id})
	if err != nil || ws.Metadata.Status != StatusRunning {
		t.Fatalf("wait sync: %v %v", ws, err)
	}
	var updates int
	if m, err := cl.WaitInstance(ctx, &WaitInstanceRequest{InstanceID: id}, func(*WaitInstanceResponse) { updates++ }); err != nil || m.Status != StatusRunning || updates != 1 {
		t.Fatalf("wait on a running instance: %v %v (%d updates)", m, err, updates)
	}
	d, err := cl.DescribeInstance(ctx, &DescribeInstanceRequest{InstanceID: id})
	if err != nil || d.Metadata.Shape.VirtualCPU != 2 || d.CommandEndpoint() == "" {
		t.Fatalf("describe: %+v %v", d, err)
	}
	var out strings.Builder
	code, err := cl.RunCommand(ctx, inst.CommandEndpoint(), &RunCommandRequest{InstanceID: id, TargetContainerName: "main",
		Command: &Command{Command: []string{"sh", "-c", "echo streamed; echo err >&2; exit 5"}}}, func(s OutputStream, b []byte) { out.WriteString(string(s) + ":" + string(b)) })
	if err != nil || code != 5 || !strings.Contains(out.String(), "STDOUT:streamed\n") || !strings.Contains(out.String(), "STDERR:err\n") {
		t.Fatalf("run: %d %q %v", code, out.String(), err)
	}
	sync, err := cl.RunCommandSync(ctx, inst.CommandEndpoint(), &RunCommandRequest{InstanceID: id, TargetContainerName: "main",
		Command: &Command{Command: []string{"printf", "sync"}}})
	if err != nil || string(sync.Stdout) != "sync" {
		t.Fatalf("run sync: %+v %v", sync, err)
	}
	newDeadline := recordClock.Add(2 * time.Hour)
	if c.live {
		newDeadline = time.Now().Add(20 * time.Minute).Truncate(time.Second)
	}
	if ext, err := cl.ExtendInstance(ctx, &ExtendInstanceRequest{InstanceID: id, NewDeadline: NewTimestamp(newDeadline)}); err != nil || ext.NewDeadline.IsZero() {
		t.Fatalf("extend: %v %v", ext, err)
	}
	second, err := cl.CreateInstance(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// Listed once it runs: a status listed while it boots is a matter of
	// timing, which a recording must not hold.
	if ws, err := cl.WaitInstanceSync(ctx, &WaitInstanceRequest{InstanceID: second.InstanceID()}); err != nil || ws.Metadata.Status != StatusRunning {
		t.Fatalf("wait sync on the second: %v %v", ws, err)
	}
	list := &ListInstancesRequest{MaxEntries: 1, LabelFilter: []LabelFilterEntry{{Name: "nsdriver/managed-by", Value: "nsdriver", Op: LabelFilterEqual}}}
	all, err := cl.ListAllInstances(ctx, list)
	if err != nil || len(all) < 2 {
		t.Fatalf("list: %d %v", len(all), err)
	}
	for _, x := range []string{id, second.InstanceID()} {
		if err := cl.DestroyInstance(ctx, &DestroyInstanceRequest{InstanceID: x, Reason: "fixture"}); err != nil {
			t.Fatal(err)
		}
	}
}

func clientErrors(t *testing.T, c *cassetteRun) {
	ctx := context.Background()
	cl := c.client(t)
	bad := fixtureCreate()
	bad.Shape.VirtualCPU = 3
	if _, err := cl.CreateInstance(ctx, bad); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("invalid_argument: %v", err)
	}
	if _, err := cl.DescribeInstance(ctx, &DescribeInstanceRequest{InstanceID: "missing"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("not_found: %v", err)
	}
	wrong, _ := NewClient(WithEndpoint(c.endpoint), WithToken("wrong-token"), WithHTTPClient(c.httpClient))
	if _, err := wrong.DescribeInstance(ctx, &DescribeInstanceRequest{InstanceID: "x"}); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("unauthenticated: %v", err)
	}
	inst, err := cl.CreateInstance(ctx, fixtureCreate())
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.CreateInstance(ctx, fixtureCreate())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != CodeResourceExhausted || len(apiErr.Details) != 1 {
		t.Fatalf("resource_exhausted: %v", err)
	}
	if _, err := cl.RunCommandSync(ctx, inst.CommandEndpoint(), &RunCommandRequest{InstanceID: inst.InstanceID(), TargetContainerName: "main",
		Command: &Command{Command: []string{"true"}}}); CodeOf(err) != CodeFailedPrecondition {
		t.Fatalf("failed_precondition: %v", err)
	}
	if _, err := cl.ListInstances(ctx, &ListInstancesRequest{}); CodeOf(err) != CodeUnavailable {
		t.Fatalf("unavailable: %v", err)
	}
	if _, err := cl.WaitInstanceSync(ctx, &WaitInstanceRequest{InstanceID: inst.InstanceID()}); CodeOf(err) != CodeDeadlineExceeded {
		t.Fatalf("deadline_exceeded from the server: %v", err)
	}
	if err := cl.DestroyInstance(ctx, &DestroyInstanceRequest{InstanceID: inst.InstanceID()}); err != nil {
		t.Fatal(err)
	}
}

func commandMode(t *testing.T, c *cassetteRun) {
	d := c.driver(t, Config{Env: map[string]string{"SECRET": fixtureSecret}})
	req := commandRequest(`printf 'hello\n'; echo "log line" >&2; test "$SECRET" = ` + fixtureSecret + ` && echo secret-ok`)
	req.ResourceSpecs = Specs{{Name: "result"}}
	req.FileSpecs = Specs{{Name: "log"}}
	var logs []string
	res := d.Execute(context.Background(), req, Callbacks{OnLog: func(l string) { logs = append(logs, l) }})
	if res.Status != ResultSuccess || string(res.Outputs[0].Content) != "hello\nsecret-ok\n" || res.Outputs[0].SpecName != "result" ||
		string(res.Outputs[1].Content) != "[stdout]\nhello\nsecret-ok\n\n[stderr]\nlog line\n" || strings.Join(logs, "|") != "log line" || !res.Metadata.Destroyed {
		t.Fatalf("result %+v %q", res, res.Outputs)
	}
}

func commandFailure(t *testing.T, c *cassetteRun) {
	res := c.driver(t, Config{}).Execute(context.Background(), commandRequest("echo 'disk full' >&2; exit 3"), Callbacks{})
	var we *WorkloadError
	if res.Status != ResultError || res.Error != "disk full" || !errors.As(res.Err, &we) || we.ExitCode != 3 || !res.Metadata.Destroyed {
		t.Fatalf("result %+v", res)
	}
}

func bootFailure(t *testing.T, c *cassetteRun) {
	res := c.driver(t, Config{}).Execute(context.Background(), commandRequest("true"), Callbacks{})
	if res.Status != ResultError || CodeOf(res.Err) != CodeInternal || res.Metadata == nil || !res.Metadata.Destroyed {
		t.Fatalf("result %+v", res)
	}
}

func bundleMode(t *testing.T, c *cassetteRun) {
	res := c.driver(t, Config{}).Execute(context.Background(), bundleRequest(testModel, "everything"), Callbacks{})
	out := outputsByName(res.Outputs)
	if res.Status != ResultSuccess || len(res.Outputs) != 8 || string(out["lines.txt"].Content) != "one\ntwo\n" ||
		!strings.Contains(strings.Join(res.Logs, "\n"), "[WARN] w") || !res.Metadata.Destroyed {
		t.Fatalf("result %+v", res)
	}
}

// spilledBundle is 1.8 MiB of seeded noise (1.35 MiB gzipped): too big for one call.
func spilledBundle() string {
	rng := mrand.New(mrand.NewPCG(1, 2))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	noise := make([]byte, 1800<<10)
	for i := range noise {
		noise[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return "const blob = `" + string(noise) + "`;\n" +
		`export const model = { methods: { size: { execute(a, ctx) { ctx.writeResource("s", "len", { len: blob.length }); } } } };`
}

func bundleSpilled(t *testing.T, c *cassetteRun) {
	res := c.driver(t, Config{}).Execute(context.Background(), bundleRequest(spilledBundle(), "size"), Callbacks{})
	if res.Status != ResultSuccess || string(res.Outputs[0].Content) != `{"len":1843200}` || !res.Metadata.Destroyed {
		t.Fatalf("result %+v", res)
	}
	if c.emu != nil && c.emu.Count("RunCommandSync") < 1 {
		t.Fatal("the upload did not spill")
	}
}
