package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/swamp-club/nsdriver"
	"github.com/swamp-club/nsdriver/nsemu"
	"sigs.k8s.io/yaml"
)

// usageError makes the CLI exit 2 with the message.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// mapFlag collects repeated K=V flags.
type mapFlag map[string]string

func (m mapFlag) String() string { return "" }

func (m mapFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	m[k] = val
	return nil
}

// common holds the flags every driver-using command shares.
type common struct {
	fs         *flag.FlagSet
	configFile string
	quiet      bool
	jsonLogs   bool
	emulator   bool
	env        mapFlag
	labels     mapFlag
}

// configFlags are the kebab-case names of every driverConfig key except the
// maps, with the key they set.
var configFlags = []struct{ flag, key, usage string }{
	{"token", "token", "Namespace API token (never logged)"},
	{"token-file", "tokenFile", "JSON file with a bearer_token field"},
	{"region", "region", "us or eu (default us)"},
	{"endpoint", "endpoint", "API base URL; overrides region"},
	{"machine-type", "machineType", "<vCPU>x<GB>, e.g. 2x4 (default)"},
	{"arch", "arch", "amd64 (default) or arm64"},
	{"timeout", "timeout", "milliseconds or a duration such as 90s (default 10m)"},
	{"duration", "duration", "instance deadline, e.g. 15m (default timeout + 5m)"},
	{"bare", "bare", "true: bare VM (default); false requests Kubernetes"},
	{"image", "image", "command-mode image (default builtin:base)"},
	{"bundle-image", "bundleImage", "bundle-mode image with Deno"},
	{"deno-setup", "denoSetup", "preinstalled (default) or install"},
	{"deno-install-url", "denoInstallUrl", "Deno install script for denoSetup install"},
	{"max-output-bytes", "maxOutputBytes", "cap on captured stdout (default 64 MiB)"},
	{"max-concurrent", "maxConcurrent", "VMs in flight (default 0: no limit)"},
	{"warm-pool", "warmPool", "pre-booted VMs per image (default 0)"},
}

func newCommon(name string) *common {
	c := &common{fs: flag.NewFlagSet("nsdriver "+name, flag.ContinueOnError), env: mapFlag{}, labels: mapFlag{}}
	c.fs.SetOutput(io.Discard)
	for _, f := range configFlags {
		c.fs.String(f.flag, "", f.usage)
	}
	c.fs.Var(c.env, "env", "workload environment KEY=VALUE (repeatable; values never logged)")
	c.fs.Var(c.labels, "label", "extra instance label KEY=VALUE (repeatable)")
	c.fs.StringVar(&c.configFile, "config", "", "driverConfig file, YAML or JSON (flags win)")
	c.fs.BoolVar(&c.quiet, "quiet", false, "no driver progress on stderr")
	c.fs.BoolVar(&c.jsonLogs, "json-logs", false, "stderr as JSON lines (slog keys plus source: workload|driver)")
	c.fs.BoolVar(&c.emulator, "emulator", false, "run on an in-process emulator (commands run on this machine, not in a VM)")
	return c
}

func (c *common) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		return usageError{fmt.Sprintf("%v\n\n%s", err, c.usage())}
	}
	return nil
}

func (c *common) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Flags of %s:\n", c.fs.Name())
	c.fs.VisitAll(func(f *flag.Flag) { fmt.Fprintf(&b, "  --%-18s %s\n", f.Name, f.Usage) })
	return b.String()
}

// config merges the config file and the flags (flags win) and validates the
// result, reporting every problem with its key.
func (c *common) config() (nsdriver.Config, error) {
	merged := map[string]any{}
	if c.configFile != "" {
		data, err := os.ReadFile(c.configFile)
		if err != nil {
			return nsdriver.Config{}, usageError{fmt.Sprintf("reading --config: %v", err)}
		}
		// Validated once below, merged with the flags, so that every
		// problem is reported with its key.
		if err := yaml.Unmarshal(data, &merged); err != nil {
			return nsdriver.Config{}, usageError{fmt.Sprintf("%s is not a YAML or JSON object: %v", c.configFile, err)}
		}
		if merged == nil {
			merged = map[string]any{}
		}
	}
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, f := range configFlags {
		if !set[f.flag] {
			continue
		}
		v := c.fs.Lookup(f.flag).Value.String()
		merged[f.key] = flagValue(f.key, v)
	}
	for key, values := range map[string]mapFlag{"env": c.env, "labels": c.labels} {
		if len(values) == 0 {
			continue
		}
		m, _ := merged[key].(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		for k, v := range values {
			m[k] = v
		}
		merged[key] = m
	}
	cfg, err := nsdriver.ParseConfig(merged)
	if err != nil {
		return cfg, usageError{err.Error()}
	}
	return cfg, nil
}

// flagValue types a flag's text as its config key expects.
func flagValue(key, v string) any {
	switch key {
	case "bare":
		if b, err := strconv.ParseBool(v); err == nil {
			return b
		}
	case "timeout", "maxOutputBytes", "maxConcurrent", "warmPool":
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return v
}

// logger builds stderr's logger: human lines, or JSON with source=driver.
func (c *common) logger(stderr io.Writer, verbose bool) *slog.Logger {
	if c.quiet || !verbose {
		return slog.New(slog.DiscardHandler)
	}
	if c.jsonLogs {
		return slog.New(slog.NewJSONHandler(stderr, nil)).With("source", "driver")
	}
	return slog.New(&humanHandler{w: stderr})
}

// workloadLine writes the workload's stderr lines: verbatim, or as JSON
// lines with source=workload.
func (c *common) workloadLine(stderr io.Writer) func(string) {
	if c.jsonLogs {
		l := slog.New(slog.NewJSONHandler(stderr, nil)).With("source", "workload")
		return func(line string) { l.Info(line) }
	}
	return func(line string) { fmt.Fprintln(stderr, line) }
}

// notice writes one line for the user, even under --quiet: as a JSON
// record with --json-logs, else as "nsdriver: …".
func (c *common) notice(stderr io.Writer, msg string) {
	if c.jsonLogs {
		slog.New(slog.NewJSONHandler(stderr, nil)).Warn(msg, "source", "driver")
		return
	}
	fmt.Fprintln(stderr, "nsdriver: "+msg)
}

// target is where the driver will run: Namespace, or an in-process emulator.
type target struct {
	emu   *nsemu.Server
	close func()
}

// connect decides where to run. With --emulator, or with no token anywhere
// when fallback is allowed, it starts an in-process emulator and points cfg
// at it; otherwise a missing token is an error saying how to fix it.
func (c *common) connect(cfg *nsdriver.Config, allowFallback bool, stderr io.Writer, command string) (*target, error) {
	if !c.emulator {
		_, err := nsdriver.ResolveToken(cfg.Token, cfg.TokenFile)
		if err == nil {
			return &target{close: func() {}}, nil
		}
		if !errors.Is(err, nsdriver.ErrNoToken) {
			return nil, err
		}
		if !allowFallback {
			return nil, usageError{fmt.Sprintf("%s needs a Namespace token: set NAMESPACE_TOKEN, pass --token or --token-file, run `nsc login`, or pass --emulator to use the local emulator", command)}
		}
		c.notice(stderr, "no Namespace token found; using the built-in emulator: the command runs on this machine, not in a VM (set NAMESPACE_TOKEN or run `nsc login` to use Namespace)")
	}
	emu, err := nsemu.Start(nsemu.Options{DefaultPath: emulatorPath()})
	if err != nil {
		return nil, err
	}
	cfg.Endpoint, cfg.Token, cfg.TokenFile = emu.URL(), emu.Token(), ""
	return &target{emu: emu, close: func() { _ = emu.Close() }}, nil
}

// emulatorPath is the host PATH, with NSDRIVER_DENO's folder first so that
// bundle mode finds Deno.
func emulatorPath() string {
	path := os.Getenv("PATH")
	if deno := os.Getenv("NSDRIVER_DENO"); deno != "" {
		path = filepath.Dir(deno) + string(os.PathListSeparator) + path
	}
	return path
}

// humanHandler prints "nsdriver: <message> k=v …" lines for a person.
type humanHandler struct {
	w     io.Writer
	attrs []slog.Attr
}

func (h *humanHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

// humanTemplates render the driver's progress messages as sentences;
// {key} is replaced by the attribute's value.
var humanTemplates = map[string]string{
	"creating instance":  "creating a {machineType} {arch} VM in region {region} (image {image})",
	"instance ready":     "VM {instance} ready after {bootMs} ms",
	"uploading bundle":   "uploading {kib} KiB ({compressedKib} KiB compressed) in {calls} call(s)",
	"running":            "running on {instance}",
	"instance destroyed": "VM {instance} destroyed",
	"cost":               "estimated cost ${estimatedCostUsd} ({unitMinutes} unit minutes over {seconds} s)",
}

func (h *humanHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := append([]slog.Attr(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
	line := r.Message
	if tmpl, ok := humanTemplates[r.Message]; ok {
		line = tmpl
		for _, a := range attrs {
			line = strings.ReplaceAll(line, "{"+a.Key+"}", fmt.Sprint(a.Value.Any()))
		}
	} else {
		for _, a := range attrs {
			line += fmt.Sprintf(" %s=%v", a.Key, a.Value.Any())
		}
	}
	_, err := io.WriteString(h.w, "nsdriver: "+line+"\n")
	return err
}

func (h *humanHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &humanHandler{w: h.w, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h *humanHandler) WithGroup(string) slog.Handler { return h }
