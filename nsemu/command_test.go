package nsemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta"
)

// CommandService: output streaming, env, isolation, preconditions and the
// processes behind each instance.

// The command prints "b" only once the client has received "a" (a file the
// test creates on receipt): output held back would leave it waiting.
func TestRunCommandStreamsAsProduced(t *testing.T) {
	h := start(t, Options{})
	inst := h.running(t)
	cmd := h.command(t, inst.ExtendedMetadata.CommandServiceEndpoint)
	seen := t.TempDir() + "/a-seen"
	script := `printf a; i=0; while [ ! -e '` + seen + `' ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done
		[ -e '` + seen + `' ] || { echo "a was not received while the command ran" >&2; exit 9; }
		printf b; echo err >&2; exit 3`
	stream, err := cmd.RunCommand(context.Background(), authed(h, &pb.RunCommandRequest{
		InstanceId: inst.Metadata.InstanceId, TargetContainerName: "main",
		Command: &pb.Command{Command: []string{"sh", "-c", script}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	var stdout []string
	var stderr string
	exit := int32(-1)
	for stream.Receive() {
		m := stream.Msg()
		switch {
		case m.ExitStatus != nil:
			exit = m.ExitStatus.ExitCode
		case m.Stream == pb.RunCommandResponse_STDOUT:
			stdout = append(stdout, string(m.Data))
			if string(m.Data) == "a" {
				_ = os.WriteFile(seen, nil, 0o600)
			}
		case m.Stream == pb.RunCommandResponse_STDERR:
			stderr += string(m.Data)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(stdout, "|") != "a|b" || stderr != "err\n" || exit != 3 {
		t.Fatalf("want stdout [a b], stderr \"err\\n\", exit 3; got stdout %q, stderr %q, exit %d", stdout, stderr, exit)
	}
}

func TestRunCommandEnvAndIsolation(t *testing.T) {
	h := start(t, Options{})
	req := createReq()
	req.Containers[0].EnvVars = []*pb.EnvironmentVariable{{Name: "FROM_CONTAINER", Value: "c"}}
	created, err := h.compute.CreateInstance(context.Background(), authed(h, req))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.Metadata.InstanceId
	if _, err := h.compute.WaitInstanceSync(context.Background(), authed(h, &pb.WaitInstanceRequest{InstanceId: id})); err != nil {
		t.Fatal(err)
	}
	cmd := h.command(t, created.Msg.ExtendedMetadata.CommandServiceEndpoint)
	resp, err := cmd.RunCommandSync(context.Background(), authed(h, &pb.RunCommandRequest{
		InstanceId: id, TargetContainerName: "main",
		Command: &pb.Command{Command: []string{"sh", "-c", `echo "$FROM_CONTAINER $FROM_CMD"; echo "$HOME"; echo "$TMPDIR"; pwd`},
			EnvVars: []*pb.EnvironmentVariable{{Name: "FROM_CMD", Value: "x y"}}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(resp.Msg.Stdout)), "\n")
	if lines[0] != "c x y" || !strings.Contains(lines[1], id) || !strings.Contains(lines[2], id) || !strings.Contains(lines[3], id) {
		t.Fatalf("output %q: want env from container and command, HOME/TMPDIR/cwd private to %s", lines, id)
	}
}

func TestRunCommandPreconditions(t *testing.T) {
	h := start(t, Options{BootTime: time.Hour})
	ctx := context.Background()
	created, err := h.compute.CreateInstance(ctx, authed(h, createReq()))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.Metadata.InstanceId
	cmd := h.command(t, created.Msg.ExtendedMetadata.CommandServiceEndpoint)
	run := func(target string, argv ...string) error {
		_, err := cmd.RunCommandSync(ctx, authed(h, &pb.RunCommandRequest{InstanceId: id, TargetContainerName: target, Command: &pb.Command{Command: argv}}))
		return err
	}
	if err := run("main", "true"); code(err) != connect.CodeFailedPrecondition {
		t.Fatalf("booting instance: %v, want failed_precondition", err)
	}
	h2 := start(t, Options{})
	inst := h2.running(t)
	cmd = h2.command(t, inst.ExtendedMetadata.CommandServiceEndpoint)
	id = inst.Metadata.InstanceId
	h = h2
	if err := run("nope", "true"); code(err) != connect.CodeNotFound {
		t.Fatalf("missing container: %v, want not_found", err)
	}
	if err := run("main", "echo", strings.Repeat("x", 131072)); code(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "per argument") {
		t.Fatalf("oversized argument: %v", err)
	}
	big := make([]string, 0, 20)
	for range 20 {
		big = append(big, strings.Repeat("y", 120<<10))
	}
	if err := run("main", append([]string{"echo"}, big...)...); code(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "in all") {
		t.Fatalf("oversized argv: %v", err)
	}
	if err := run("main", "definitely-not-a-binary"); code(err) != connect.CodeInvalidArgument {
		t.Fatalf("missing binary: %v", err)
	}
}

func TestImagePath(t *testing.T) {
	h := start(t, Options{Images: map[string]string{"builtin:base": "/nonexistent"}})
	inst := h.running(t)
	cmd := h.command(t, inst.ExtendedMetadata.CommandServiceEndpoint)
	_, err := cmd.RunCommandSync(context.Background(), authed(h, &pb.RunCommandRequest{
		InstanceId: inst.Metadata.InstanceId, TargetContainerName: "main", Command: &pb.Command{Command: []string{"sh", "-c", "true"}}}))
	if code(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "image's PATH") {
		t.Fatalf("got %v; want sh missing from the image", err)
	}
}

func TestDestroyKillsProcesses(t *testing.T) {
	h := start(t, Options{})
	inst := h.running(t)
	id := inst.Metadata.InstanceId
	cmd := h.command(t, inst.ExtendedMetadata.CommandServiceEndpoint)
	pidFile := t.TempDir() + "/pid"
	done := make(chan error, 1)
	go func() {
		_, err := cmd.RunCommandSync(context.Background(), authed(h, &pb.RunCommandRequest{
			InstanceId: id, TargetContainerName: "main",
			Command: &pb.Command{Command: []string{"sh", "-c", "sleep 60 & echo $! > " + pidFile + "; wait"}}}))
		done <- err
	}()
	pid := readPID(t, pidFile)
	if _, err := h.compute.DestroyInstance(context.Background(), authed(h, &pb.DestroyInstanceRequest{InstanceId: id})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("command still running a minute after destroy")
	}
	waitFor(t, func() bool { return !alive(pid) })
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	var pid int
	waitFor(t, func() bool {
		b, err := os.ReadFile(file)
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			return false
		}
		_, err = fmt.Sscan(string(b), &pid)
		return err == nil
	})
	return pid
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	// A zombie still answers kill 0; check its state.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !strings.Contains(string(b), ") Z ")
}

func TestCancelKillsProcess(t *testing.T) {
	h := start(t, Options{})
	inst := h.running(t)
	cmd := h.command(t, inst.ExtendedMetadata.CommandServiceEndpoint)
	pidFile := t.TempDir() + "/pid"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		stream, err := cmd.RunCommand(ctx, authed(h, &pb.RunCommandRequest{InstanceId: inst.Metadata.InstanceId, TargetContainerName: "main",
			Command: &pb.Command{Command: []string{"sh", "-c", "echo $$ > " + pidFile + "; sleep 60"}}}))
		if err == nil {
			for stream.Receive() {
			}
		}
	}()
	pid := readPID(t, pidFile)
	cancel()
	<-done
	waitFor(t, func() bool { return !alive(pid) })
}

// The emulator writes output chunks without protojson; protojson must read
// them back as the same message, and fall back for anything else.
func TestOutputChunkEncodingMatchesProtojson(t *testing.T) {
	codec := strictJSON{name: "json"}
	for _, msg := range []*pb.RunCommandResponse{
		{Stream: pb.RunCommandResponse_STDOUT, Data: []byte("hello\n")},
		{Stream: pb.RunCommandResponse_STDERR, Data: []byte{0, 0xff, '"', '\\', 0xfe}},
		{Stream: pb.RunCommandResponse_STDOUT, Data: bytes.Repeat([]byte{0xfb}, 32<<10)},
	} {
		fast, err := codec.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		var back pb.RunCommandResponse
		if err := protojson.Unmarshal(fast, &back); err != nil || !proto.Equal(&back, msg) {
			t.Fatalf("%s read back as %v (%v)", fast, &back, err)
		}
		slow, _ := protojson.Marshal(msg)
		var a, b any
		_ = json.Unmarshal(fast, &a)
		_ = json.Unmarshal(slow, &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("fast %s, protojson %s", fast, slow)
		}
	}
}

// A command that left its process group (setsid, as a detached worker
// does) still dies with its instance.
func TestDestroyKillsDetachedProcesses(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid here")
	}
	h := start(t, Options{})
	inst := h.running(t)
	id := inst.Metadata.InstanceId
	cmd := h.command(t, inst.ExtendedMetadata.CommandServiceEndpoint)
	pidFile := t.TempDir() + "/pid"
	if _, err := cmd.RunCommandSync(context.Background(), authed(h, &pb.RunCommandRequest{
		InstanceId: id, TargetContainerName: "main",
		// The call waits for the pid, written once the child has its own
		// session: the call's group, killed when the call ends, no longer
		// holds it.
		Command: &pb.Command{Command: []string{"sh", "-c", "setsid sh -c 'echo $$ > " + pidFile + "; exec sleep 60' > /dev/null 2>&1 < /dev/null &\n" +
			"while [ ! -s " + pidFile + " ]; do sleep 0.01; done"}}})); err != nil {
		t.Fatal(err)
	}
	pid := readPID(t, pidFile)
	if !alive(pid) {
		t.Fatal("the detached command ended with its call; want it running until the instance is destroyed")
	}
	if _, err := h.compute.DestroyInstance(context.Background(), authed(h, &pb.DestroyInstanceRequest{InstanceId: id})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !alive(pid) })
}
