package main

// The flags every driver-using command shares, and the driverConfig they
// merge into with --config.

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/swamp-club/nsdriver"
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
