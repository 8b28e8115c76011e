package nsdriver

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
	"go.uber.org/goleak"
)

// Stdin is read while the VM boots, uploaded, and fed to the command.
func TestCommandStdin(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	req := commandRequest("wc -l; cat | head -c 3")
	req.Stdin = strings.NewReader("1\n2\n3\n4\n5\n")
	res := env.driver.Execute(context.Background(), req, Callbacks{})
	if res.Status != ResultSuccess || string(res.Outputs[0].Content) != "5\n" {
		t.Fatalf("result %+v %q", res.Error, res.Outputs)
	}
	big := commandRequest("true")
	big.Stdin = io.LimitReader(zeros{}, MaxStdinBytes+1)
	res = env.driver.Execute(context.Background(), big, Callbacks{})
	if res.Status != ResultError || !errors.Is(res.Err, ErrInvalidRequest) || !strings.Contains(res.Error, "stdin is over 16 MiB") {
		t.Fatalf("oversized stdin: %+v", res.Error)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A pipe that never closes holds off neither the timeout nor the caller's
// cancel: the result comes, the VM is destroyed, and a reader that can be
// interrupted (an *os.File pipe) is, so no goroutine is left reading it.
func TestStdinThatNeverEndsDoesNotHoldOffTheEnd(t *testing.T) {
	env := newTestEnv(t, Config{Timeout: Milliseconds(time.Second)}, nsemu.Options{})
	ignore := goleak.IgnoreCurrent()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if _, err := pw.WriteString("some input, never closed\n"); err != nil {
		t.Fatal(err)
	}
	req := commandRequest("cat")
	req.Stdin = pr
	res := env.driver.Execute(context.Background(), req, Callbacks{})
	if !errors.Is(res.Err, ErrTimeout) || !strings.Contains(res.Error, "timed out after 1000ms") {
		t.Fatalf("timeout with an open pipe: want a timed-out result, got %+v", res)
	}
	if live := env.emu.LiveInstances(); len(live) != 0 {
		t.Fatalf("timeout with an open pipe left %v alive", live)
	}
	verifyNoLeaks(t, ignore)
	// The caller's file works again afterwards: its read deadline was reset.
	if _, err := pw.WriteString("x"); err != nil {
		t.Fatal(err)
	}
	if n, err := pr.Read(make([]byte, 64)); err != nil || n == 0 {
		t.Fatalf("reading the caller's pipe after Execute: %d bytes, %v; want its data", n, err)
	}

	// A reader without deadlines (io.Pipe) cannot be interrupted; Execute
	// still returns on the caller's cancel, and the read ends when the
	// writer closes.
	ir, iw := io.Pipe()
	req.Stdin = ir
	ctx, cancel := context.WithCancel(context.Background())
	readyThenCancel(env, cancel)
	res = env.driver.Execute(ctx, req, Callbacks{})
	if !errors.Is(res.Err, context.Canceled) || res.Metadata == nil || !res.Metadata.Destroyed {
		t.Fatalf("cancel with an open pipe: want a canceled result with the VM destroyed, got %+v", res)
	}
	iw.Close()
}

// readyThenCancel calls cancel once env's driver has logged a second
// "instance ready": the VM is up and Execute waits for its input.
func readyThenCancel(env *testEnv, cancel context.CancelFunc) {
	go func() {
		defer cancel()
		for end := time.Now().Add(time.Minute); strings.Count(env.logs.String(), "instance ready") < 2 && time.Now().Before(end); {
			time.Sleep(5 * time.Millisecond)
		}
	}()
}
