package main

// The flags every driver-using command shares, and the driverConfig they
// merge into with --config.

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
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

// common holds the flags the driver-using commands share.
type common struct {
	fs         *flag.FlagSet
	head       string // usage text before the flag list
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
	{"token-file", "tokenFile", "token file: JSON with bearer_token or session_token, or the raw token"},
	{"region", "region", "us or eu; wins over NSC_ENDPOINT (default: the region the token names, else us)"},
	{"endpoint", "endpoint", "API endpoint: host, host:port or URL; overrides everything else"},
	{"machine-type", "machineType", "<vCPU>x<GB>, e.g. 2x4 (default)"},
	{"arch", "arch", "amd64 (default) or arm64"},
	{"timeout", "timeout", "limit on the run, with a unit: 90s, 10m (default 10m)"},
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

// connectionKeys are the config keys a command that only talks to the API
// (cleanup) uses.
var connectionKeys = []string{"token", "tokenFile", "region", "endpoint"}

// newCommon registers the flags of the config keys given (nil: all of
// them, with --env and --label), --config, --emulator and --json-logs.
func newCommon(name, head string, keys []string) *common {
	c := &common{fs: flag.NewFlagSet("nsdriver "+name, flag.ContinueOnError), head: head, env: mapFlag{}, labels: mapFlag{}}
	c.fs.SetOutput(io.Discard)
	for _, f := range configFlags {
		if keys == nil || slices.Contains(keys, f.key) {
			c.fs.String(f.flag, "", f.usage)
		}
	}
	if keys == nil {
		c.fs.Var(c.env, "env", "workload environment `KEY=VALUE` (repeatable; values never logged)")
		c.fs.Var(c.labels, "label", "extra instance label `KEY=VALUE` (repeatable)")
	}
	c.fs.StringVar(&c.configFile, "config", "", "driverConfig `file`, YAML or JSON (flags win)")
	c.fs.BoolVar(&c.jsonLogs, "json-logs", false, "stderr as JSON lines (slog keys plus source: workload|driver)")
	c.fs.BoolVar(&c.emulator, "emulator", false, "use an in-process emulator: commands run on this machine, not in a VM")
	return c
}

// parse parses args; done reports that --help was answered.
func (c *common) parse(args []string, stdout io.Writer) (done bool, err error) {
	return parseFlags(c.fs, args, stdout, c.head)
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
		v, err := flagValue(f.key, c.fs.Lookup(f.flag).Value.String())
		if err != nil {
			return nsdriver.Config{}, err
		}
		merged[f.key] = v
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

// flagValue types a flag's text as its config key expects. --timeout
// needs a unit: a bare number would be milliseconds (as in a config file),
// and "--timeout 5" meaning 5 ms surprises everyone.
func flagValue(key, v string) (any, error) {
	switch key {
	case "bare":
		if b, err := strconv.ParseBool(v); err == nil {
			return b, nil
		}
	case "timeout":
		if _, err := strconv.ParseFloat(v, 64); err == nil {
			return nil, usageError{fmt.Sprintf("--timeout %s needs a unit, e.g. %ss or %sm (a bare number means milliseconds only in a config file)", v, v, v)}
		}
	case "maxOutputBytes", "maxConcurrent", "warmPool":
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n, nil
		}
	}
	return v, nil
}
