package nsdriver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.WithDefaults()
	if c.Region != "" || c.MachineType != "2x4" || c.Arch != "amd64" || time.Duration(c.Timeout) != 10*time.Minute ||
		time.Duration(c.Duration) != 15*time.Minute || !*c.Bare || c.Image != "builtin:base" ||
		c.BundleImage != "denoland/deno:debian-"+DenoVersion || c.DenoSetup != "preinstalled" ||
		c.DenoInstallURL != "https://deno.land/install.sh" || c.MaxOutputBytes != 67108864 || c.MaxConcurrent != 0 || c.WarmPool != 0 {
		t.Fatalf("defaults %+v", c)
	}
}

func TestConfigFormats(t *testing.T) {
	fromMap, err := ParseConfig(map[string]any{"region": "eu", "timeout": 90000, "duration": "5m", "bare": false,
		"env": map[string]any{"A": "1"}, "machineType": "4x8"})
	if err != nil {
		t.Fatal(err)
	}
	fromYAML, err := ParseConfigJSON([]byte(`{"region":"eu","timeout":"90s","duration":"5m","bare":false,"env":{"A":"1"},"machineType":"4x8"}`))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(fromMap)
	b, _ := json.Marshal(fromYAML)
	if !bytes.Equal(a, b) || time.Duration(fromMap.Timeout) != 90*time.Second || *fromMap.Bare {
		t.Fatalf("map %s\nyaml %s", a, b)
	}
	// A config round-trips through its own JSON.
	back, err := ParseConfigJSON(a)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := json.Marshal(back); !bytes.Equal(a, c) {
		t.Fatalf("round trip %s != %s", c, a)
	}
}

func TestConfigReportsEveryProblemWithItsPath(t *testing.T) {
	_, err := ParseConfigJSON([]byte(`{
		"region": "mars", "endpoint": "http://example.com", "machineType": "3x4", "arch": "x86",
		"timeout": -5, "duration": "nonsense", "bare": "yes", "image": " ", "denoSetup": "maybe",
		"denoInstallUrl": "ftp://x", "env": {"BAD-NAME": "v", "OK": "v"}, "labels": {"nsdriver/run-id": "x", "Bad": "v"},
		"maxOutputBytes": -1, "maxConcurrent": -1, "warmPool": -2, "tokenFiel": "typo"}`))
	var ce *ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("err %v", err)
	}
	got := map[string]bool{}
	for _, p := range ce.Problems {
		got[p.Path] = true
	}
	for _, path := range []string{"region", "endpoint", "machineType", "arch", "timeout", "duration", "bare", "image",
		"denoSetup", "denoInstallUrl", "env.BAD-NAME", "labels.nsdriver/run-id", "labels.Bad", "maxOutputBytes",
		"maxConcurrent", "warmPool", `"tokenFiel"`} {
		if !got[path] {
			t.Errorf("no problem reported for %s; got %v", path, ce.Problems)
		}
	}
	if got["env.OK"] {
		t.Error("valid env name reported")
	}
	if !strings.Contains(err.Error(), "machineType: \"3x4\"") {
		t.Errorf("message %q", err)
	}
}

func TestConfigRules(t *testing.T) {
	ok := []map[string]any{
		{"machineType": "32x512"}, {"machineType": "2x2"}, {"timeout": "90s", "duration": "2m30s"},
		{"endpoint": "http://127.0.0.1:8080"}, {"endpoint": "https://eu.compute.namespaceapis.com"},
		{"denoSetup": "install", "denoInstallUrl": "http://127.0.0.1:1/install.sh"}, {"arch": "arm64"},
	}
	for _, m := range ok {
		if _, err := ParseConfig(m); err != nil {
			t.Errorf("%v: %v", m, err)
		}
	}
	bad := []map[string]any{
		{"machineType": "2x3"}, {"machineType": "64x8"}, {"machineType": "2x1024"}, {"machineType": "2X4"},
		{"timeout": 0}, {"timeout": "90s", "duration": "90s"}, {"region": "US"}, {"endpoint": "not a url"},
	}
	for _, m := range bad {
		if _, err := ParseConfig(m); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%v accepted", m)
		}
	}
}

// The embedded schema (schema/gen keeps it current) covers every key, and
// its defaults are WithDefaults' own.
func TestSchemaMatchesConfig(t *testing.T) {
	var schema struct {
		Properties           map[string]map[string]any `json:"properties"`
		AdditionalProperties *bool                     `json:"additionalProperties"`
	}
	if err := json.Unmarshal(Schema(), &schema); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range configFields(&Config{}) {
		keys = append(keys, k)
		if schema.Properties[k] == nil {
			t.Errorf("schema lacks %s", k)
		}
	}
	if len(schema.Properties) != len(keys) || schema.AdditionalProperties == nil || *schema.AdditionalProperties {
		t.Errorf("schema has %d properties for %d keys, additionalProperties %v", len(schema.Properties), len(keys), schema.AdditionalProperties)
	}
	if schema.Properties["machineType"]["pattern"] != machineTypePattern.String() {
		t.Errorf("machineType schema %v", schema.Properties["machineType"])
	}
	raw, err := json.Marshal(Config{}.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	var defaults map[string]any
	if err := json.Unmarshal(raw, &defaults); err != nil {
		t.Fatal(err)
	}
	for key, prop := range schema.Properties {
		want, ok := defaults[key]
		if !ok && prop["type"] == "integer" {
			want, ok = float64(0), true
		}
		got, stated := prop["default"]
		switch {
		case key == "duration" || key == "region":
			if stated {
				t.Errorf("%s's default depends on other settings; the schema states %v", key, got)
			}
		case ok != stated || (ok && fmt.Sprint(got) != fmt.Sprint(want)):
			t.Errorf("%s: schema default %v (stated %v), WithDefaults %v (set %v)", key, got, stated, want, ok)
		}
	}
}

// Importing the root package pulls in only the standard library and
// x/sync (design.md): schema generation and YAML live where they are used.
func TestRootImportsOnlyStdlibAndXSync(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	cmd := goTool("list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(helperFailure(cmd, err))
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != "github.com/swamp-club/nsdriver" && !strings.HasPrefix(dep, "golang.org/x/sync/") {
			t.Errorf("the root package depends on %s; only the standard library and golang.org/x/sync are allowed", dep)
		}
	}
}

func TestUnknownConfigKeySuggests(t *testing.T) {
	_, err := ParseConfigJSON([]byte(`{"machine-type":"4x8","tokenfile":"x","max_output":1,"zzz":1}`))
	for _, want := range []string{`"machine-type": unknown key; did you mean "machineType"?`, `"tokenfile": unknown key; did you mean "tokenFile"?`,
		`"max_output": unknown key; did you mean "maxOutputBytes"?`, `"zzz": unknown key; known keys: arch,`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}
