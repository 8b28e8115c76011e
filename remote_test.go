package nsdriver

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

func TestChunkedCaptureKeepsPiecesAndJoinsOnce(t *testing.T) {
	var c chunkedCapture
	var want bytes.Buffer
	var stored []string
	var copies [][]byte
	keep := func(piece []byte) { copies = append(copies, piece) }
	// Pieces that cross chunk boundaries, one larger than any chunk.
	for i, size := range []int{10, firstCaptureChunk - 5, 7, 3 * firstCaptureChunk, maxCaptureChunk + 1, 1} {
		p := bytes.Repeat([]byte{byte('a' + i)}, size)
		c.Write(p, keep)
		stored = append(stored, string(p))
		want.Write(p)
	}
	// Handed-over pieces are never moved or overwritten, and together
	// they are what was written.
	if string(bytes.Join(copies, nil)) != strings.Join(stored, "") {
		t.Fatal("the pieces handed over changed or are out of order")
	}
	for i, chunk := range c.chunks[:len(c.chunks)-1] {
		if len(chunk) != cap(chunk) {
			t.Fatalf("chunk %d is %d of %d bytes full; only the last may have room", i, len(chunk), cap(chunk))
		}
	}
	if c.Len() != want.Len() || len(c.chunks) < 3 {
		t.Fatalf("len %d in %d chunks, want %d in several", c.Len(), len(c.chunks), want.Len())
	}
	got := c.Bytes()
	if !bytes.Equal(got, want.Bytes()) || len(c.chunks) != 1 || &c.Bytes()[0] != &got[0] {
		t.Fatal("Bytes did not join the chunks once, in order")
	}
	var empty chunkedCapture
	if empty.Bytes() != nil {
		t.Fatal("an empty capture is nil content")
	}
}

func TestSpillsRunAtOnceAndStopOnFailure(t *testing.T) {
	var inFlight atomic.Int32
	together := make(chan struct{})
	var once sync.Once
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if inFlight.Add(1) == 2 {
			once.Do(func() { close(together) })
		}
		select { // each spill waits until a second one is in flight
		case <-together:
		case <-time.After(time.Minute):
		}
		code := 0
		if bytes.Contains(mustRead(t, r), []byte("upload.b64.0002")) {
			code = 3
		}
		writeJSON(w, 200, map[string]any{"exitCode": code, "stderr": base64.StdEncoding.EncodeToString([]byte("disk full\n"))})
	})
	plan, err := planUpload("run", splitArgs(strings.Repeat("A", 7<<20)), "true", nil)
	if err != nil || len(plan.spills) < 3 {
		t.Fatalf("plan with %d spills: %v", len(plan.spills), err)
	}
	r := &remote{client: api.client(t), logger: slog.New(slog.DiscardHandler), endpoint: api.URL, id: "i"}
	err = r.spill(context.Background(), plan)
	select {
	case <-together:
	default:
		t.Fatal("no two spills were in flight at once")
	}
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("uploading part 3 of %d failed (exit 3): disk full", len(plan.spills)+1)) {
		t.Fatalf("err %v", err)
	}
}

func mustRead(t *testing.T, r *http.Request) []byte {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
