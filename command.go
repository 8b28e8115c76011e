package nsdriver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// maxErrorStderr is how much of a failed command's stderr its error keeps.
const maxErrorStderr = 4096

// runCommandMode runs methodArgs.run with `sh -c` and turns stdout into the
// resource output, per the contract's command mode.
func (x *execution) runCommandMode(ctx context.Context, stdin func(context.Context) ([]byte, error)) ([]DriverOutput, error) {
	script := x.req.MethodArgs["run"].(string)
	rc := x.remote(workloadEnv(x.d.cfg.Env, x.req.TraceHeaders))
	argv := []string{"sh", "-c", script}
	if len(script) > maxArgBytes || stdin != nil {
		// Too long for one argument, or with input: it travels as files.
		files, then := []file{{name: "run.sh", data: []byte(script)}}, `sh "$d/run.sh"`
		if stdin != nil {
			data, err := stdin(ctx)
			if err != nil {
				return nil, err
			}
			files, then = append(files, file{name: "stdin", data: data}), then+` < "$d/stdin"`
		}
		parts, _, err := packFiles(files)
		if err != nil {
			return nil, err
		}
		plan, err := planUpload(x.runID, parts, then, rc.env)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
		}
		if err := rc.spill(ctx, plan); err != nil {
			return nil, err
		}
		argv = plan.final
	}
	out, err := rc.stream(ctx, argv, outputSinks{onStdout: x.cb.OnStdout, onLine: x.logLine, limit: x.d.cfg.MaxOutputBytes})
	if err != nil {
		return nil, err
	}
	x.res.Metadata.ExitCode = &out.exitCode
	if out.exitCode != 0 {
		// The tail of stderr: the end is where a failure says why.
		msg := tail(strings.TrimRight(out.stderr.String(), "\n"), maxErrorStderr)
		if msg == "" {
			msg = fmt.Sprintf("exited with code %d", out.exitCode)
		}
		return nil, &WorkloadError{ExitCode: out.exitCode, Message: msg}
	}
	specName := x.req.ResourceSpecs.FirstName()
	if specName == "" {
		specName = x.req.MethodName
	}
	outputs := []DriverOutput{x.withStdout(DriverOutput{
		Kind: "pending", SpecName: specName, Name: specName, Type: OutputResource,
		Metadata: commandMetadata(script, out),
	}, &out.stdout)}
	if fileSpec := x.req.FileSpecs.FirstName(); fileSpec != "" {
		outputs = append(outputs, DriverOutput{
			Kind: "pending", SpecName: fileSpec, Name: fileSpec, Type: OutputFile, Content: commandLog(out),
		})
	}
	return outputs, nil
}

// readStdin reads the request's Stdin in the background, beside the boot.
// wait returns it, or the context's error when ctx ends first: a pipe that
// never closes must not hold off the timeout or the caller's cancel. stop
// ends the reading before Execute returns: a reader with SetReadDeadline (an
// *os.File on a pipe the runtime polls) is interrupted and waited for;
// another is left to finish its blocked Read on its own, since nothing can
// interrupt it.
func (x *execution) readStdin() (wait func(context.Context) ([]byte, error), stop func()) {
	done := make(chan struct{})
	var data []byte
	var err error
	go func() {
		defer close(done)
		data, err = io.ReadAll(io.LimitReader(x.req.Stdin, MaxStdinBytes+1))
		switch {
		case err != nil:
			err = fmt.Errorf("reading stdin: %w", err)
		case len(data) > MaxStdinBytes:
			err = fmt.Errorf("%w: stdin is over %d MiB; pass a file to the command another way", ErrInvalidRequest, MaxStdinBytes>>20)
		}
	}()
	wait = func(ctx context.Context) ([]byte, error) {
		select {
		case <-done:
			return data, err
		case <-ctx.Done():
			return nil, fmt.Errorf("reading stdin: %w", ctx.Err())
		}
	}
	stop = func() {
		select {
		case <-done:
			return
		default:
		}
		d, ok := x.req.Stdin.(interface{ SetReadDeadline(time.Time) error })
		if !ok || d.SetReadDeadline(time.Unix(1, 0)) != nil {
			return
		}
		<-done
		_ = d.SetReadDeadline(time.Time{}) // the caller's file as it was
	}
	return wait, stop
}

// maxEchoedCommand is how much of the script metadata.command repeats; a
// longer one keeps a prefix, and commandBytes says how long it was.
const maxEchoedCommand = 4096

func commandMetadata(script string, out *streamed) map[string]any {
	m := map[string]any{"exitCode": out.exitCode, "command": script, "durationMs": out.duration.Milliseconds(), "stderr": out.stderr.String()}
	if len(script) > maxEchoedCommand {
		cut := maxEchoedCommand
		for cut > 0 && !utf8.RuneStart(script[cut]) {
			cut-- // never split a character
		}
		m["command"], m["commandBytes"] = script[:cut]+"…", len(script)
	}
	return m
}

// commandLog is the log file output: "[stdout]\n…" and "[stderr]\n…",
// joined by a newline, each only when non-empty; built with one copy.
func commandLog(out *streamed) []byte {
	var b bytes.Buffer
	b.Grow(out.stdout.Len() + out.stderr.Len() + 20)
	if out.stdout.Len() > 0 {
		b.WriteString("[stdout]\n")
		for _, piece := range out.stdout.Pieces() {
			b.Write(piece)
		}
	}
	if out.stderr.Len() > 0 {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("[stderr]\n")
		b.Write(out.stderr.Bytes())
	}
	return b.Bytes()
}
