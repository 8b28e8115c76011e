package main

// The flags every driver-using command shares, and the driverConfig they
// merge into with --config.

import (
	"encoding/json"
	"errors"
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
		return errors.New("want KEY=VALUE")
	}
	m[k] = val
	return nil
}

// common holds the flags the driver-using commands share.
type common struct {
	fs         *flag.FlagSet
	head       string // usage text before the flag list
	configFile string
	configEnv  string
	quiet      bool
	jsonLogs   bool
	emulator   bool
	env        mapFlag
	labels     mapFlag
}

// configFlags are the kebab-case names of every driverConfig key except the
// maps, with the key they set. A `name` in backquotes is what help shows
// after the flag; kind says how its text is read.
var configFlags = []struct {
	flag, key, usage string
	kind             flagKind
}{
	{"token", "token", "Namespace API `token`, never logged (unset: --token-file, NAMESPACE_TOKEN, NSC_TOKEN_SPEC(_FILE), NSC_TOKEN_FILE, /var/run/nsc/token.json, the nsc login file, in that order)", textFlag},
	{"token-file", "tokenFile", "token `file`: JSON with bearer_token or session_token (nsc login writes a session_token), or the raw token", textFlag},
	{"region", "region", "`region`: us or eu; wins over NSC_ENDPOINT (default: the region the token names, else us)", textFlag},
	{"endpoint", "endpoint", "API endpoint: `host`, host:port or URL; overrides everything else", textFlag},
	{"machine-type", "machineType", "`shape` <vCPU>x<GB>, e.g. 2x4 (default)", textFlag},
	{"arch", "arch", "`arch`: amd64 (default) or arm64", textFlag},
	{"timeout", "timeout", "limit on the run, a `duration` with a unit: 90s, 10m (default 10m)", textFlag},
	{"duration", "duration", "instance deadline, a `duration` (default timeout + 5m)", textFlag},
	{"bare", "bare", "bare VM (default); --bare=false requests Kubernetes", boolFlag},
	{"image", "image", "command-mode `image` (default builtin:base)", textFlag},
	{"bundle-image", "bundleImage", "bundle-mode `image` with Deno", textFlag},
	{"deno-setup", "denoSetup", "`mode`: preinstalled (default) or install", textFlag},
	{"deno-install-url", "denoInstallUrl", "Deno install script `url` for denoSetup install", textFlag},
	{"max-output-bytes", "maxOutputBytes", "cap on captured stdout, a `size`: bytes or 512KiB, 64MiB, 1GiB (default 64MiB)", sizeFlag},
	{"max-concurrent", "maxConcurrent", "VMs in flight, an `int` (default 0: no limit)", intFlag},
	{"warm-pool", "warmPool", "pre-booted VMs per image, an `int` (default 0)", intFlag},
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
			c.fs.Var(&configValue{kind: f.kind}, f.flag, f.usage)
		}
	}
	if keys == nil {
		c.fs.Var(c.env, "env", "workload environment `KEY=VALUE` (repeatable; values never logged)")
		c.fs.Var(c.labels, "label", "extra instance label `KEY=VALUE` (repeatable)")
	}
	c.fs.StringVar(&c.configFile, "config", "", "driverConfig `file`, YAML or JSON (flags win)")
	c.fs.StringVar(&c.configEnv, "config-env", "", "driverConfig JSON from the environment `variable` named: never on disk, never in argv (flags win)")
	c.fs.BoolVar(&c.jsonLogs, "json-logs", false, "stderr as JSON lines (slog keys plus source: workload|driver)")
	c.fs.BoolVar(&c.emulator, "emulator", false, "use an in-process emulator: commands run on this machine, not in a VM")
	return c
}

// parse parses args; done reports that --help was answered.
func (c *common) parse(args []string, stdout io.Writer) (done bool, err error) {
	return parseFlags(c.fs, args, stdout, c.head)
}

// parseInterspersed parses flags before and after the positional
// arguments, as people type them (nsdriver exec req.json --emulator); a
// "--" ends the flags.
func (c *common) parseInterspersed(args []string, stdout io.Writer) (done bool, positional []string, err error) {
	for {
		end := slices.Index(args, "--")
		if done, err = c.parse(args, stdout); done || err != nil {
			return done, nil, err
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			return false, positional, nil
		}
		if end >= 0 && len(args)-end-1 == len(rest) {
			return false, append(positional, rest...), nil // everything after "--"
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// config merges the config file and the flags (flags win) and validates the
// result, reporting every problem with its key.
func (c *common) config() (nsdriver.Config, error) {
	merged := map[string]any{}
	if c.configEnv != "" {
		if c.configFile != "" {
			return nsdriver.Config{}, usageError{"--config and --config-env both name a driverConfig; give one"}
		}
		text, ok := os.LookupEnv(c.configEnv)
		if !ok {
			return nsdriver.Config{}, usageError{fmt.Sprintf("--config-env %s: %s is not set in this environment", c.configEnv, c.configEnv)}
		}
		if err := json.Unmarshal([]byte(text), &merged); err != nil || merged == nil {
			return nsdriver.Config{}, usageError{fmt.Sprintf("--config-env %s: the variable does not hold a JSON object", c.configEnv)}
		}
	}
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
		v := c.fs.Lookup(f.flag).Value.(*configValue)
		if f.key == "timeout" {
			if _, err := strconv.ParseFloat(v.text, 64); err == nil {
				// A bare number would be milliseconds (as in a config
				// file), and "--timeout 5" meaning 5 ms surprises everyone.
				return nsdriver.Config{}, usageError{fmt.Sprintf("--timeout %s needs a unit, e.g. %ss or %sm (a bare number means milliseconds only in a config file)", v.text, v.text, v.text)}
			}
		}
		merged[f.key] = v.value
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
