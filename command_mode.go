package nsdriver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// maxLineBytes bounds one stderr line held in memory; a longer one is
// handed over in pieces.
const maxLineBytes = 1 << 20

// runCommandMode runs methodArgs.run with `sh -c` and turns stdout into the
// resource output, per the contract's command mode.
func (x *execution) runCommandMode(ctx context.Context) error {
	script := x.req.MethodArgs["run"].(string)
	env := x.env()
	argv := []string{"sh", "-c", script}
	if len(script) > maxArgBytes {
		// Too long for one argument: it travels as an uploaded file.
		archive, err := packFiles([]file{{name: "run.sh", data: []byte(script)}})
		if err != nil {
			return err
		}
		plan, err := planUpload(x.runID, archive, `sh "$d/run.sh"`, env)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
		}
		if err := x.runSpills(ctx, plan, env); err != nil {
			return err
		}
		argv = plan.final
	}
	out, err := x.stream(ctx, argv, env, x.cb.OnStdout)
	if err != nil {
		return err
	}
	if out.exitCode != 0 {
		msg := strings.TrimRight(out.stderr.String(), "\n")
		if msg == "" {
			msg = fmt.Sprintf("exited with code %d", out.exitCode)
		}
		return &WorkloadError{ExitCode: out.exitCode, Message: msg}
	}
	specName := x.req.ResourceSpecs.FirstName()
	if specName == "" {
		specName = x.req.MethodName
	}
	x.res.Status = StatusSuccess
	x.res.Outputs = append(x.res.Outputs, DriverOutput{
		Kind: "pending", SpecName: specName, Name: specName, Type: OutputResource, Content: out.stdout.Bytes(),
		Metadata: map[string]any{"exitCode": out.exitCode, "command": script, "durationMs": out.duration.Milliseconds(), "stderr": out.stderr.String()},
	})
	if fileSpec := x.req.FileSpecs.FirstName(); fileSpec != "" {
		var parts []string
		if out.stdout.Len() > 0 {
			parts = append(parts, "[stdout]\n"+out.stdout.String())
		}
		if out.stderr.Len() > 0 {
			parts = append(parts, "[stderr]\n"+out.stderr.String())
		}
		x.res.Outputs = append(x.res.Outputs, DriverOutput{
			Kind: "pending", SpecName: fileSpec, Name: fileSpec, Type: OutputFile, Content: []byte(strings.Join(parts, "\n")),
		})
	}
	return nil
}

// env is the workload environment: the config's env and the trace headers.
// It travels in the API's env fields, never in shell text.
func (x *execution) env() []EnvironmentVariable {
	var env []EnvironmentVariable
	for _, k := range sortedKeys(x.d.cfg.Env) {
		env = append(env, EnvironmentVariable{Name: k, Value: x.d.cfg.Env[k]})
	}
	for _, k := range sortedKeys(x.req.TraceHeaders) {
		switch strings.ToLower(k) {
		case "traceparent", "tracestate":
			env = append(env, EnvironmentVariable{Name: strings.ToUpper(k), Value: x.req.TraceHeaders[k]})
		}
	}
	return env
}

// runSpills sends the parts of an upload that do not fit in the final call.
func (x *execution) runSpills(ctx context.Context, plan uploadPlan, env []EnvironmentVariable) error {
	for i, argv := range plan.spills {
		resp, err := x.d.client.RunCommandSync(ctx, x.inst.CommandEndpoint(), x.commandRequest(argv, env))
		if err != nil {
			return fmt.Errorf("uploading part %d of %d: %w", i+1, len(plan.spills)+1, err)
		}
		if resp.ExitCode != 0 {
			return fmt.Errorf("uploading part %d of %d failed (exit %d): %s; the image needs sh, base64 and tar",
				i+1, len(plan.spills)+1, resp.ExitCode, strings.TrimSpace(string(resp.Stderr)))
		}
	}
	return nil
}

func (x *execution) commandRequest(argv []string, env []EnvironmentVariable) *RunCommandRequest {
	return &RunCommandRequest{InstanceID: x.inst.InstanceID(), TargetContainerName: containerName,
		Command: &Command{Command: argv, EnvVars: env}}
}

// streamed is what one streamed command produced.
type streamed struct {
	stdout, stderr bytes.Buffer
	exitCode       int
	duration       time.Duration
}

// stream runs argv, capturing stdout and passing its chunks to onStdout,
// and passing stderr lines to OnLog and the result's logs, as they arrive.
// Stdout over maxOutputBytes stops the command with ErrOutputTooLarge.
func (x *execution) stream(ctx context.Context, argv []string, env []EnvironmentVariable, onStdout func([]byte)) (*streamed, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	limit := x.d.cfg.MaxOutputBytes
	out := &streamed{}
	lines := lineSplitter{emit: x.logLine, max: maxLineBytes}
	x.d.logger.Info("running", "instance", x.inst.InstanceID())
	began := time.Now()
	code, err := x.d.client.RunCommand(ctx, x.inst.CommandEndpoint(), x.commandRequest(argv, env), func(s OutputStream, data []byte) {
		switch s {
		case Stdout:
			if int64(out.stdout.Len()+len(data)) > limit {
				cancel(fmt.Errorf("%w: stdout passed %d bytes; raise maxOutputBytes or write less", ErrOutputTooLarge, limit))
				return
			}
			out.stdout.Write(data)
			if onStdout != nil {
				onStdout(data)
			}
		default:
			if int64(out.stderr.Len()) < limit {
				out.stderr.Write(data[:min(int64(len(data)), limit-int64(out.stderr.Len()))])
			}
			lines.write(data)
		}
	})
	lines.flush()
	out.exitCode, out.duration = code, time.Since(began)
	if cause := context.Cause(ctx); errors.Is(cause, ErrOutputTooLarge) {
		return nil, cause
	}
	if err != nil {
		return nil, fmt.Errorf("running the command: %w", err)
	}
	return out, nil
}

func (x *execution) logLine(line string) {
	x.res.Logs = append(x.res.Logs, line)
	if x.cb.OnLog != nil {
		x.cb.OnLog(line)
	}
}

// lineSplitter turns chunks into lines; a partial last line waits for
// flush. With max set, an overlong line is emitted in pieces of that size.
type lineSplitter struct {
	buf  []byte
	max  int
	emit func(string)
}

func (l *lineSplitter) write(data []byte) {
	l.buf = append(l.buf, data...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(strings.TrimSuffix(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
	}
	for l.max > 0 && len(l.buf) >= l.max {
		l.emit(string(l.buf[:l.max]))
		l.buf = l.buf[l.max:]
	}
}

func (l *lineSplitter) flush() {
	if len(l.buf) > 0 {
		l.emit(strings.TrimSuffix(string(l.buf), "\r"))
		l.buf = nil
	}
}
