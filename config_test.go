package nsdriver

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
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
	if c.Region != "us" || c.MachineType != "2x4" || c.Arch != "amd64" || time.Duration(c.Timeout) != 10*time.Minute ||
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
	fromYAML, err := ParseConfigYAML([]byte("region: eu\ntimeout: 90s\nduration: 5m\nbare: false\nenv:\n  A: \"1\"\nmachineType: 4x8\n"))
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

func TestSchemaMatchesCommittedFile(t *testing.T) {
	generated, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	const path = "schema/driver-config.schema.json"
	if os.Getenv("NSDRIVER_UPDATE_SCHEMA") == "1" {
		if err := os.WriteFile(path, generated, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	committed, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(generated, committed) {
		t.Fatalf("%s is stale: run NSDRIVER_UPDATE_SCHEMA=1 go test -run TestSchemaMatchesCommittedFile .", path)
	}
	var schema struct {
		Properties           map[string]map[string]any `json:"properties"`
		AdditionalProperties *bool                     `json:"additionalProperties"`
	}
	if err := json.Unmarshal(generated, &schema); err != nil {
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
	if schema.Properties["machineType"]["pattern"] != machineTypePattern.String() || schema.Properties["region"]["default"] != "us" {
		t.Errorf("machineType/region schema %v %v", schema.Properties["machineType"], schema.Properties["region"])
	}
}
