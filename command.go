package nsdriver

import (
	"context"
	"fmt"
	"strings"
)

// runCommandMode runs methodArgs.run with `sh -c` and turns stdout into the
// resource output, per the contract's command mode.
func (x *execution) runCommandMode(ctx context.Context) ([]DriverOutput, error) {
	script := x.req.MethodArgs["run"].(string)
	rc := x.remote(workloadEnv(x.d.cfg.Env, x.req.TraceHeaders))
	argv := []string{"sh", "-c", script}
	if len(script) > maxArgBytes {
		// Too long for one argument: it travels as an uploaded file.
		archive, err := packFiles([]file{{name: "run.sh", data: []byte(script)}})
		if err != nil {
			return nil, err
		}
		plan, err := planUpload(x.runID, archive, `sh "$d/run.sh"`, rc.env)
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
	if out.exitCode != 0 {
		msg := strings.TrimRight(out.stderr.String(), "\n")
		if msg == "" {
			msg = fmt.Sprintf("exited with code %d", out.exitCode)
		}
		return nil, &WorkloadError{ExitCode: out.exitCode, Message: msg}
	}
	specName := x.req.ResourceSpecs.FirstName()
	if specName == "" {
		specName = x.req.MethodName
	}
	outputs := []DriverOutput{{
		Kind: "pending", SpecName: specName, Name: specName, Type: OutputResource, Content: out.stdout.Bytes(),
		Metadata: map[string]any{"exitCode": out.exitCode, "command": script, "durationMs": out.duration.Milliseconds(), "stderr": out.stderr.String()},
	}}
	if fileSpec := x.req.FileSpecs.FirstName(); fileSpec != "" {
		var parts []string
		if out.stdout.Len() > 0 {
			parts = append(parts, "[stdout]\n"+out.stdout.String())
		}
		if out.stderr.Len() > 0 {
			parts = append(parts, "[stderr]\n"+out.stderr.String())
		}
		outputs = append(outputs, DriverOutput{
			Kind: "pending", SpecName: fileSpec, Name: fileSpec, Type: OutputFile, Content: []byte(strings.Join(parts, "\n")),
		})
	}
	return outputs, nil
}
