package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/swamp-club/nsdriver/nsemu"
)

// NSC_TOKEN still works, with one line saying it is deprecated (even with
// --quiet); NAMESPACE_TOKEN has no such line.
func TestNSCTokenNoticeOnce(t *testing.T) {
	emu := startEmu(t, nsemu.Options{})
	for _, tc := range []struct {
		variable string
		notices  int
	}{{"NSC_TOKEN", 1}, {"NAMESPACE_TOKEN", 0}} {
		cmd := exec.Command(binary, "run", "--quiet", "--", "echo ran")
		cmd.Env = append(os.Environ(), "NSC_ENDPOINT="+emu.URL(), tc.variable+"="+emu.Token())
		r := runCmd(t, cmd)
		if r.code != 0 || r.stdout != "ran\n" || strings.Count(r.stderr, "NSC_TOKEN is deprecated") != tc.notices {
			t.Fatalf("%s: want exit 0 and %d deprecation notice(s); got exit %d, stdout %q, stderr:\n%s", tc.variable, tc.notices, r.code, r.stdout, r.stderr)
		}
	}
}

// Against an emulator the CLI did not start (the pasted `nsdriver emulator`
// exports), the words are the emulator's, as with --emulator: no "VM", no
// cost; exec reports an estimatedCostUsd of 0.
func TestEmulatorWordingEverywhere(t *testing.T) {
	emu := startEmu(t, nsemu.Options{})
	cmd := exec.Command(binary, "run", "--", "echo hi")
	cmd.Env = append(os.Environ(), "NSC_ENDPOINT="+emu.URL(), "NAMESPACE_TOKEN="+emu.Token())
	r := runCmd(t, cmd)
	if r.code != 0 || !strings.Contains(r.stderr, "emulator instance") || !strings.Contains(r.stderr, "no charge") {
		t.Fatalf("run against a pasted emulator: want emulator wording, got exit %d, stderr:\n%s", r.code, r.stderr)
	}
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.Contains(line, "VM") || strings.Contains(line, "estimated cost") {
			t.Errorf("a line speaks of a VM or a cost: %q", line)
		}
	}
	for _, args := range [][]string{{"exec", "--emulator"}, {"exec", "--endpoint", emu.URL(), "--token", emu.Token()}} {
		r := nsd(t, `{"protocolVersion":1,"methodName":"m","methodArgs":{"run":"true"}}`, args...)
		if r.code != 0 || !strings.Contains(r.stdout, `"estimatedCostUsd":0`) || strings.Contains(r.stdout, `"unitMinutes":0,`) {
			t.Errorf("%v: want estimatedCostUsd 0 beside the unit minutes Namespace would count; got %+v", args, r)
		}
	}
}

// cleanup --emulator would search a new, empty emulator: refused, saying how
// to reach the emulator meant.
func TestCleanupRefusesAFreshEmulator(t *testing.T) {
	r := nsd(t, "", "cleanup", "--emulator", "--dry-run")
	if r.code != 2 || !strings.Contains(r.stderr, "always find nothing") || !strings.Contains(r.stderr, "--endpoint") {
		t.Fatalf("want exit 2 saying it would find nothing and to use --endpoint; got %+v", r)
	}
}

// --config-env reads the driverConfig from an environment variable (how the
// swamp extension keeps it off the disk); flags still win.
func TestConfigFromTheEnvironment(t *testing.T) {
	cmd := exec.Command(binary, "run", "--emulator", "--quiet", "--config-env", "NSD_TEST_CONFIG", "--env", "B=flag", "--", `printf '%s|%s' "$A" "$B"`)
	cmd.Env = append(os.Environ(), `NSD_TEST_CONFIG={"env":{"A":"from-env-config","B":"from-env-config"}}`)
	if r := runCmd(t, cmd); r.code != 0 || r.stdout != "from-env-config|flag" {
		t.Fatalf("want the config from the variable with the flag winning; got %+v", r)
	}
	for env, want := range map[string]string{"": "NSD_TEST_CONFIG is not set", "NSD_TEST_CONFIG=[1]": "does not hold a JSON object",
		`NSD_TEST_CONFIG={"machinType":"4x8"}`: `did you mean "machineType"`} {
		cmd := exec.Command(binary, "run", "--emulator", "--config-env", "NSD_TEST_CONFIG", "--", "true")
		cmd.Env = append(os.Environ(), env)
		if r := runCmd(t, cmd); r.code != 2 || !strings.Contains(r.stderr, want) {
			t.Errorf("%q: want exit 2 saying %q, got %+v", env, want, r)
		}
	}
}
