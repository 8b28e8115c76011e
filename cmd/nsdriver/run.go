package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/swamp-club/nsdriver"
)

// nsdriver run: a shell command in a fresh VM, output streamed.

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	c := newCommon("run")
	if err := c.parse(args); err != nil {
		return 0, err
	}
	if c.fs.NArg() == 0 {
		return 0, usageError{"run needs a command: nsdriver run [flags] -- ARGS…\n\n" + c.usage()}
	}
	cfg, err := c.config()
	if err != nil {
		return 0, err
	}
	tgt, err := c.connect(&cfg, true, stderr, "run")
	if err != nil {
		return 0, err
	}
	defer tgt.close()
	d, err := nsdriver.New(cfg, nsdriver.WithLogger(c.logger(stderr, true)))
	if err != nil {
		return 0, err
	}
	defer shutdown(d)
	logLine := c.workloadLine(stderr)
	req := nsdriver.ExecutionRequest{ProtocolVersion: 1, ModelType: "nsdriver/cli", ModelID: "cli", MethodName: "run",
		MethodArgs: map[string]any{"run": shellJoin(c.fs.Args())}}
	res := d.Execute(ctx, req, nsdriver.Callbacks{
		OnLog:    logLine,
		OnStdout: func(b []byte) { _, _ = stdout.Write(b) },
	})
	if res.Status == nsdriver.ResultSuccess {
		return exitOK, nil
	}
	var we *nsdriver.WorkloadError
	switch {
	case errors.As(res.Err, &we):
		return we.ExitCode, nil // its stderr already streamed
	case errors.Is(res.Err, nsdriver.ErrTimeout):
		fmt.Fprintf(stderr, "nsdriver: %s\n", res.Error)
		return exitTimeout, nil
	case ctx.Err() != nil:
		fmt.Fprintf(stderr, "nsdriver: interrupted; %s\n", res.Error)
		return exitInterrupted, nil
	}
	fmt.Fprintf(stderr, "nsdriver: %s\n", res.Error)
	return exitDriver, nil
}

// shellJoin makes the script for `run`: one argument verbatim, several each
// single-quoted and joined by spaces.
func shellJoin(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(quoted, " ")
}
