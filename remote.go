package nsdriver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// One remote command: where it runs, how its output streams back, how an
// upload too big for one call spills into earlier ones.

// maxLineBytes bounds one stderr line held in memory; a longer one is
// handed over in pieces.
const maxLineBytes = 1 << 20

// remote runs commands in one instance's container.
type remote struct {
	client   *Client
	logger   *slog.Logger
	endpoint string // the instance's CommandService endpoint
	id       string // the instance id
	env      []EnvironmentVariable
}

func newRemote(client *Client, logger *slog.Logger, inst *instance, env []EnvironmentVariable) *remote {
	return &remote{client: client, logger: logger, endpoint: inst.CommandEndpoint(), id: inst.InstanceID(), env: env}
}

func (r *remote) request(argv []string) *RunCommandRequest {
	return &RunCommandRequest{InstanceID: r.id, TargetContainerName: containerName,
		Command: &Command{Command: argv, EnvVars: r.env}}
}

// maxSpillsAtOnce bounds the spill calls in flight: each carries up to
// 1.5 MiB, and a few at once hide the round trips.
const maxSpillsAtOnce = 4

// spill sends the parts of an upload that do not fit in its final call,
// several at once: each writes its own numbered part file.
func (r *remote) spill(ctx context.Context, plan uploadPlan) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(maxSpillsAtOnce)
	for i, argv := range plan.spills {
		g.Go(func() error {
			resp, err := r.client.RunCommandSync(ctx, r.endpoint, r.request(argv))
			if err != nil {
				return fmt.Errorf("uploading part %d of %d: %w", i+1, len(plan.spills)+1, err)
			}
			if resp.ExitCode != 0 {
				return fmt.Errorf("uploading part %d of %d failed (exit %d): %s; the image needs sh, base64 and tar",
					i+1, len(plan.spills)+1, resp.ExitCode, strings.TrimSpace(string(resp.Stderr)))
			}
			return nil
		})
	}
	return g.Wait()
}

// streamed is what one streamed command produced.
type streamed struct {
	stdout   chunkedCapture
	stderr   bytes.Buffer
	exitCode int
	duration time.Duration
}

// Chunk sizes of stdout's capture: small outputs stay small, large ones
// are stored in a few big chunks.
const (
	firstCaptureChunk = 32 << 10
	maxCaptureChunk   = 1 << 20
)

// chunkedCapture is stdout's capture. Its chunks never move, so nothing is
// copied as it grows (a doubling buffer copied and first-touched about
// twice the output), no chunk is left part-empty but the last, and a piece
// handed to a sink stays valid. Bytes joins the chunks once, into a buffer
// of the exact size.
type chunkedCapture struct {
	chunks [][]byte
	n      int
}

func (c *chunkedCapture) Len() int { return c.n }

// copyStep copies at most 64 KiB. A long copy cannot be preempted, and the
// collector spun waiting for one (a quarter of the CPU of a 64 MiB output);
// a call between steps is a point where it can stop the goroutine at once.
//
//go:noinline
func copyStep(dst, src []byte) int {
	return copy(dst, src[:min(len(src), 64<<10)])
}

// Write stores p, filling the last chunk before it starts the next, and
// hands each stored piece (two when p crosses into a new chunk) to stored.
func (c *chunkedCapture) Write(p []byte, stored func([]byte)) {
	c.n += len(p)
	for len(p) > 0 {
		last := len(c.chunks) - 1
		if last < 0 || len(c.chunks[last]) == cap(c.chunks[last]) {
			size := firstCaptureChunk
			if last >= 0 {
				size = min(2*cap(c.chunks[last]), maxCaptureChunk)
			}
			c.chunks = append(c.chunks, make([]byte, 0, size))
			last++
		}
		chunk := c.chunks[last]
		take := min(len(p), cap(chunk)-len(chunk))
		c.chunks[last] = append(chunk, p[:take]...)
		if stored != nil {
			stored(c.chunks[last][len(chunk):])
		}
		p = p[take:]
	}
}

// Pieces returns the capture as stored, without joining it.
func (c *chunkedCapture) Pieces() [][]byte { return c.chunks }

// Bytes returns the whole capture, joining the chunks the first time.
func (c *chunkedCapture) Bytes() []byte {
	switch len(c.chunks) {
	case 0:
		return nil
	case 1:
		return c.chunks[0]
	}
	joined := make([]byte, c.n)
	at := 0
	for _, chunk := range c.chunks {
		for len(chunk) > 0 {
			n := copyStep(joined[at:], chunk)
			at, chunk = at+n, chunk[n:]
		}
	}
	c.chunks = [][]byte{joined}
	return joined
}

// outputSinks say where a streamed command's output goes as it arrives.
type outputSinks struct {
	// onStdout gets each stdout chunk (may be nil).
	onStdout func([]byte)
	// onLine gets each stderr line, split and capped at maxLineBytes.
	onLine func(string)
	// limit caps captured stdout (an error beyond it) and captured stderr
	// (silently, since its lines have been handed over already).
	limit int64
}

// stream runs argv, capturing stdout and stderr and handing them to sinks
// as they arrive. Stdout over the limit stops the command with
// ErrOutputTooLarge.
func (r *remote) stream(ctx context.Context, argv []string, sinks outputSinks) (*streamed, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	limit := sinks.limit
	out := &streamed{}
	lines := lineSplitter{emit: sinks.onLine, max: maxLineBytes}
	r.logger.Info("running", "instance", r.id)
	began := time.Now()
	code, err := r.client.RunCommand(ctx, r.endpoint, r.request(argv), func(s OutputStream, data []byte) {
		switch s {
		case StreamStdout:
			if int64(out.stdout.Len()+len(data)) > limit {
				cancel(fmt.Errorf("%w: stdout passed %d bytes; raise maxOutputBytes or write less", ErrOutputTooLarge, limit))
				return
			}
			// Sinks get the captured copy, which stays valid; data, the
			// client's scratch, does not.
			out.stdout.Write(data, sinks.onStdout)
		default:
			if room := limit - int64(out.stderr.Len()); room > 0 {
				out.stderr.Write(data[:min(int64(len(data)), room)])
			}
			lines.write(data)
		}
	})
	lines.flush()
	out.exitCode, out.duration = code, time.Since(began)
	if cause := context.Cause(ctx); errors.Is(cause, ErrOutputTooLarge) {
		return nil, cause
	}
	if err != nil {
		return nil, fmt.Errorf("running the command: %w", err)
	}
	return out, nil
}

// workloadEnv is the workload environment: the config's env and the trace
// headers. It travels in the API's env fields, never in shell text.
func workloadEnv(cfgEnv map[string]string, traceHeaders map[string]string) []EnvironmentVariable {
	var env []EnvironmentVariable
	for _, k := range sortedKeys(cfgEnv) {
		env = append(env, EnvironmentVariable{Name: k, Value: cfgEnv[k]})
	}
	for _, k := range sortedKeys(traceHeaders) {
		switch strings.ToLower(k) {
		case "traceparent", "tracestate":
			env = append(env, EnvironmentVariable{Name: strings.ToUpper(k), Value: traceHeaders[k]})
		}
	}
	return env
}

// lineSplitter turns chunks into lines; a partial last line waits for
// flush. With max set, a line longer than max is emitted in pieces of that
// size, as soon as it is known to be longer; one of exactly max bytes stays
// one line, however its bytes arrive.
type lineSplitter struct {
	buf  []byte
	max  int
	emit func(string)
}

func (l *lineSplitter) write(data []byte) {
	l.buf = append(l.buf, data...)
	for len(l.buf) > 0 {
		i := bytes.IndexByte(l.buf, '\n')
		switch {
		case l.max > 0 && (i > l.max || (i < 0 && len(l.buf) > l.max)):
			l.emit(string(l.buf[:l.max]))
			l.buf = l.buf[l.max:]
		case i >= 0:
			l.emit(strings.TrimSuffix(string(l.buf[:i]), "\r"))
			l.buf = l.buf[i+1:]
		default:
			return
		}
	}
}

func (l *lineSplitter) flush() {
	if len(l.buf) > 0 {
		l.emit(strings.TrimSuffix(string(l.buf), "\r"))
		l.buf = nil
	}
}
