// Command nsdriver runs swamp workloads on ephemeral Namespace VMs.
//
//	nsdriver run [flags] -- ARGS…     run a shell command in a fresh VM
//	nsdriver exec [flags] < req.json  run an ExecutionRequest, print the result JSON
//	nsdriver cleanup [flags]          destroy leftover nsdriver instances
//	nsdriver emulator [flags]         serve the local Namespace emulator
//	nsdriver schema | version
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/swamp-club/nsdriver"
)

const topUsage = `nsdriver runs swamp workloads on ephemeral Namespace VMs.

Usage:
  nsdriver run [flags] -- ARGS…       run a shell command in a fresh VM
  nsdriver exec [flags] < request.json  run an ExecutionRequest; print the result JSON
  nsdriver cleanup [--older-than D] [--include-pool] [--dry-run]
  nsdriver emulator [--listen ADDR] [--token T] [--boot D] [--rtt D]
  nsdriver schema                      print the driverConfig JSON schema
  nsdriver version

Run 'nsdriver <command> --help' for a command's flags.
`

// Exit codes of interfaces.md.
const (
	exitOK          = 0
	exitResultError = 1
	exitUsage       = 2
	exitTimeout     = 124
	exitDriver      = 125
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole CLI, for tests and main.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return exitUsage
	}
	var err error
	code := exitOK
	switch args[0] {
	case "run":
		code, err = cmdRun(ctx, args[1:], stdout, stderr)
	case "exec":
		code, err = cmdExec(ctx, args[1:], stdin, stdout, stderr)
	case "cleanup":
		code, err = cmdCleanup(ctx, args[1:], stdout, stderr)
	case "emulator":
		err = cmdEmulator(ctx, args[1:], stdout, stderr)
	case "schema":
		var schema []byte
		if schema, err = nsdriver.Schema(); err == nil {
			_, err = stdout.Write(schema)
		}
	case "version":
		fmt.Fprintf(stdout, "nsdriver %s (driver %s, Deno %s)\n", nsdriver.Version, nsdriver.DriverType, nsdriver.DenoVersion)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, topUsage)
	default:
		err = usageError{fmt.Sprintf("unknown command %q\n\n%s", args[0], topUsage)}
	}
	if err == nil {
		return code
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "nsdriver: %s\n", strings.TrimRight(ue.msg, "\n"))
		return exitUsage
	}
	fmt.Fprintf(stderr, "nsdriver: %s\n", nsdriver.UserMessage(err))
	return exitDriver
}

// shutdown destroys a warm pool's idle VMs, if any, on the way out.
func shutdown(d *nsdriver.Driver) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = d.Shutdown(ctx)
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

func cmdExec(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	c := newCommon("exec")
	progress := c.fs.Bool("progress", false, "driver progress on stderr")
	writeResult := func(res nsdriver.ExecutionResult) {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(res)
	}
	failed := func(code int, msg string) (int, error) {
		writeResult(nsdriver.ExecutionResult{Status: nsdriver.ResultError, Error: msg, Outputs: []nsdriver.DriverOutput{}, Logs: []string{}})
		fmt.Fprintf(stderr, "nsdriver: %s\n", msg)
		return code, nil
	}
	if err := c.parse(args); err != nil {
		var ue usageError
		errors.As(err, &ue)
		return failed(exitUsage, ue.msg)
	}
	cfg, err := c.config()
	if err != nil {
		return failed(exitUsage, err.Error())
	}
	req, err := nsdriver.DecodeExecutionRequest(stdin)
	if err != nil {
		return failed(exitUsage, err.Error()+"; send one ExecutionRequest JSON document on stdin")
	}
	tgt, err := c.connect(&cfg, false, stderr, "exec")
	if err != nil {
		return failed(exitUsage, nsdriver.UserMessage(err))
	}
	defer tgt.close()
	d, err := nsdriver.New(cfg, nsdriver.WithLogger(c.logger(stderr, *progress)))
	if err != nil {
		return failed(exitUsage, nsdriver.UserMessage(err))
	}
	defer shutdown(d)
	res := d.Execute(ctx, req, nsdriver.Callbacks{OnLog: c.workloadLine(stderr)})
	writeResult(res)
	if res.Status != nsdriver.ResultSuccess {
		return exitResultError, nil
	}
	return exitOK, nil
}
