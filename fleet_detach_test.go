package nsdriver

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The detached-run scripts, run here with this machine's sh and awk, as a
// VM would run them.

type detachedHere struct {
	t      *testing.T
	tmp    string
	seg    int
	unread int
}

func newDetachedHere(t *testing.T, seg, unread int) *detachedHere {
	return &detachedHere{t: t, tmp: t.TempDir(), seg: seg, unread: unread}
}

func (h *detachedHere) sh(script string, args ...string) *exec.Cmd {
	cmd := exec.Command("sh", append([]string{"-c", script, "nsdriver-test"}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+h.tmp)
	return cmd
}

// start runs the start script and returns the run's directory.
func (h *detachedHere) start(id, script string) string {
	h.t.Helper()
	out, err := h.sh(fleetStartScript, id, script, fleetCapperAWK, fleetDetachedScript, strconv.Itoa(h.seg), strconv.Itoa(h.unread)).Output()
	if err != nil {
		h.t.Fatalf("start: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// follow runs the follower from the offsets to its end and returns what it
// printed on each stream.
func (h *detachedHere) follow(dir string, outOff, errOff int) (string, string) {
	h.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := h.sh(fleetFollowScript, dir, strconv.Itoa(outOff), strconv.Itoa(errOff))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		h.t.Fatalf("follow: %v; stderr %s", err, stderr.String())
	}
	return stdout.String(), stderr.String()
}

func (h *detachedHere) waitStatus(dir string) string {
	h.t.Helper()
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	h.t.Fatal("no status within a minute")
	return ""
}

// Lines arrive while the command runs, and a follower started at an
// offset prints exactly what lies past it: no line lost or repeated.
func TestDetachedRunFollowsLiveAndFromAnOffset(t *testing.T) {
	h := newDetachedHere(t, fleetSegmentBytes, fleetUnreadSegments)
	gate := filepath.Join(h.tmp, "gate")
	dir := h.start("live", "echo early; echo warn >&2; while [ ! -e '"+gate+"' ]; do sleep 0.01; done; echo late; exit 7")

	// A follower sees "early" while the command still waits for the gate.
	var stdout syncBuffer
	cmd := h.sh(fleetFollowScript, dir, "0", "0")
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(time.Minute); !strings.Contains(stdout.String(), "early"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("early never arrived while the command ran")
		}
	}
	_ = cmd.Process.Kill() // a cut stream: the command goes on
	_ = cmd.Wait()
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := h.waitStatus(dir); code != "7" {
		t.Fatalf("status %q, want 7", code)
	}
	out, errOut := h.follow(dir, len("early\n"), 0)
	if out != "late\n" || errOut != "warn\n" {
		t.Fatalf("from offset %d: stdout %q stderr %q; want only what lay past it", len("early\n"), out, errOut)
	}
}

// Output rolls over into segments that the follower deletes once read; a
// follower far behind makes the capper drop output and say how much.
func TestDetachedRunSegmentsAndDrops(t *testing.T) {
	h := newDetachedHere(t, 20, 1000)
	dir := h.start("many", "i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo line-$i; done")
	h.waitStatus(dir)
	out, _ := h.follow(dir, 0, 0)
	var want strings.Builder
	for i := 1; i <= 200; i++ {
		fmt.Fprintf(&want, "line-%d\n", i)
	}
	if out != want.String() {
		t.Fatalf("segmented output differs:\n%s", out)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "out.[0-9]*"))
	if len(segs) != 1 {
		t.Fatalf("segments left after reading: %v; want only the last", segs)
	}

	h = newDetachedHere(t, 20, 3)
	dir = h.start("behind", "i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo line-$i; done")
	h.waitStatus(dir)
	out, _ = h.follow(dir, 0, 0)
	// Three segments of three lines each fill the allowance; the rest,
	// line-10 to line-30 (21 lines of 8 bytes), is dropped and counted.
	if !strings.HasPrefix(out, "line-1\nline-2\n") || !strings.Contains(out, "line-9\n[nsdriver: 168 bytes of output dropped") || strings.Contains(out, "line-10\n") {
		t.Fatalf("a follower far behind: got\n%s", out)
	}
}

// What the command leaves running dies with it, and the status says how
// the command itself ended.
func TestDetachedRunKillsLeftovers(t *testing.T) {
	h := newDetachedHere(t, fleetSegmentBytes, fleetUnreadSegments)
	pidFile := filepath.Join(h.tmp, "pid")
	dir := h.start("leftover", "sleep 300 & echo $! >'"+pidFile+"'; echo bye")
	if code := h.waitStatus(dir); code != "0" {
		t.Fatalf("status %q", code)
	}
	b, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(time.Minute); syscall.Kill(pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatal("the command's background child outlived it")
		}
	}
}

// A repeated start (its first answer lost) finds the first one's command
// instead of starting a second.
func TestDetachedStartIsIdempotent(t *testing.T) {
	h := newDetachedHere(t, fleetSegmentBytes, fleetUnreadSegments)
	count := filepath.Join(h.tmp, "count")
	script := "echo ran >>'" + count + "'"
	first, second := h.start("once", script), h.start("once", script)
	if first != second {
		t.Fatalf("dirs %q and %q", first, second)
	}
	h.waitStatus(first)
	if b, _ := os.ReadFile(count); string(b) != "ran\n" {
		t.Fatalf("the command ran %q times", b)
	}
}
