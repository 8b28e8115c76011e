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
		_, err = stdout.Write(nsdriver.Schema())
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
