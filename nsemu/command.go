package nsemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	pb "github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta"
	"github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta/computev1betaconnect"
)

// Linux's limits on what execve takes: one argument (with its NUL) and all
// arguments plus the environment, with their pointers.
const (
	maxArgBytes  = 131072 - 1
	maxExecBytes = 2 << 20
)

type commandService struct {
	computev1betaconnect.UnimplementedCommandServiceHandler
	s *Server
}

// process is one running command, in its own process group.
type process struct {
	cmd  *exec.Cmd
	once sync.Once
	done chan struct{} // closed when the command and its output are finished
}

func (p *process) kill() {
	p.once.Do(func() {
		if p.cmd.Process != nil {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
	})
}

type chunk struct {
	stream pb.RunCommandResponse_Stream
	data   []byte
}

// prepare resolves the target container and checks the command; it starts
// nothing.
func (s *Server) prepare(ctx context.Context, req *pb.RunCommandRequest) (*instance, *exec.Cmd, error) {
	if id, _ := ctx.Value(endpointInstanceKey{}).(string); id != "" && req.InstanceId != "" && id != req.InstanceId {
		return nil, nil, invalid("instance_id %q does not match this command endpoint (%s)", req.InstanceId, id)
	} else if req.InstanceId == "" {
		req.InstanceId = id
	}
	argv := req.GetCommand().GetCommand()
	if len(argv) == 0 {
		return nil, nil, invalid("command.command (the argv) is empty")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, err := s.lookup(req.InstanceId)
	if err != nil {
		return nil, nil, err
	}
	switch st := inst.meta.Status; {
	case st == pb.InstanceMetadata_PENDING || st == pb.InstanceMetadata_CREATING:
		// One message for both: which of the two it is depends on timers.
		return nil, nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("instance %s is still starting, not RUNNING", req.InstanceId))
	case st != pb.InstanceMetadata_RUNNING:
		return nil, nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("instance %s is %s, not RUNNING", req.InstanceId, st))
	}
	var ctr *container
	for _, c := range inst.containers {
		if c.name == req.TargetContainerName || (req.TargetContainerName == "" && len(inst.containers) == 1) {
			ctr = c
		}
	}
	if ctr == nil {
		return nil, nil, connect.NewError(connect.CodeNotFound,
			fmt.Errorf("container %q not found in instance %s", req.TargetContainerName, req.InstanceId))
	}
	env := append([]string{"PATH=" + ctr.path, "HOME=" + filepath.Join(ctr.dir, "home"), "TMPDIR=" + filepath.Join(ctr.dir, "tmp"), tagEnv(inst.dir)}, ctr.env...)
	for _, e := range req.Command.EnvVars {
		env = append(env, e.Name+"="+e.Value)
	}
	if err := checkExecLimits(argv, env); err != nil {
		return nil, nil, err
	}
	path, err := lookPath(argv[0], ctr.path)
	if err != nil {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Dir: ctr.dir, SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	if cwd := req.Command.Cwd; cwd != "" {
		if !filepath.IsAbs(cwd) {
			cwd = filepath.Join(ctr.dir, cwd)
		}
		if st, err := os.Stat(cwd); err != nil || !st.IsDir() {
			return nil, nil, invalid("cwd %q does not exist in the container", req.Command.Cwd)
		}
		cmd.Dir = cwd
	}
	return inst, cmd, nil
}

// lookPath finds argv[0] on the image's PATH, not the emulator's.
func lookPath(name, path string) (string, error) {
	if filepath.IsAbs(name) || filepath.Base(name) != name {
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		candidate := filepath.Join(dir, name)
		if st, err := os.Stat(candidate); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return candidate, nil
		}
	}
	return "", fmt.Errorf("%q: executable file not found in the image's PATH", name)
}

func checkExecLimits(argv, env []string) error {
	total := 0
	for i, a := range argv {
		if len(a) > maxArgBytes {
			return invalid("argument %d is %d bytes; Linux takes at most %d bytes per argument (E2BIG)", i, len(a), maxArgBytes)
		}
		total += len(a) + 1 + 8
	}
	for _, e := range env {
		if len(e)+1 > maxArgBytes+1 {
			return invalid("an environment entry is %d bytes; Linux takes at most %d (E2BIG)", len(e), maxArgBytes)
		}
		total += len(e) + 1 + 8
	}
	if total > maxExecBytes {
		return invalid("arguments and environment take %d bytes; Linux takes at most %d in all (E2BIG)", total, maxExecBytes)
	}
	return nil
}

// run starts the command and hands each output chunk to emit as it is read.
// It returns the exit code (128+signal when killed). The process group dies
// when ctx ends, the instance is destroyed, or the command exits.
func (s *Server) run(ctx context.Context, inst *instance, cmd *exec.Cmd, env []string, emit func(chunk) error) (int, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, connect.NewError(connect.CodeInternal, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return 0, connect.NewError(connect.CodeInternal, err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	p := &process{cmd: cmd, done: make(chan struct{})}
	defer close(p.done)

	s.mu.Lock()
	if gone(inst.meta.Status) || s.closed {
		s.mu.Unlock()
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return 0, connect.NewError(connect.CodeFailedPrecondition, errors.New("instance is being destroyed"))
	}
	start := time.Now()
	startErr := cmd.Start()
	if startErr == nil {
		inst.procs[p] = struct{}{}
	}
	s.mu.Unlock()
	outW.Close()
	errW.Close()
	if startErr != nil {
		outR.Close()
		errR.Close()
		return 0, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("starting %q: %w", cmd.Args[0], startErr))
	}
	stopWatch := context.AfterFunc(ctx, p.kill)
	defer stopWatch()
	defer func() {
		p.kill()
		s.mu.Lock()
		delete(inst.procs, p)
		s.mu.Unlock()
	}()

	chunks := make(chan chunk)
	var readers sync.WaitGroup
	for _, r := range []struct {
		f      *os.File
		stream pb.RunCommandResponse_Stream
	}{{outR, pb.RunCommandResponse_STDOUT}, {errR, pb.RunCommandResponse_STDERR}} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer r.f.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := r.f.Read(buf)
				if n > 0 {
					chunks <- chunk{r.stream, bytes.Clone(buf[:n])}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	waited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		// Background children die with the command, so the pipes close.
		p.kill()
		waited <- err
	}()
	go func() { readers.Wait(); close(chunks) }()

	var emitErr error
	for c := range chunks {
		if emitErr == nil {
			if emitErr = emit(c); emitErr != nil {
				p.kill()
			}
		}
	}
	waitErr := <-waited
	elapsed := time.Since(start)
	code := exitCode(cmd.ProcessState, waitErr)
	s.mu.Lock()
	s.commands = append(s.commands, CommandRun{InstanceID: inst.meta.InstanceId, Argv0: cmd.Args[0], Argv: cmd.Args, EnvNames: env, Start: start, Duration: elapsed, ExitCode: code})
	s.mu.Unlock()
	if emitErr != nil {
		return code, emitErr
	}
	if ctx.Err() != nil {
		return code, connect.NewError(contextCode(ctx.Err()), ctx.Err())
	}
	return code, nil
}

// envNames are the names of the variables a request sets (their values may
// be secrets, and are not kept).
func envNames(req *pb.RunCommandRequest) []string {
	var names []string
	for _, e := range req.GetCommand().GetEnvVars() {
		names = append(names, e.Name)
	}
	return names
}

func exitCode(st *os.ProcessState, err error) int {
	if st == nil {
		return -1
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

func (c *commandService) RunCommand(ctx context.Context, req *connect.Request[pb.RunCommandRequest], stream *connect.ServerStream[pb.RunCommandResponse]) error {
	inst, cmd, err := c.s.prepare(ctx, req.Msg)
	if err != nil {
		return err
	}
	code, err := c.s.run(ctx, inst, cmd, envNames(req.Msg), func(ch chunk) error {
		return stream.Send(&pb.RunCommandResponse{Stream: ch.stream, Data: ch.data})
	})
	if err != nil {
		return err
	}
	return stream.Send(&pb.RunCommandResponse{ExitStatus: &pb.RunCommandResponse_ExitStatus{ExitCode: int32(code)}})
}

func (c *commandService) RunCommandSync(ctx context.Context, req *connect.Request[pb.RunCommandRequest]) (*connect.Response[pb.RunCommandSyncResponse], error) {
	inst, cmd, err := c.s.prepare(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	code, err := c.s.run(ctx, inst, cmd, envNames(req.Msg), func(ch chunk) error {
		if ch.stream == pb.RunCommandResponse_STDOUT {
			stdout.Write(ch.data)
		} else {
			stderr.Write(ch.data)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.RunCommandSyncResponse{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: int32(code)}), nil
}
