package nsdriver

import (
	"context"
	"strings"
	"testing"

	"github.com/swamp-club/nsdriver/nsemu"
)

func TestLineSplitterCutsOverlongLines(t *testing.T) {
	var got []string
	l := lineSplitter{emit: func(s string) { got = append(got, s) }, max: 4}
	l.write([]byte("ab"))
	l.write([]byte("cdefghij\nkl\r\nmn"))
	l.flush()
	want := []string{"abcd", "efgh", "ij", "kl", "mn"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("lines %q, want %q", got, want)
	}
}

// A 2.5 MiB stderr line reaches OnLog and the logs in pieces of
// maxLineBytes, never held whole.
func TestOverlongStderrLineIsSplit(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	var pieces []int
	res := env.driver.Execute(context.Background(),
		commandRequest(`head -c 2621440 /dev/zero | tr '\0' x >&2; echo >&2; echo done`),
		Callbacks{OnLog: func(line string) { pieces = append(pieces, len(line)) }})
	if res.Status != ResultSuccess {
		t.Fatalf("result %+v", res.Error)
	}
	want := []int{maxLineBytes, maxLineBytes, 2621440 - 2*maxLineBytes}
	if len(pieces) != len(want) || pieces[0] != want[0] || pieces[1] != want[1] || pieces[2] != want[2] {
		t.Fatalf("pieces %v, want %v", pieces, want)
	}
	if len(res.Logs) != 3 {
		t.Fatalf("%d log lines", len(res.Logs))
	}
}

// Captured stderr (the failure message, the stderr metadata) stops at
// maxOutputBytes, while every line still reaches OnLog.
func TestCapturedStderrIsCapped(t *testing.T) {
	env := newTestEnv(t, Config{MaxOutputBytes: 1000}, nsemu.Options{})
	lines := 0
	res := env.driver.Execute(context.Background(),
		commandRequest(`i=0; while [ $i -lt 300 ]; do echo "stderr line $i" >&2; i=$((i+1)); done; exit 3`),
		Callbacks{OnLog: func(string) { lines++ }})
	if res.Status != ResultError || lines != 300 {
		t.Fatalf("status %s, %d lines", res.Status, lines)
	}
	if len(res.Error) > 1000 || !strings.HasPrefix(res.Error, "stderr line 0") {
		t.Fatalf("error of %d bytes: %.80q…", len(res.Error), res.Error)
	}
}
