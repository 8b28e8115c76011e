package nsemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta"
)

func TestFaults(t *testing.T) {
	h := start(t, Options{Faults: []Fault{
		{Method: "DescribeInstance", Nth: 2, Count: 2, Code: connect.CodeUnavailable},
		{Method: "Boot", Nth: 2},
		{Method: "WaitInstance", Nth: 2, CutAfter: 1},
	}})
	ctx := context.Background()
	inst := h.running(t)
	id := inst.Metadata.InstanceId
	var codes []connect.Code
	for range 4 {
		_, err := h.compute.DescribeInstance(ctx, authed(h, &pb.DescribeInstanceRequest{InstanceId: id}))
		codes = append(codes, code(err))
	}
	if codes[0] != 0 || codes[1] != connect.CodeUnavailable || codes[2] != connect.CodeUnavailable || codes[3] != 0 {
		t.Fatalf("codes %v: want the 2nd and 3rd calls unavailable", codes)
	}
	// The second boot fails: WaitInstance ends with internal.
	created, err := h.compute.CreateInstance(ctx, authed(h, createReq()))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := h.compute.WaitInstance(ctx, authed(h, &pb.WaitInstanceRequest{InstanceId: created.Msg.Metadata.InstanceId}))
	if err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
	}
	if code(stream.Err()) != connect.CodeInternal {
		t.Fatalf("failed boot: %v, want internal", stream.Err())
	}
	// The second WaitInstance is cut after one message.
	stream, err = h.compute.WaitInstance(ctx, authed(h, &pb.WaitInstanceRequest{InstanceId: id}))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for stream.Receive() {
		n++
	}
	if n != 1 || stream.Err() == nil {
		t.Fatalf("cut stream: %d messages, err %v; want 1 and an error", n, stream.Err())
	}
}

func TestFaultDelayAndRTT(t *testing.T) {
	h := start(t, Options{RTT: 50 * time.Millisecond})
	h.srv.InjectFault(Fault{Method: "ListInstances", Delay: 100 * time.Millisecond})
	began := time.Now()
	if _, err := h.compute.ListInstances(context.Background(), authed(h, &pb.ListInstancesRequest{})); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < 150*time.Millisecond {
		t.Fatalf("call took %v; want at least RTT + delay", took)
	}
	calls := h.srv.Calls()
	if len(calls) != 1 || calls[0].Method != "ListInstances" || calls[0].End.Sub(calls[0].Start) < 150*time.Millisecond {
		t.Fatalf("call log %+v", calls)
	}
}

func TestFaultDropAndMidStreamError(t *testing.T) {
	h := start(t, Options{Faults: []Fault{
		{Method: "CreateInstance", Drop: true},
		{Method: "RunCommand", CutAfter: 1, Code: connect.CodeInternal, Message: "mid-stream failure"},
	}})
	ctx := context.Background()
	if _, err := h.compute.CreateInstance(ctx, authed(h, createReq())); err == nil || code(err) == connect.CodeUnauthenticated {
		t.Fatalf("dropped create: %v", err)
	}
	if live := h.srv.LiveInstances(); len(live) != 0 {
		t.Fatalf("a dropped create made instances: %v", live)
	}
	inst := h.running(t)
	stream, err := h.command(t, inst.ExtendedMetadata.CommandServiceEndpoint).RunCommand(ctx, authed(h, &pb.RunCommandRequest{
		InstanceId: inst.Metadata.InstanceId, TargetContainerName: "main",
		Command: &pb.Command{Command: []string{"sh", "-c", "echo one; sleep 0.2; echo two; sleep 5"}}}))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for stream.Receive() {
		n++
	}
	if n != 1 || code(stream.Err()) != connect.CodeInternal || !strings.Contains(stream.Err().Error(), "mid-stream failure") {
		t.Fatalf("%d messages, err %v; want one, then internal", n, stream.Err())
	}
}

// A timed cut drops a stream that sends nothing; the command on it dies
// with it, while what it started in a session of its own goes on until the
// instance is destroyed.
func TestFaultTimedCut(t *testing.T) {
	h := start(t, Options{Faults: []Fault{{Method: "RunCommand", Count: -1, CutAfterTime: 200 * time.Millisecond}}})
	ctx := context.Background()
	inst := h.running(t)
	dir := t.TempDir()
	marker, pidFile := filepath.Join(dir, "alive"), filepath.Join(dir, "pid")
	stream, err := h.command(t, inst.ExtendedMetadata.CommandServiceEndpoint).RunCommand(ctx, authed(h, &pb.RunCommandRequest{
		InstanceId: inst.Metadata.InstanceId, TargetContainerName: "main",
		Command: &pb.Command{Command: []string{"sh", "-c",
			"setsid sh -c 'echo $$ >" + pidFile + "; while :; do touch " + marker + "; sleep 0.05; done' </dev/null >/dev/null 2>&1 & sleep 30"}}}))
	if err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
		t.Fatal("the command printed nothing, yet a message came")
	}
	if stream.Err() == nil {
		t.Fatal("want the stream cut, but it ended cleanly")
	}
	// The detached loop still runs: the marker is renewed after the cut.
	_ = os.Remove(marker)
	waitFor(t, func() bool { _, err := os.Stat(marker); return err == nil })
	b, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.compute.DestroyInstance(ctx, authed(h, &pb.DestroyInstanceRequest{InstanceId: inst.Metadata.InstanceId})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !processRuns(pid) })
}

// processRuns reports whether pid is a live process (not a zombie).
func processRuns(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(after, "Z") && !strings.HasPrefix(after, "X")
}
