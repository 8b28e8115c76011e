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
	emu, err := nsemu.Start(nsemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
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
