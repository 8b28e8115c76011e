package nsdriver

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults of Config (docs/config.md).
const (
	DefaultRegion         = "us"
	DefaultMachineType    = "2x4"
	DefaultArch           = "amd64"
	DefaultTimeout        = 10 * time.Minute
	DefaultImage          = "builtin:base"
	DenoVersion           = "2.9.6"
	DefaultBundleImage    = "denoland/deno:debian-" + DenoVersion
	DefaultDenoInstallURL = "https://deno.land/install.sh"
	DefaultMaxOutputBytes = 64 << 20
	DenoSetupPreinstalled = "preinstalled"
	DenoSetupInstall      = "install"
)

// Config is the driverConfig: how the driver reaches Namespace and what VM
// each execution gets. Zero values take the defaults of docs/config.md. Each
// field's comment is also its description in the JSON schema (schema/gen).
type Config struct {
	// Namespace API token; never logged. Unset: the first of tokenFile,
	// NAMESPACE_TOKEN, NSC_TOKEN (deprecated), NSC_TOKEN_SPEC(_FILE),
	// NSC_TOKEN_FILE, /var/run/nsc/token.json and the nsc login file.
	Token string `json:"token,omitempty"`
	// Path of a token file: JSON with bearer_token or session_token (what
	// nsc login writes), or the raw token.
	TokenFile string `json:"tokenFile,omitempty"`
	// Namespace region: us or eu. Set, it wins over NSC_ENDPOINT; unset, the
	// region the token's claims name is used, else us.
	Region string `json:"region,omitempty" jsonschema:"enum=us,enum=eu"`
	// API endpoint: host, host:port or URL (no scheme means https); overrides
	// everything else. Plain http only to a loopback address.
	Endpoint string `json:"endpoint,omitempty"`
	// VM shape <vCPU>x<GB>: vCPU in 2/4/8/16/32, GB a power of two from 2 to
	// 512.
	MachineType string `json:"machineType,omitempty" jsonschema:"pattern=^(2|4|8|16|32)x(2|4|8|16|32|64|128|256|512)$"`
	// CPU architecture: amd64 or arm64.
	Arch string `json:"arch,omitempty" jsonschema:"enum=amd64,enum=arm64"`
	// Limit on one execution: milliseconds (a number) or a duration string
	// such as 90s. Default 600000 (10 min).
	Timeout Milliseconds `json:"timeout,omitzero"`
	// Instance deadline after creation, a duration string such as 15m: at
	// least timeout + 1m; default timeout + 5m.
	Duration DurationString `json:"duration,omitzero"`
	// true: a bare VM; false requests Kubernetes.
	Bare *bool `json:"bare,omitempty"`
	// Command-mode container image: builtin:* is a Namespace-managed image
	// (knownImageId), anything else an image reference.
	Image string `json:"image,omitempty"`
	// Bundle-mode container image when denoSetup is preinstalled; must
	// contain deno.
	BundleImage string `json:"bundleImage,omitempty"`
	// preinstalled: deno is in bundleImage. install: run the script at
	// denoInstallUrl in image first.
	DenoSetup string `json:"denoSetup,omitempty" jsonschema:"enum=preinstalled,enum=install"`
	// Deno install script used when denoSetup is install.
	DenoInstallURL string `json:"denoInstallUrl,omitempty" jsonschema:"format=uri"`
	// Environment for the workload. Values are secrets: never logged.
	Env map[string]string `json:"env,omitempty"`
	// Extra instance labels, added to the driver's own (names and values:
	// [a-z0-9./_-], at most 63 characters).
	Labels map[string]string `json:"labels,omitempty"`
	// Cap on captured stdout, in bytes.
	MaxOutputBytes int64 `json:"maxOutputBytes,omitempty" jsonschema:"minimum=1"`
	// VMs in flight per Driver; 0 means no limit.
	MaxConcurrent int `json:"maxConcurrent,omitempty" jsonschema:"minimum=0"`
	// Pre-booted VMs kept per image; each is still used once.
	WarmPool int `json:"warmPool,omitempty" jsonschema:"minimum=0"`
}

// Milliseconds is a duration whose JSON is a number of milliseconds, as
// swamp's driverConfig writes timeouts; a duration string ("90s") is
// accepted too.
type Milliseconds time.Duration

// MarshalJSON writes milliseconds, the form swamp uses.
func (t Milliseconds) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatInt(time.Duration(t).Milliseconds(), 10)), nil
}

// UnmarshalJSON accepts 90000 and "90s".
func (t *Milliseconds) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var d DurationString
		if err := d.UnmarshalJSON(b); err != nil {
			return err
		}
		*t = Milliseconds(d)
		return nil
	}
	ms, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("want milliseconds or a duration string such as \"90s\", got %s", b)
	}
	*t = Milliseconds(ms * float64(time.Millisecond))
	return nil
}

// DurationString is a duration written as a Go duration string ("15m").
type DurationString time.Duration

// MarshalJSON writes the duration string.
func (d DurationString) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON parses a duration string.
func (d *DurationString) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"15m\", got %s", b)
	}
	parsed, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration string such as \"15m\": %w", err)
	}
	*d = DurationString(parsed)
	return nil
}

// ParseConfig reads a driverConfig as swamp hands it over.
func ParseConfig(m map[string]any) (Config, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return Config{}, &ConfigError{[]Problem{{"(config)", "not representable as JSON: " + err.Error()}}}
	}
	return ParseConfigJSON(b)
}

// ParseConfigJSON reads a driverConfig in JSON and validates it, reporting
// every problem (unknown keys, wrong types, broken rules) at once.
func ParseConfigJSON(b []byte) (Config, error) {
	var cfg Config
	problems := &ConfigError{}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return cfg, cfg.Validate()
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return cfg, &ConfigError{[]Problem{{"(config)", "want a JSON object: " + err.Error()}}}
	}
	fields := configFields(&cfg)
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		target, ok := fields[key]
		if !ok {
			if s := ClosestName(key, sortedKeys(fields)); s != "" {
				problems.add(strconv.Quote(key), "unknown key; did you mean %q?", s)
			} else {
				problems.add(strconv.Quote(key), "unknown key; known keys: %s", strings.Join(sortedKeys(fields), ", "))
			}
			continue
		}
		if err := json.Unmarshal(raw[key], target); err != nil {
			problems.add(key, "%s", typeErrorMessage(err))
		} else if key == "timeout" && cfg.Timeout == 0 {
			problems.add(key, "must be greater than 0")
		}
	}
	if err := cfg.Validate(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			problems.Problems = append(problems.Problems, ce.Problems...)
		}
	}
	return cfg, problems.orNil()
}

func typeErrorMessage(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("want %s, got a JSON %s", te.Type, te.Value)
	}
	return err.Error()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// configFields maps each JSON key to the field it fills.
func configFields(c *Config) map[string]any {
	return map[string]any{
		"token": &c.Token, "tokenFile": &c.TokenFile, "region": &c.Region, "endpoint": &c.Endpoint,
		"machineType": &c.MachineType, "arch": &c.Arch, "timeout": &c.Timeout, "duration": &c.Duration,
		"bare": &c.Bare, "image": &c.Image, "bundleImage": &c.BundleImage, "denoSetup": &c.DenoSetup,
		"denoInstallUrl": &c.DenoInstallURL, "env": &c.Env, "labels": &c.Labels,
		"maxOutputBytes": &c.MaxOutputBytes, "maxConcurrent": &c.MaxConcurrent, "warmPool": &c.WarmPool,
	}
}

var (
	machineTypePattern = regexp.MustCompile(`^(2|4|8|16|32)x(2|4|8|16|32|64|128|256|512)$`)
	envNamePattern     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelPattern       = regexp.MustCompile(`^[a-z0-9./_-]{1,63}$`)
	labelValuePattern  = regexp.MustCompile(`^[a-z0-9./_-]{0,63}$`)
)

// WithDefaults returns c with every unset key at its default.
func (c Config) WithDefaults() Config {
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&c.MachineType, DefaultMachineType)
	def(&c.Arch, DefaultArch)
	def(&c.Image, DefaultImage)
	def(&c.BundleImage, DefaultBundleImage)
	def(&c.DenoSetup, DenoSetupPreinstalled)
	def(&c.DenoInstallURL, DefaultDenoInstallURL)
	if c.Timeout == 0 {
		c.Timeout = Milliseconds(DefaultTimeout)
	}
	if c.Duration == 0 && c.Timeout > 0 {
		c.Duration = DurationString(time.Duration(c.Timeout) + 5*time.Minute)
	}
	if c.Bare == nil {
		bare := true
		c.Bare = &bare
	}
	if c.MaxOutputBytes == 0 {
		c.MaxOutputBytes = DefaultMaxOutputBytes
	}
	return c
}

// Validate checks every rule of docs/config.md on c with defaults applied and
// returns a *ConfigError listing all problems, or nil.
func (c Config) Validate() error {
	c = c.WithDefaults()
	p := &ConfigError{}
	if c.Region != "" && c.Region != "us" && c.Region != "eu" {
		p.add("region", "%q is not us or eu", c.Region)
	}
	if c.Endpoint != "" {
		if _, err := checkEndpoint(c.Endpoint); err != nil {
			p.add("endpoint", "%v", err)
		}
	}
	if !machineTypePattern.MatchString(c.MachineType) {
		p.add("machineType", "%q is not <vCPU>x<GB> with vCPU in 2, 4, 8, 16, 32 and GB a power of two from 2 to 512 (e.g. 2x4)", c.MachineType)
	}
	if c.Arch != "amd64" && c.Arch != "arm64" {
		p.add("arch", "%q is not amd64 or arm64", c.Arch)
	}
	if c.Timeout <= 0 {
		p.add("timeout", "must be greater than 0")
	}
	if c.Timeout > 0 && time.Duration(c.Duration) < time.Duration(c.Timeout)+time.Minute {
		p.add("duration", "%s is shorter than timeout + 1m (%s); the VM could die mid-run",
			time.Duration(c.Duration), time.Duration(c.Timeout)+time.Minute)
	}
	if strings.TrimSpace(c.Image) == "" || strings.TrimSpace(c.BundleImage) == "" {
		p.add("image", "must not be blank")
	}
	if c.DenoSetup != DenoSetupPreinstalled && c.DenoSetup != DenoSetupInstall {
		p.add("denoSetup", "%q is not preinstalled or install", c.DenoSetup)
	}
	if u, err := url.Parse(c.DenoInstallURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add("denoInstallUrl", "%q is not an http(s) URL", c.DenoInstallURL)
	}
	for _, k := range sortedKeys(c.Env) {
		if !envNamePattern.MatchString(k) {
			p.add("env."+k, "is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
		}
	}
	for _, k := range sortedKeys(c.Labels) {
		switch {
		case strings.HasPrefix(k, labelPrefix):
			p.add("labels."+k, "the %s prefix is reserved for the driver's own labels", labelPrefix)
		case !labelPattern.MatchString(k) || !labelValuePattern.MatchString(c.Labels[k]):
			p.add("labels."+k, "names and values take [a-z0-9./_-], at most 63 characters")
		}
	}
	if c.MaxOutputBytes < 1 {
		p.add("maxOutputBytes", "must be at least 1")
	}
	if c.MaxConcurrent < 0 {
		p.add("maxConcurrent", "must not be negative")
	}
	if c.WarmPool < 0 {
		p.add("warmPool", "must not be negative")
	}
	return p.orNil()
}

// shape parses machineType; it is valid after Validate.
func (c Config) shape() (vcpu, gb int) {
	v, g, _ := strings.Cut(c.MachineType, "x")
	vcpu, _ = strconv.Atoi(v)
	gb, _ = strconv.Atoi(g)
	return vcpu, gb
}

// configSchema is Config's JSON schema, generated from it by schema/gen.
//
//go:generate go run ./schema/gen
//go:embed schema/driver-config.schema.json
var configSchema []byte

// Schema returns the JSON schema of Config (draft 2020-12), generated from
// the struct, its defaults from WithDefaults.
func Schema() []byte { return bytes.Clone(configSchema) }
