package nsdriver

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/swamp-club/nsdriver/nsemu"
)

// Each size limit at exactly its value and one past it.

// A line of exactly max bytes is one line, in one chunk or byte by byte;
// max+1 bytes are a piece of max and a piece of 1. Lines split the same
// way wherever the chunks break.
func TestLineSplitterAtItsLimit(t *testing.T) {
	split := func(input string, chunks []int) []string {
		var got []string
		l := lineSplitter{max: maxLineBytes, emit: func(s string) { got = append(got, s) }}
		for _, n := range chunks {
			l.write([]byte(input[:n]))
			input = input[n:]
		}
		l.write([]byte(input))
		l.flush()
		return got
	}
	exact := strings.Repeat("x", maxLineBytes)
	over := exact + "y"
	for _, tc := range []struct {
		name, input string
		want        []int // the lengths of the lines
	}{
		{"exactly max, newline", exact + "\nnext\n", []int{maxLineBytes, 4}},
		{"exactly max, no newline", exact, []int{maxLineBytes}},
		{"max+1, newline", over + "\n", []int{maxLineBytes, 1}},
		{"twice max, newline", exact + exact + "\n", []int{maxLineBytes, maxLineBytes}},
	} {
		for _, chunks := range [][]int{nil, {1}, {maxLineBytes - 1}, {maxLineBytes}, {maxLineBytes, 1}} {
			if sum(chunks) > len(tc.input) {
				continue
			}
			got := split(tc.input, chunks)
			lengths := make([]int, len(got))
			for i, line := range got {
				lengths[i] = len(line)
			}
			if !equalInts(lengths, tc.want) {
				t.Errorf("%s, chunks cut at %v: lines of %v bytes; want %v", tc.name, chunks, lengths, tc.want)
			}
		}
	}
}

func sum(ns []int) (s int) {
	for _, n := range ns {
		s += n
	}
	return s
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// maxOutputBytes of stdout are captured; one byte more is ErrOutputTooLarge.
func TestStdoutCapAtItsLimit(t *testing.T) {
	env := newTestEnv(t, Config{MaxOutputBytes: 1000}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), commandRequest("head -c 1000 /dev/zero"), Callbacks{})
	if res.Status != ResultSuccess || len(res.Outputs) == 0 || len(res.Outputs[0].Content) != 1000 {
		t.Fatalf("exactly maxOutputBytes: want success with 1000 bytes, got %+v", res.Error)
	}
	res = env.driver.Execute(context.Background(), commandRequest("head -c 1001 /dev/zero"), Callbacks{})
	if !errors.Is(res.Err, ErrOutputTooLarge) {
		t.Fatalf("maxOutputBytes+1: want ErrOutputTooLarge, got %+v", res.Error)
	}
}

// A script of exactly maxArgBytes travels as sh -c's argument; one byte
// more is uploaded as a file.
func TestScriptArgumentAtItsLimit(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	for _, tc := range []struct {
		size     int
		uploaded bool
	}{{maxArgBytes, false}, {maxArgBytes + 1, true}} {
		script := "echo ok #"
		script += strings.Repeat("p", tc.size-len(script))
		env.emu.ResetLogs()
		res := env.driver.Execute(context.Background(), commandRequest(script), Callbacks{})
		if res.Status != ResultSuccess || string(res.Outputs[0].Content) != "ok\n" {
			t.Fatalf("%d-byte script: %+v", tc.size, res.Error)
		}
		var inline bool
		for _, c := range env.emu.Commands() {
			inline = inline || (len(c.Argv) == 3 && c.Argv[2] == script)
		}
		if inline == tc.uploaded {
			t.Fatalf("%d-byte script (limit %d): sent inline %v; want uploaded %v", tc.size, maxArgBytes, inline, tc.uploaded)
		}
	}
}

// Stdin of exactly MaxStdinBytes is read whole; one byte more is refused.
func TestStdinAtItsLimit(t *testing.T) {
	for _, tc := range []struct {
		size    int
		refused bool
	}{{MaxStdinBytes, false}, {MaxStdinBytes + 1, true}} {
		x := &execution{req: ExecutionRequest{Stdin: io.LimitReader(zeros{}, int64(tc.size))}}
		wait, stop := x.readStdin()
		data, err := wait(context.Background())
		stop()
		if refused := errors.Is(err, ErrInvalidRequest); refused != tc.refused || (!refused && len(data) != tc.size) {
			t.Fatalf("%d bytes of stdin (limit %d): read %d, err %v; want refused %v", tc.size, MaxStdinBytes, len(data), err, tc.refused)
		}
	}
}
