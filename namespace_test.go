package nsdriver

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

func startEmu(t *testing.T, opts nsemu.Options) (*nsemu.Server, *Client) {
	t.Helper()
	emu := startTestEmu(t, opts)
	c, err := NewClient(WithEndpoint(emu.URL()), WithToken(emu.Token()),
		WithRetryPolicy(RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	return emu, c
}

func testCreateRequest() *CreateInstanceRequest {
	return &CreateInstanceRequest{
		Shape:             &InstanceShape{VirtualCPU: 2, MemoryMegabytes: 4096, MachineArch: "amd64", OS: "linux"},
		DocumentedPurpose: "nsdriver client test",
		Labels:            []Label{{Name: "nsdriver/managed-by", Value: "nsdriver"}},
		Deadline:          NewTimestamp(time.Now().Add(10 * time.Minute)),
		Containers:        []ContainerRequest{{Name: "main", KnownImageID: "builtin:base", Args: []string{"sleep", "infinity"}}},
	}
}

func TestClientAgainstEmulator(t *testing.T) {
	emu, c := startEmu(t, nsemu.Options{BootTime: 50 * time.Millisecond})
	ctx := context.Background()
	inst, err := c.CreateInstance(ctx, testCreateRequest())
	if err != nil {
		t.Fatal(err)
	}
	id := inst.InstanceID()
	var statuses []InstanceStatus
	meta, err := c.WaitInstance(ctx, &WaitInstanceRequest{InstanceID: id}, func(u *WaitInstanceResponse) {
		statuses = append(statuses, u.Metadata.Status)
	})
	if err != nil || meta.Status != StatusRunning || len(statuses) < 2 {
		t.Fatalf("wait: %v %v, statuses %v", meta, err, statuses)
	}
	if ws, err := c.WaitInstanceSync(ctx, &WaitInstanceRequest{InstanceID: id}); err != nil || ws.Metadata.Status != StatusRunning {
		t.Fatalf("wait sync: %v %v", ws, err)
	}
	d, err := c.DescribeInstance(ctx, &DescribeInstanceRequest{InstanceID: id})
	if err != nil || d.Metadata.LabelValue("nsdriver/managed-by") != "nsdriver" || d.Metadata.Shape.MemoryMegabytes != 4096 {
		t.Fatalf("describe: %+v %v", d, err)
	}
	var stdout, stderr strings.Builder
	code, err := c.RunCommand(ctx, inst.CommandEndpoint(), &RunCommandRequest{
		InstanceID: id, TargetContainerName: "main",
		Command: &Command{Command: []string{"sh", "-c", `printf "$GREETING"; echo oops >&2; exit 4`},
			EnvVars: []EnvironmentVariable{{Name: "GREETING", Value: "hello"}}},
	}, func(s OutputStream, b []byte) {
		if s == StreamStdout {
			stdout.Write(b)
		} else {
			stderr.Write(b)
		}
	})
	if err != nil || code != 4 || stdout.String() != "hello" || stderr.String() != "oops\n" {
		t.Fatalf("run: code %d out %q err %q %v", code, stdout.String(), stderr.String(), err)
	}
	sync, err := c.RunCommandSync(ctx, inst.CommandEndpoint(), &RunCommandRequest{InstanceID: id, TargetContainerName: "main",
		Command: &Command{Command: []string{"sh", "-c", "printf '\\000\\377'"}}})
	if err != nil || string(sync.Stdout) != "\x00\xff" || sync.ExitCode != 0 {
		t.Fatalf("run sync: %+v %v", sync, err)
	}
	newDeadline := time.Now().Add(time.Hour).Truncate(time.Second)
	ext, err := c.ExtendInstance(ctx, &ExtendInstanceRequest{InstanceID: id, NewDeadline: NewTimestamp(newDeadline)})
	if err != nil || !ext.NewDeadline.Equal(newDeadline) {
		t.Fatalf("extend: %v %v", ext, err)
	}
	if _, err := c.CreateInstance(ctx, testCreateRequest()); err != nil {
		t.Fatal(err)
	}
	req := &ListInstancesRequest{MaxEntries: 1, LabelFilter: []LabelFilterEntry{{Name: "nsdriver/managed-by", Value: "nsdriver", Op: LabelFilterEqual}}}
	page, err := c.ListInstances(ctx, req)
	if err != nil || len(page.Instances) != 1 || len(page.PaginationCursor) == 0 {
		t.Fatalf("list page: %+v %v", page, err)
	}
	all, err := c.ListAllInstances(ctx, req)
	if err != nil || len(all) != 2 {
		t.Fatalf("list all: %d %v", len(all), err)
	}
	for _, m := range all {
		if err := c.DestroyInstance(ctx, &DestroyInstanceRequest{InstanceID: m.InstanceID, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	if live := emu.LiveInstances(); len(live) != 0 {
		t.Fatalf("live after destroy: %v", live)
	}
	if d, err := c.DescribeInstance(ctx, &DescribeInstanceRequest{InstanceID: id}); err != nil || !d.Metadata.Status.Gone() {
		t.Fatalf("describe after destroy: %+v %v", d, err)
	}
}

func TestClientErrorsFromEmulator(t *testing.T) {
	_, c := startEmu(t, nsemu.Options{MaxInstances: 1})
	ctx := context.Background()
	bad := testCreateRequest()
	bad.Shape.VirtualCPU = 3
	if _, err := c.CreateInstance(ctx, bad); CodeOf(err) != CodeInvalidArgument || !strings.HasPrefix(UserMessage(err), "Invalid Namespace config: ") {
		t.Fatalf("invalid: %v", err)
	}
	if _, err := c.CreateInstance(ctx, testCreateRequest()); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateInstance(ctx, testCreateRequest())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != CodeResourceExhausted || len(apiErr.Details) != 1 || !strings.Contains(apiErr.Details[0].Text, "resource limits") {
		t.Fatalf("quota: %v", err)
	}
	if _, err := c.DescribeInstance(ctx, &DescribeInstanceRequest{InstanceID: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("not found: %v", err)
	}
	wrong, _ := NewClient(WithEndpoint(c.Endpoint()), WithToken("wrong"))
	if _, err := wrong.ListInstances(ctx, &ListInstancesRequest{}); !errors.Is(err, ErrUnauthenticated) || UserMessage(err) != "Namespace auth failed. Check your API token." {
		t.Fatalf("auth: %v", err)
	}
}

func TestWaitInstanceRetriesCutStream(t *testing.T) {
	emu, c := startEmu(t, nsemu.Options{BootTime: 50 * time.Millisecond})
	emu.InjectFault(nsemu.Fault{Method: "WaitInstance", CutAfter: 1})
	inst, err := c.CreateInstance(context.Background(), testCreateRequest())
	if err != nil {
		t.Fatal(err)
	}
	// WaitInstance is idempotent: the cut stream is repeated and succeeds.
	if m, err := c.WaitInstance(context.Background(), &WaitInstanceRequest{InstanceID: inst.InstanceID()}, nil); err != nil || m.Status != StatusRunning {
		t.Fatalf("after a cut: %v %v", m, err)
	}
	if n := emu.Count("WaitInstance"); n != 2 {
		t.Fatalf("%d WaitInstance calls, want 2", n)
	}
	// RunCommand is not: a cut stream is an error.
	emu.InjectFault(nsemu.Fault{Method: "RunCommand", CutAfter: -1})
	_, err = c.RunCommand(context.Background(), inst.CommandEndpoint(), &RunCommandRequest{InstanceID: inst.InstanceID(),
		TargetContainerName: "main", Command: &Command{Command: []string{"true"}}}, nil)
	if !errors.Is(err, ErrStreamTruncated) || emu.Count("RunCommand") != 1 {
		t.Fatalf("cut RunCommand: %v after %d calls", err, emu.Count("RunCommand"))
	}
}

func TestJSONMapping(t *testing.T) {
	req := ExtendInstanceRequest{InstanceID: "i", ExtendBy: ProtoDuration(1500 * time.Millisecond),
		NewDeadline: NewTimestamp(time.Date(2026, 4, 7, 23, 28, 45, 0, time.FixedZone("x", 3600)))}
	b, _ := json.Marshal(req)
	if string(b) != `{"instanceId":"i","extendBy":"1.5s","newDeadline":"2026-04-07T22:28:45Z"}` {
		t.Fatalf("encoded %s", b)
	}
	b, _ = json.Marshal(ListInstancesRequest{MaxEntries: 5, PaginationCursor: Bytes{0xfb, 0xff}})
	if string(b) != `{"paginationCursor":"+/8=","maxEntries":"5"}` {
		t.Fatalf("encoded %s", b)
	}
	if b, _ := json.Marshal(CreateInstanceRequest{}); string(b) != `{}` {
		t.Fatalf("zero values not omitted: %s", b)
	}
	var resp struct {
		A, B, C, D Bytes
		N, M       Int64
		S          InstanceStatus
		T          OutputStream
		Ts         Timestamp
		Dur        ProtoDuration
	}
	in := `{"A":"+/8=","B":"+/8","C":"-_8=","D":"-_8","N":"12","M":34,"S":3,"T":"STDERR","Ts":"2026-04-07T23:28:45.123Z","Dur":"600s","unknown":{"x":1}}`
	if err := json.Unmarshal([]byte(in), &resp); err != nil {
		t.Fatal(err)
	}
	for _, got := range []Bytes{resp.A, resp.B, resp.C, resp.D} {
		if string(got) != "\xfb\xff" {
			t.Errorf("bytes %x", got)
		}
	}
	if resp.N != 12 || resp.M != 34 || resp.S != StatusRunning || resp.T != StreamStderr ||
		resp.Ts.Nanosecond() != 123e6 || time.Duration(resp.Dur) != 10*time.Minute {
		t.Fatalf("%+v", resp)
	}
	var st InstanceStatus
	if err := json.Unmarshal([]byte(`99`), &st); err != nil || st != "99" {
		t.Fatalf("unknown enum number: %v %q", err, st)
	}
	if err := json.Unmarshal([]byte(`"600"`), new(ProtoDuration)); err == nil {
		t.Fatal("duration without suffix accepted")
	}
}
