package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/swamp-club/nsdriver"
)

// nsdriver fleet: keep N VMs each running a command once (swamp workers,
// CI runners, any agent that dials out), replacing each as it exits.

const fleetUsage = `Usage: nsdriver fleet --size N [--total M] [flags] -- ARGS…
       nsdriver fleet --max N [--min K] --demand CMD [--poll D] [--ready RE] [flags] -- ARGS…

Keeps N fresh Namespace VMs each running the command once; when one
exits, its VM is destroyed and another takes its place, until M commands
have run (default: no limit). On demand, every --poll it runs CMD here
(sh -c), which prints how many jobs wait for a worker, and starts a VM for
each waiting job that no starting VM covers: a VM covers one job from its
launch until a line of its output matches --ready (or --start-grace
passes). Never more than --max alive, at least --min; nothing running is
stopped to scale down. Output streams here, each line prefixed with
its VM's slot. A command has no time limit unless --timeout is given.
Secrets: --env-from-host NAME passes a variable of this shell to the
command, never in argv, output, logs or the VM's stored spec.
Failures never loop: failed runs (a non-zero exit or a lost VM) and runs
shorter than 10 s back off the next launch (1 s doubling to 5 min), and
--max-failures failed runs in a row stop launching; launches are paced at
--max-launch-rate a minute after a first burst of --size. Each VM's end
line says how its command ended: its exit code, interrupted, timed out
(--timeout), or lost. SIGINT/SIGTERM destroys every VM (exit 130). Exit 0
after M commands; 125 when the fleet cannot work (--max-failures failed
runs in a row, quoted in the last lines; 3 failed boots in a row; API
errors for 2 minutes).

Flags:
`

// noLimitIfZero maps the CLI's 0 ("no limit") to the Go API's negative
// (its 0 means the default).
func noLimitIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// fleetKeys are the driverConfig keys a fleet uses.
var fleetKeys = []string{"token", "tokenFile", "region", "endpoint", "machineType", "arch", "bare", "image"}

func cmdFleet(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	c := newCommon("fleet", fleetUsage, fleetKeys)
	c.fs.Var(c.env, "env", "command environment `KEY=VALUE` (repeatable; values never logged)")
	c.fs.Var(c.labels, "label", "extra instance label `KEY=VALUE` (repeatable)")
	c.fs.BoolVar(&c.quiet, "quiet", false, "no progress lines on stderr")
	size := c.fs.Int("size", 0, "VMs running at once (a ceiling: the workspace quota may allow fewer)")
	maxVMs := c.fs.Int("max", 0, "on demand: VMs alive at most")
	minVMs := c.fs.Int("min", 0, "on demand: VMs kept alive at least")
	demand := c.fs.String("demand", "", "on demand: a shell `command` printing how many jobs wait (e.g. nsdriver swamp-demand …)")
	poll := c.fs.Duration("poll", nsdriver.DefaultFleetPoll, "on demand: how often to run --demand")
	demandTimeout := c.fs.Duration("demand-timeout", nsdriver.DefaultFleetDemandTimeout, "on demand: --demand is killed after this")
	ready := c.fs.String("ready", "", "on demand: a `regexp` matching the output line by which a command says it is ready (swamp: its enrollment line)")
	startGrace := c.fs.Duration("start-grace", nsdriver.DefaultFleetStartGrace, "on demand: a VM covers a job at most this long without --ready")
	total := c.fs.Int("total", 0, "commands to run in all (0: no limit)")
	timeout := c.fs.Duration("timeout", 0, "limit on each command, e.g. 2h (0: none)")
	maxFailures := c.fs.Int("max-failures", nsdriver.DefaultFleetMaxFailures, "failed runs in a row that stop launching (exit 125 once running commands finish)")
	launchRate := c.fs.Float64("max-launch-rate", nsdriver.DefaultFleetLaunchesPerMinute, "launches a minute after a first burst of --size (0: no ceiling)")
	var fromHost []string
	c.fs.Func("env-from-host", "pass this shell's variable `NAME` to the command (repeatable; the value stays secret)", func(name string) error {
		fromHost = append(fromHost, name)
		return nil
	})
	if done, err := c.parse(args, stdout); done || err != nil {
		return 0, err
	}
	if *launchRate == 0 {
		*launchRate = -1 // the CLI's "no ceiling" is the Go API's negative
	}
	opts := nsdriver.FleetOptions{Total: *total, Script: shellJoin(c.fs.Args()), Timeout: *timeout,
		MaxFailures: noLimitIfZero(*maxFailures), LaunchesPerMinute: *launchRate}
	switch {
	case c.fs.NArg() == 0:
		return 0, usageError{"fleet needs a command after --: nsdriver fleet --size N [--total M] -- ARGS…\n\n" + fleetUsage + flagList(c.fs)}
	case *demand != "":
		if *size != 0 || *maxVMs < 1 {
			return 0, usageError{"--demand goes with --max N (and --min K), not --size: nsdriver fleet --max N --demand CMD -- ARGS…"}
		}
		opts.Min, opts.Max, opts.Poll, opts.DemandTimeout, opts.StartGrace = *minVMs, *maxVMs, *poll, *demandTimeout, *startGrace
		opts.Demand = hostDemand(*demand)
		if *ready != "" {
			re, err := regexp.Compile(*ready)
			if err != nil {
				return 0, usageError{fmt.Sprintf("--ready %q is not a regular expression: %v", *ready, err)}
			}
			opts.Ready = re
		}
	case demandOnly(c.fs) != "":
		return 0, usageError{"--" + demandOnly(c.fs) + " goes with --demand CMD and --max N; a fixed fleet is --size N"}
	case *size < 1:
		return 0, usageError{"fleet needs --size N, or --max N with --demand CMD: nsdriver fleet --size N [--total M] -- ARGS…\n\n" + fleetUsage + flagList(c.fs)}
	default:
		opts.Size = *size
	}
	cfg, err := c.config()
	if err != nil {
		return 0, err
	}
	for _, name := range fromHost {
		value, ok := os.LookupEnv(name)
		if !ok {
			return 0, usageError{fmt.Sprintf("--env-from-host %s: %s is not set in this environment", name, name)}
		}
		if cfg.Env == nil {
			cfg.Env = map[string]string{}
		}
		cfg.Env[name] = value
	}
	tgt, err := c.connect(&cfg, false, stderr, "fleet")
	if err != nil {
		return 0, err
	}
	defer tgt.close()
	opts.OnOutput = c.fleetOutput(stdout, stderr)
	fleet, err := nsdriver.NewFleet(cfg, opts, nsdriver.WithClientOptions(nsdriver.WithTokenSource(tgt.token)), nsdriver.WithLogger(c.logger(stderr, true, tgt)))
	if err != nil {
		if errors.Is(err, nsdriver.ErrInvalidRequest) || errors.Is(err, nsdriver.ErrInvalidConfig) {
			return 0, usageError{err.Error()}
		}
		return 0, err
	}
	tgt.use(fleet)
	err = fleet.Run(ctx)
	switch {
	case err == nil:
		return exitOK, nil
	case ctx.Err() != nil:
		c.notice(stderr, "interrupted; every fleet VM was destroyed")
		return exitInterrupted, nil
	}
	fmt.Fprintf(stderr, "nsdriver: %s\n", nsdriver.UserMessage(err))
	return exitDriver, nil
}

// demandOnly names a flag given that only a fleet on demand takes.
func demandOnly(fs *flag.FlagSet) string {
	name := ""
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "max", "min", "poll", "demand-timeout", "ready", "start-grace":
			name = f.Name
		}
	})
	return name
}

// hostDemand runs the demand command on this machine with sh -c, in its
// own process group (killed whole when its context ends), and reads the
// one non-negative integer it prints.
func hostDemand(script string) func(context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		cmd := exec.CommandContext(ctx, "sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = time.Second
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		switch {
		case ctx.Err() != nil:
			return 0, errors.New("no answer within --demand-timeout; it was killed")
		case err != nil:
			return 0, fmt.Errorf("%w: %s", err, lastLines(errOut.String(), 3))
		}
		n, err := strconv.Atoi(strings.TrimSpace(out.String()))
		if err != nil || n < 0 {
			return 0, fmt.Errorf("it printed %q, not a count of waiting jobs", lastLines(out.String(), 1))
		}
		return n, nil
	}
}

// fleetOutput writes the commands' lines as they arrive, prefixed with
// their slot (or as JSON lines), one whole line at a time.
func (c *common) fleetOutput(stdout, stderr io.Writer) func(nsdriver.FleetOutput) {
	var mu sync.Mutex
	if c.jsonLogs {
		out := slog.New(slog.NewJSONHandler(stdout, nil)).With("source", "workload")
		errOut := slog.New(slog.NewJSONHandler(stderr, nil)).With("source", "workload")
		return func(o nsdriver.FleetOutput) {
			l := out
			if o.Stream == nsdriver.StreamStderr {
				l = errOut
			}
			l.Info(o.Line, "slot", o.Slot, "instance", o.Instance, "stream", string(o.Stream))
		}
	}
	return func(o nsdriver.FleetOutput) {
		mu.Lock()
		defer mu.Unlock()
		w := stdout
		if o.Stream == nsdriver.StreamStderr {
			w = stderr
		}
		fmt.Fprintf(w, "[slot %d] %s\n", o.Slot, o.Line)
	}
}
