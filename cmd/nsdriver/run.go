package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/swamp-club/nsdriver"
)

// nsdriver run: a shell command in a fresh VM, output streamed.

const runUsage = `Usage: nsdriver run [flags] -- ARGS…

Runs a shell command in a fresh Namespace VM and destroys the VM. One ARG
is the script, verbatim; several are each quoted and joined. Remote stdout
and stderr stream here as they arrive. Exit code: the command's; 124 on
timeout; 125 when the driver or the API failed; 2 on usage errors; 130
when interrupted. With no token anywhere, runs on the built-in emulator.

Flags:
`

func cmdRun(ctx context.Context, args []string, stdin *os.File, stdout, stderr io.Writer) (int, error) {
	c := newCommon("run", runUsage, nil)
	c.fs.BoolVar(&c.quiet, "quiet", false, "no driver progress on stderr")
	sendStdin := c.fs.Bool("stdin", false, "send local stdin to the command (read to its end, at most 16 MiB; not interactive)")
	c.fs.BoolVar(sendStdin, "i", false, "short for --stdin")
	if done, err := c.parse(args, stdout); done || err != nil {
		return 0, err
	}
	if c.fs.NArg() == 0 {
		return 0, usageError{"run needs a command: nsdriver run [flags] -- ARGS…\n\n" + runUsage + flagList(c.fs)}
	}
	input, err := runInput(stdin, *sendStdin)
	if err != nil {
		return 0, err
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
	if input == nil && stdinHasData(stdin) {
		c.notice(stderr, "stdin is not sent to the command; pass -i to send it")
	}
	d, err := nsdriver.New(cfg, nsdriver.WithClientOptions(nsdriver.WithTokenSource(tgt.token)), nsdriver.WithLogger(c.logger(stderr, true, tgt)))
	if err != nil {
		return 0, err
	}
	tgt.use(d)
	defer shutdown(d)
	req := nsdriver.ExecutionRequest{ProtocolVersion: 1, ModelType: "nsdriver/cli", ModelID: "cli", MethodName: "run",
		MethodArgs: map[string]any{"run": shellJoin(c.fs.Args())}, Stdin: input}
	res := d.Execute(ctx, req, nsdriver.Callbacks{
		OnLog:    c.workloadLine(stderr),
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
	case errors.Is(res.Err, nsdriver.ErrInvalidRequest):
		return 0, usageError{res.Error} // e.g. stdin over the cap, a shape Namespace refused
	}
	fmt.Fprintf(stderr, "nsdriver: %s\n", res.Error)
	return exitDriver, nil
}

// runInput is stdin for -i: refused when it is a terminal (the API has no
// interactive stdin; /dev/null is a character device but no terminal), and
// when it is a file over the cap, before anything runs.
func runInput(stdin *os.File, send bool) (io.Reader, error) {
	if !send {
		return nil, nil
	}
	info, err := stdin.Stat()
	if err != nil {
		return nil, usageError{fmt.Sprintf("-i: cannot read stdin: %v", err)}
	}
	if isTerminal(stdin) {
		return nil, usageError{"-i sends stdin to the command, but stdin is a terminal: it is not interactive; pipe or redirect the input (e.g. `seq 5 | nsdriver run -i -- wc -l`)"}
	}
	if info.Mode().IsRegular() && info.Size() > nsdriver.MaxStdinBytes {
		return nil, usageError{fmt.Sprintf("-i: stdin is %d MiB, over the %d MiB cap", info.Size()>>20, nsdriver.MaxStdinBytes>>20)}
	}
	return stdin, nil
}

// stdinHasData reports whether stdin is a pipe or a non-empty file, whose
// input someone may expect the command to read.
func stdinHasData(stdin *os.File) bool {
	info, err := stdin.Stat()
	if err != nil {
		return false
	}
	return info.Mode()&os.ModeNamedPipe != 0 || (info.Mode().IsRegular() && info.Size() > 0)
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
