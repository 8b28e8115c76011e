package nsemu

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta"
	"github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta/computev1betaconnect"
	stdlib "github.com/swamp-club/nsdriver/nsemu/gen/namespace/stdlib"
)

type harness struct {
	srv     *Server
	compute computev1betaconnect.ComputeServiceClient
	token   string
}

func start(t *testing.T, opts Options) *harness {
	t.Helper()
	srv, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &harness{srv: srv, token: srv.Token(),
		compute: computev1betaconnect.NewComputeServiceClient(http.DefaultClient, srv.URL(), connect.WithProtoJSON())}
}

func (h *harness) auth(req connect.AnyRequest) { req.Header().Set("Authorization", "Bearer "+h.token) }

func authed[T any](h *harness, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	h.auth(req)
	return req
}

func (h *harness) command(t *testing.T, endpoint string) computev1betaconnect.CommandServiceClient {
	return computev1betaconnect.NewCommandServiceClient(http.DefaultClient, endpoint, connect.WithProtoJSON())
}

func shape() *pb.InstanceShape {
	return &pb.InstanceShape{VirtualCpu: 2, MemoryMegabytes: 4096, MachineArch: "amd64", Os: "linux"}
}

func createReq() *pb.CreateInstanceRequest {
	return &pb.CreateInstanceRequest{
		Shape:      shape(),
		Labels:     []*stdlib.Label{{Name: "nsdriver/managed-by", Value: "nsdriver"}},
		Containers: []*pb.ContainerRequest{{Name: "main", KnownImageId: "builtin:base", Args: []string{"sleep", "infinity"}}},
	}
}

// running creates an instance and waits for RUNNING.
func (h *harness) running(t *testing.T) *pb.DescribeInstanceResponse {
	t.Helper()
	ctx := context.Background()
	resp, err := h.compute.CreateInstance(ctx, authed(h, createReq()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.compute.WaitInstanceSync(ctx, authed(h, &pb.WaitInstanceRequest{InstanceId: resp.Msg.Metadata.InstanceId})); err != nil {
		t.Fatal(err)
	}
	return resp.Msg
}

func code(err error) connect.Code {
	if err == nil {
		return 0
	}
	return connect.CodeOf(err)
}

func TestRequiresToken(t *testing.T) {
	h := start(t, Options{})
	_, err := h.compute.CreateInstance(context.Background(), connect.NewRequest(createReq()))
	if code(err) != connect.CodeUnauthenticated {
		t.Fatalf("got %v, want unauthenticated", err)
	}
}

func TestUnknownFieldRejected(t *testing.T) {
	h := start(t, Options{})
	for _, ct := range []string{"application/json", "application/json; charset=utf-8"} {
		req, _ := http.NewRequest("POST", h.srv.URL()+"/namespace.cloud.compute.v1beta.ComputeService/DescribeInstance",
			strings.NewReader(`{"instanceId":"x","instanceID":"y"}`))
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+h.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), "invalid_argument") || !strings.Contains(string(body), "instanceID") {
			t.Errorf("%s: status %d body %s; want 400 invalid_argument naming the field", ct, resp.StatusCode, body)
		}
	}
}

func TestCreateValidation(t *testing.T) {
	h := start(t, Options{})
	cases := map[string]func(*pb.CreateInstanceRequest){
		"vcpu":          func(r *pb.CreateInstanceRequest) { r.Shape.VirtualCpu = 3 },
		"memory":        func(r *pb.CreateInstanceRequest) { r.Shape.MemoryMegabytes = 3072 },
		"memory-max":    func(r *pb.CreateInstanceRequest) { r.Shape.MemoryMegabytes = 1024 * 1024 },
		"arch":          func(r *pb.CreateInstanceRequest) { r.Shape.MachineArch = "riscv" },
		"no-shape":      func(r *pb.CreateInstanceRequest) { r.Shape = nil },
		"no-name":       func(r *pb.CreateInstanceRequest) { r.Containers[0].Name = "" },
		"both-images":   func(r *pb.CreateInstanceRequest) { r.Containers[0].ImageRef = "x" },
		"no-image":      func(r *pb.CreateInstanceRequest) { r.Containers[0].KnownImageId = "" },
		"label":         func(r *pb.CreateInstanceRequest) { r.Labels[0].Value = "Upper Case" },
		"past-deadline": func(r *pb.CreateInstanceRequest) { r.Deadline = timestamppb.New(time.Now().Add(-time.Minute)) },
	}
	for name, mutate := range cases {
		req := createReq()
		mutate(req)
		if _, err := h.compute.CreateInstance(context.Background(), authed(h, req)); code(err) != connect.CodeInvalidArgument {
			t.Errorf("%s: got %v, want invalid_argument", name, err)
		}
	}
	if live := h.srv.LiveInstances(); len(live) != 0 {
		t.Fatalf("rejected creates left instances: %v", live)
	}
}

func TestLifecycleStreamsEveryState(t *testing.T) {
	h := start(t, Options{BootTime: 100 * time.Millisecond, Grace: 200 * time.Millisecond})
	ctx := context.Background()
	created, err := h.compute.CreateInstance(ctx, authed(h, createReq()))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.Metadata.InstanceId
	if created.Msg.Metadata.Status != pb.InstanceMetadata_PENDING {
		t.Fatalf("status after create %v, want PENDING", created.Msg.Metadata.Status)
	}
	if want := h.srv.URL() + "/instances/" + id; created.Msg.ExtendedMetadata.CommandServiceEndpoint != want {
		t.Fatalf("command endpoint %q, want %q", created.Msg.ExtendedMetadata.CommandServiceEndpoint, want)
	}
	stream, err := h.compute.WaitInstance(ctx, authed(h, &pb.WaitInstanceRequest{InstanceId: id}))
	if err != nil {
		t.Fatal(err)
	}
	var seen []pb.InstanceMetadata_Status
	for stream.Receive() {
		seen = append(seen, stream.Msg().Metadata.Status)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if last := seen[len(seen)-1]; last != pb.InstanceMetadata_RUNNING || len(seen) < 2 {
		t.Fatalf("states %v, want at least one pre-running state then RUNNING", seen)
	}
	if _, err := h.compute.DestroyInstance(ctx, authed(h, &pb.DestroyInstanceRequest{InstanceId: id})); err != nil {
		t.Fatal(err)
	}
	d, err := h.compute.DescribeInstance(ctx, authed(h, &pb.DescribeInstanceRequest{InstanceId: id}))
	if err != nil || (d.Msg.Metadata.Status != pb.InstanceMetadata_DESTROYING && d.Msg.Metadata.Status != pb.InstanceMetadata_DESTROYED) {
		t.Fatalf("after destroy: %v %v, want DESTROYING or DESTROYED", d, err)
	}
	if _, err := h.compute.DestroyInstance(ctx, authed(h, &pb.DestroyInstanceRequest{InstanceId: id})); err != nil {
		t.Fatalf("second destroy: %v, want success", err)
	}
	waitFor(t, func() bool {
		_, err := h.compute.DescribeInstance(ctx, authed(h, &pb.DescribeInstanceRequest{InstanceId: id}))
		return code(err) == connect.CodeNotFound
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within a minute")
}

func TestDeadlineDestroys(t *testing.T) {
	h := start(t, Options{})
	req := createReq()
	req.Deadline = timestamppb.New(time.Now().Add(300 * time.Millisecond))
	created, err := h.compute.CreateInstance(context.Background(), authed(h, req))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.Metadata.InstanceId
	waitFor(t, func() bool { return len(h.srv.LiveInstances()) == 0 })
	d, err := h.compute.DescribeInstance(context.Background(), authed(h, &pb.DescribeInstanceRequest{InstanceId: id}))
	if err != nil || d.Msg.Metadata.DestroyedAt == nil {
		t.Fatalf("describe after deadline: %v %v", d, err)
	}
}

func TestExtendInstance(t *testing.T) {
	h := start(t, Options{})
	inst := h.running(t)
	id := inst.Metadata.InstanceId
	ctx := context.Background()
	want := time.Now().Add(3 * time.Hour).Truncate(time.Second)
	resp, err := h.compute.ExtendInstance(ctx, authed(h, &pb.ExtendInstanceRequest{InstanceId: id, NewDeadline: timestamppb.New(want)}))
	if err != nil || !resp.Msg.NewDeadline.AsTime().Equal(want) {
		t.Fatalf("extend: %v %v", resp, err)
	}
	resp, err = h.compute.ExtendInstance(ctx, authed(h, &pb.ExtendInstanceRequest{InstanceId: id, ExtendBy: durationpb.New(time.Hour)}))
	if err != nil || !resp.Msg.NewDeadline.AsTime().Equal(want.Add(time.Hour)) {
		t.Fatalf("extend by: %v %v", resp, err)
	}
	if _, err := h.compute.ExtendInstance(ctx, authed(h, &pb.ExtendInstanceRequest{InstanceId: id})); code(err) != connect.CodeInvalidArgument {
		t.Fatalf("empty extend: %v", err)
	}
}

func TestListInstancesFiltersAndPages(t *testing.T) {
	h := start(t, Options{})
	ctx := context.Background()
	for i := range 5 {
		req := createReq()
		req.Labels = append(req.Labels, &stdlib.Label{Name: "idx", Value: strconv.Itoa(i % 2)})
		if _, err := h.compute.CreateInstance(ctx, authed(h, req)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	var cursor []byte
	for {
		resp, err := h.compute.ListInstances(ctx, authed(h, &pb.ListInstancesRequest{MaxEntries: 2, PaginationCursor: cursor,
			LabelFilter: []*stdlib.LabelFilterEntry{{Name: "idx", Value: "0", Op: stdlib.LabelFilterEntry_EQUAL}}}))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range resp.Msg.Instances {
			got = append(got, m.InstanceId)
		}
		if cursor = resp.Msg.PaginationCursor; len(cursor) == 0 {
			break
		}
	}
	if len(got) != 3 {
		t.Fatalf("got %d instances with idx=0, want 3", len(got))
	}
	resp, err := h.compute.ListInstances(ctx, authed(h, &pb.ListInstancesRequest{
		LabelFilter: []*stdlib.LabelFilterEntry{{Name: "idx", Value: "0", Op: stdlib.LabelFilterEntry_NOT_EQUAL}}}))
	if err != nil || len(resp.Msg.Instances) != 2 {
		t.Fatalf("NOT_EQUAL: %v %v", resp, err)
	}
}

func TestQuota(t *testing.T) {
	h := start(t, Options{MaxInstances: 1})
	ctx := context.Background()
	if _, err := h.compute.CreateInstance(ctx, authed(h, createReq())); err != nil {
		t.Fatal(err)
	}
	_, err := h.compute.CreateInstance(ctx, authed(h, createReq()))
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeResourceExhausted {
		t.Fatalf("got %v, want resource_exhausted", err)
	}
	if len(cerr.Details()) != 1 || cerr.Details()[0].Type() != "namespace.cloud.compute.v1beta.ResourceLimitsError" {
		t.Fatalf("details %v, want a ResourceLimitsError", cerr.Details())
	}
	h2 := start(t, Options{MaxVCPU: 4})
	req := createReq()
	req.Shape.VirtualCpu = 8
	req.Shape.MemoryMegabytes = 16384
	if _, err := h2.compute.CreateInstance(ctx, authed(h2, req)); code(err) != connect.CodeResourceExhausted {
		t.Fatalf("vCPU quota: %v", err)
	}
}

func TestSeededIDsRepeat(t *testing.T) {
	ids := func() string {
		h := start(t, Options{Seed: 42})
		r, err := h.compute.CreateInstance(context.Background(), authed(h, createReq()))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Metadata.InstanceId
	}
	if a, b := ids(), ids(); a != b {
		t.Fatalf("seeded ids differ: %s %s", a, b)
	}
}

func TestCloseKillsEverything(t *testing.T) {
	srv, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, token: srv.Token(), compute: computev1betaconnect.NewComputeServiceClient(http.DefaultClient, srv.URL(), connect.WithProtoJSON())}
	inst := h.running(t)
	pidFile := t.TempDir() + "/pid"
	go func() {
		cmd := h.command(t, inst.ExtendedMetadata.CommandServiceEndpoint)
		_, _ = cmd.RunCommandSync(context.Background(), authed(h, &pb.RunCommandRequest{InstanceId: inst.Metadata.InstanceId, TargetContainerName: "main",
			Command: &pb.Command{Command: []string{"sh", "-c", "sleep 60 & echo $! > " + pidFile + "; wait"}}}))
	}()
	pid := readPID(t, pidFile)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !alive(pid) })
	if _, err := os.Stat(srv.opts.Dir); !os.IsNotExist(err) {
		t.Fatalf("emulator dir %s still exists", srv.opts.Dir)
	}
}

func TestUnimplemented(t *testing.T) {
	h := start(t, Options{})
	_, err := h.compute.SuspendInstance(context.Background(), authed(h, &pb.SuspendInstanceRequest{InstanceId: "x"}))
	if code(err) != connect.CodeUnimplemented {
		t.Fatalf("got %v, want unimplemented", err)
	}
}

func TestNewHandlerEmbeds(t *testing.T) {
	srv, err := NewHandler(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	defer srv.Close()
	srv.SetURL(ts.URL)
	h := &harness{srv: srv, token: srv.Token(), compute: computev1betaconnect.NewComputeServiceClient(http.DefaultClient, ts.URL, connect.WithProtoJSON())}
	inst := h.running(t)
	if !strings.HasPrefix(inst.ExtendedMetadata.CommandServiceEndpoint, ts.URL+"/instances/") {
		t.Fatalf("command endpoint %q is not under %s", inst.ExtendedMetadata.CommandServiceEndpoint, ts.URL)
	}
	resp, err := h.command(t, inst.ExtendedMetadata.CommandServiceEndpoint).RunCommandSync(context.Background(), authed(h, &pb.RunCommandRequest{
		InstanceId: inst.Metadata.InstanceId, TargetContainerName: "main", Command: &pb.Command{Command: []string{"echo", "embedded"}}}))
	if err != nil || string(resp.Msg.Stdout) != "embedded\n" {
		t.Fatalf("%v %v", resp, err)
	}
}

// Over TLS the emulator speaks HTTP/2, and many calls share a connection.
func TestTLSServesHTTP2(t *testing.T) {
	srv, err := Start(Options{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.URL(), "https://127.0.0.1:") || len(srv.CertPEM()) == 0 {
		t.Fatalf("url %s", srv.URL())
	}
	hc := srv.Client()
	compute := computev1betaconnect.NewComputeServiceClient(hc, srv.URL(), connect.WithProtoJSON())
	h := &harness{srv: srv, token: srv.Token(), compute: compute}
	resp := h.running(t)
	req, _ := http.NewRequest("POST", srv.URL()+"/namespace.cloud.compute.v1beta.ComputeService/DescribeInstance",
		strings.NewReader(`{"instanceId":"`+resp.Metadata.InstanceId+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+srv.Token())
	r, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.ProtoMajor != 2 || r.StatusCode != 200 {
		t.Fatalf("proto %s status %d", r.Proto, r.StatusCode)
	}
}
