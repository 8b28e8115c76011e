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
	"flag"
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
  nsdriver run [flags] -- ARGS…         run a shell command in a fresh VM
  nsdriver exec [flags] [FILE|-]        run an ExecutionRequest; print the result JSON
  nsdriver fleet --size N [flags] -- ARGS…  keep N VMs each running the command once
  nsdriver fleet --max N --demand CMD [flags] -- ARGS…  start VMs as work waits
  nsdriver swamp-demand [flags]         count swamp steps waiting for a fleet's workers
  nsdriver cleanup [flags]              destroy leftover nsdriver instances
  nsdriver emulator [flags]             serve the local emulator; print export lines
  nsdriver schema                       print the driverConfig JSON schema
  nsdriver version [--json]

Run 'nsdriver <command> --help' for a command's flags.
`

var commands = []string{"run", "exec", "fleet", "swamp-demand", "cleanup", "emulator", "schema", "version", "help"}

// Exit codes (docs/cli.md).
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
func run(ctx context.Context, args []string, stdin *os.File, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return exitUsage
	}
	var err error
	code := exitOK
	switch args[0] {
	case "run":
		code, err = cmdRun(ctx, args[1:], stdin, stdout, stderr)
	case "exec":
		code, err = cmdExec(ctx, args[1:], stdin, stdout, stderr)
	case "cleanup":
		code, err = cmdCleanup(ctx, args[1:], stdout, stderr)
	case "fleet":
		code, err = cmdFleet(ctx, args[1:], stdout, stderr)
	case "swamp-demand":
		err = cmdSwampDemand(ctx, args[1:], stdout)
	case "emulator":
		err = cmdEmulator(ctx, args[1:], stdout, stderr)
	case "schema":
		err = cmdSchema(args[1:], stdout)
	case "version":
		err = cmdVersion(args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, topUsage)
	default:
		msg := fmt.Sprintf("unknown command %q", args[0])
		if s := nsdriver.ClosestName(args[0], commands); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		err = usageError{msg + "\n\n" + topUsage}
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

func cmdSchema(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("nsdriver schema", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if done, err := parseFlags(fs, args, stdout, "Usage: nsdriver schema\n\nPrints the JSON schema of driverConfig (draft 2020-12).\n"); done || err != nil {
		return err
	}
	_, err := stdout.Write(nsdriver.Schema())
	return err
}

func cmdVersion(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("nsdriver version", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "print the versions as a JSON object")
	if done, err := parseFlags(fs, args, stdout, "Usage: nsdriver version [--json]\n\nFlags:\n"); done || err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(map[string]string{"version": nsdriver.Version, "driverType": nsdriver.DriverType, "denoVersion": nsdriver.DenoVersion})
	}
	_, err := fmt.Fprintf(stdout, "nsdriver %s (driver %s, Deno %s)\n", nsdriver.Version, nsdriver.DriverType, nsdriver.DenoVersion)
	return err
}
