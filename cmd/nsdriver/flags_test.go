package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swamp-club/nsdriver"
)

// -h/--help prints usage to stdout and exits 0, for every subcommand, and
// each lists only its own flags.
func TestHelpEverywhere(t *testing.T) {
	cases := map[string][2][]string{ // subcommand: {flags it lists, flags it must not}
		"run":      {{"--machine-type", "--stdin", "--quiet", "--env"}, {"--older-than", "--progress"}},
		"exec":     {{"--machine-type", "--progress"}, {"--older-than", "--stdin"}},
		"cleanup":  {{"--older-than", "--token", "--endpoint", "--dry-run"}, {"--machine-type", "--image", "--warm-pool", "--env"}},
		"emulator": {{"--listen", "--session-token"}, {"--machine-type"}},
		"fleet":    {{"--size", "--total", "--timeout", "--env-from-host", "--machine-type", "--image"}, {"--warm-pool", "--max-output-bytes", "--bundle-image"}},
		"schema":   {{}, {"--machine-type"}},
		"version":  {{"--json"}, {"--machine-type"}},
	}
	for sub, flags := range cases {
		for _, h := range []string{"-h", "--help"} {
			r := nsd(t, "", sub, h)
			if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "Usage: nsdriver "+sub) {
				t.Errorf("%s %s: %+v", sub, h, r)
				continue
			}
			for _, f := range flags[0] {
				if !strings.Contains(r.stdout, f+" ") {
					t.Errorf("%s help lacks %s", sub, f)
				}
			}
			for _, f := range flags[1] {
				if strings.Contains(r.stdout, f+" ") {
					t.Errorf("%s help lists %s", sub, f)
				}
			}
		}
	}
	if r := nsd(t, "", "--help"); r.code != 0 || !strings.Contains(r.stdout, "nsdriver exec [flags] [FILE|-]") {
		t.Errorf("top help: %+v", r)
	}
	if r := nsd(t, "", "version", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"driverType":"@swamp/namespace"`) {
		t.Errorf("version --json: %+v", r)
	}
}

func TestDidYouMean(t *testing.T) {
	r := nsd(t, "", "run", "--machine", "4x8", "--", "true")
	if r.code != 2 || !strings.Contains(r.stderr, "unknown flag --machine; did you mean --machine-type?") {
		t.Errorf("flag: %+v", r)
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(cfg, []byte("machine-type: 4x8\n"), 0o600)
	r = nsd(t, "", "run", "--emulator", "--config", cfg, "--", "true")
	if r.code != 2 || !strings.Contains(r.stderr, `"machine-type": unknown key; did you mean "machineType"?`) {
		t.Errorf("config key: %+v", r)
	}
	if r := nsd(t, "", "exce"); r.code != 2 || !strings.Contains(r.stderr, `did you mean "exec"?`) {
		t.Errorf("command: %+v", r)
	}
}

func TestTimeoutFlagNeedsAUnit(t *testing.T) {
	r := nsd(t, "", "run", "--emulator", "--timeout", "5", "--", "true")
	if r.code != 2 || !strings.Contains(r.stderr, "--timeout 5 needs a unit, e.g. 5s or 5m") {
		t.Fatalf("%+v", r)
	}
	if r := nsd(t, "", "run", "--emulator", "--quiet", "--timeout", "30s", "--", "echo ok"); r.code != 0 || r.stdout != "ok\n" {
		t.Fatalf("with a unit: %+v", r)
	}
	cfg := filepath.Join(t.TempDir(), "c.json")
	_ = os.WriteFile(cfg, []byte(`{"timeout": 30000}`), 0o600) // a config file keeps milliseconds
	if r := nsd(t, "", "run", "--emulator", "--quiet", "--config", cfg, "--", "echo ok"); r.code != 0 {
		t.Fatalf("config ms: %+v", r)
	}
}

func TestExecReadsFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "req.json")
	_ = os.WriteFile(file, []byte(`{"methodName":"m","methodArgs":{"run":"echo from-file"}}`), 0o600)
	r := nsd(t, `{"methodName":"m","methodArgs":{"run":"echo from-stdin"}}`, "exec", "--emulator", file)
	var res nsdriver.ExecutionResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 || string(res.Outputs[0].Content) != "from-file\n" {
		t.Fatalf("%+v %v", r, err)
	}
	r = nsd(t, "", "exec", "--emulator", filepath.Join(t.TempDir(), "missing.json"))
	if r.code != 2 || !strings.Contains(r.stdout, `"status":"error"`) || !strings.Contains(r.stderr, "missing.json") {
		t.Fatalf("missing file: %+v", r)
	}
}

// A failed result keeps the exit code and the stderr tail.
func TestExecFailedResultHasExitCode(t *testing.T) {
	r := nsd(t, `{"methodName":"m","methodArgs":{"run":"echo disk full >&2; exit 3"}}`, "exec", "--emulator")
	var res struct {
		Error    string
		Metadata struct{ ExitCode *int }
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 1 || res.Error != "disk full" || res.Metadata.ExitCode == nil || *res.Metadata.ExitCode != 3 {
		t.Fatalf("%+v %+v %v", r, res, err)
	}
}

// What a newcomer types: typed help, sizes with units, errors in the CLI's
// own words, and suggestions that make sense.
func TestFlagPapercuts(t *testing.T) {
	help := nsd(t, "", "run", "--help").stdout
	for _, want := range []string{"--bare  ", "--max-output-bytes size", "--warm-pool int", "--max-concurrent int", "  -i  "} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	for _, bad := range []string{"--bare string", "--warm-pool string", "--max-output-bytes string", "--i "} {
		if strings.Contains(help, bad) {
			t.Errorf("help shows %q", bad)
		}
	}
	r := nsd(t, "", "run", "--emulator", "--quiet", "--max-output-bytes", "1KiB", "--", "head -c 1024 /dev/zero | wc -c")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "1024" {
		t.Errorf("--max-output-bytes 1KiB, 1024 bytes: want them captured, got %+v", r)
	}
	r = nsd(t, "", "run", "--emulator", "--quiet", "--max-output-bytes", "1KiB", "--", "head -c 1025 /dev/zero")
	if r.code != 125 || !strings.Contains(r.stderr, "1024") {
		t.Errorf("--max-output-bytes 1KiB, 1025 bytes: want the cap of 1024 reported, got %+v", r)
	}
	for args, want := range map[string]string{
		"--env NOEQUALS":          "--env NOEQUALS: want KEY=VALUE",
		"--max-output-bytes lots": "--max-output-bytes lots: want a size",
		"--bare=maybe":            "--bare maybe: want true or false",
		"-q":                      "unknown flag -q; did you mean --quiet?",
	} {
		r := nsd(t, "", append(append([]string{"run"}, strings.Fields(args)...), "--", "true")...)
		if r.code != 2 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "for flag -") {
			t.Errorf("%s: want exit 2 saying %q (never \"for flag -\"), got %+v", args, want, r)
		}
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(cfg, []byte("machinType: 4x8\n"), 0o600)
	if r := nsd(t, "", "run", "--emulator", "--config", cfg, "--", "true"); r.code != 2 || !strings.Contains(r.stderr, `"machinType": unknown key; did you mean "machineType"?`) {
		t.Errorf("YAML machinType: %+v", r)
	}
}

// exec takes flags after the file too; a request that cannot run is
// refused before any VM, and keys the contract lacks are warned about.
func TestExecRequestPapercuts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "req.json")
	_ = os.WriteFile(file, []byte(`{"modelTyp":"x","methodName":"m","methodArgs":{"run":"echo hi"}}`), 0o600)
	r := nsd(t, "", "exec", file, "--emulator")
	var res struct{ Status string }
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 || res.Status != "success" {
		t.Fatalf("exec FILE --emulator: want success, got %+v", r)
	}
	for _, want := range []string{`unknown key "modelTyp"; it is ignored (did you mean "modelType"?)`, "no protocolVersion; assuming 1"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	r = nsd(t, `{"protocolVersion":1,"methodArgs":{"run":"echo hi"}}`, "exec", "--emulator", "--progress")
	if r.code != 2 || !strings.Contains(r.stderr, "has no methodName") || strings.Contains(r.stderr, "creating") {
		t.Fatalf("no methodName: want exit 2 before any VM, got %+v", r)
	}
	r = nsd(t, "", "exec", file, file)
	if r.code != 2 || !strings.Contains(r.stderr, "exec takes one request file, got 2") {
		t.Fatalf("two files: %+v", r)
	}
}
