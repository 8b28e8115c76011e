package nsemu

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
)

// Injected faults: what can go wrong, and the connection-level tricks
// (drops, cuts, a guarded writer) that make it happen.

// Fault is an injected failure. Method names a method ("CreateInstance",
// "RunCommand", …) or "Boot" (an instance boot that ends in ERROR, so that
// WaitInstance ends with internal).
type Fault struct {
	Method string
	// Nth is the 1-based call (or boot) the fault starts at; 0 means 1.
	Nth int
	// Count is how many consecutive calls it hits; 0 means 1, -1 all.
	Count int
	// Code fails the call with this code (0: the call proceeds).
	Code connect.Code
	// Message is the error message (default: "injected fault").
	Message string
	// Delay holds the call this long (respecting cancellation) first.
	Delay time.Duration
	// CutAfter > 0 acts on a stream after that many messages: with Code it
	// ends the stream with that error, without it drops the connection.
	// -1 drops the connection before the first message.
	CutAfter int
	// CutAfterTime > 0 drops a stream's connection that long after it
	// began, whatever it sent: a proxy or an HTTP/2 reset mid-command. A
	// RunCommand's command dies with its stream, as on a server that sees
	// its caller go; what the command started in a session of its own
	// (setsid) goes on until the instance is destroyed.
	CutAfterTime time.Duration
	// Drop closes the connection without handling the call (a unary or a
	// stream): the client sees a connection reset, the server did nothing.
	Drop bool
	// LoseResponse handles a unary call in full (a create commits) and then
	// closes the connection instead of answering: the client cannot know
	// what happened.
	LoseResponse bool
}

// InjectFault adds a fault at run time.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// matchFault returns the fault for call number n of method; callers hold s.mu.
func (s *Server) matchFault(method string, n int) *Fault {
	for _, f := range s.faults {
		nth := max(f.Nth, 1)
		count := f.Count
		if count == 0 {
			count = 1
		}
		if f.Method == method && n >= nth && (count < 0 || n < nth+count) {
			return &f
		}
	}
	return nil
}

func (f *Fault) err() error {
	msg := f.Message
	if msg == "" {
		msg = "injected fault"
	}
	return connect.NewError(f.Code, errors.New(msg))
}

// dropConnection closes the request's connection without a response.
func dropConnection(ctx context.Context) error {
	if w, ok := ctx.Value(responseWriterKey{}).(http.ResponseWriter); ok {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
		}
	}
	return connect.NewError(connect.CodeUnavailable, errors.New("nsemu: connection dropped by an injected fault"))
}

type responseWriterKey struct{}

// withResponseWriter lets a fault reach the connection under a stream.
func withResponseWriter(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(EmulatorHeader, "nsemu")
		g := &hijackGuard{ResponseWriter: w}
		h.ServeHTTP(g, r.WithContext(context.WithValue(r.Context(), responseWriterKey{}, http.ResponseWriter(g))))
	})
}

// hijackGuard turns writes and flushes after a fault's hijack into errors
// and no-ops; net/http panics on a flush of a hijacked connection.
type hijackGuard struct {
	http.ResponseWriter
	hijacked atomic.Bool
}

func (g *hijackGuard) Write(b []byte) (int, error) {
	if g.hijacked.Load() {
		return 0, http.ErrHijacked
	}
	return g.ResponseWriter.Write(b)
}

func (g *hijackGuard) WriteHeader(code int) {
	if !g.hijacked.Load() {
		g.ResponseWriter.WriteHeader(code)
	}
}

func (g *hijackGuard) Flush() {
	if !g.hijacked.Load() {
		_ = http.NewResponseController(g.ResponseWriter).Flush()
	}
}

func (g *hijackGuard) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	g.hijacked.Store(true)
	return http.NewResponseController(g.ResponseWriter).Hijack()
}

func (g *hijackGuard) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// cuttingConn drops the TCP connection after a number of messages, which the
// client sees as a stream cut mid-way. It also notes the instance id.
type cuttingConn struct {
	connect.StreamingHandlerConn
	mu         sync.Mutex // a timed cut races the handler's sends
	finished   bool       // the handler returned: too late to cut
	cancel     context.CancelFunc
	w          http.ResponseWriter
	failWith   error // nil: drop the connection
	cutAfter   int   // -1: never
	sent       int
	wasCut     bool
	instanceID string
}

func (c *cuttingConn) Receive(msg any) error {
	err := c.StreamingHandlerConn.Receive(msg)
	if m, ok := msg.(instanceIDer); ok && err == nil {
		c.instanceID = m.GetInstanceId()
	}
	return err
}

func (c *cuttingConn) Send(msg any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wasCut {
		return connect.NewError(connect.CodeUnavailable, errors.New("nsemu: connection cut by an injected fault"))
	}
	if c.cutAfter >= 0 && c.sent >= c.cutAfter {
		return c.cut()
	}
	c.sent++
	return c.StreamingHandlerConn.Send(msg)
}

// cutNow cuts the stream from outside the handler (a timed cut) and ends
// the handler's context, as a server does when its caller goes.
func (c *cuttingConn) cutNow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.wasCut && !c.finished {
		_ = c.cut()
	}
	c.cancel()
}

// cut flushes what was sent and closes the connection without the end of
// the stream; callers hold c.mu or own c alone.
func (c *cuttingConn) cut() error {
	c.wasCut = true
	if c.failWith != nil {
		return c.failWith
	}
	errCut := connect.NewError(connect.CodeUnavailable, errors.New("nsemu: connection cut by an injected fault"))
	if c.w == nil {
		return errCut
	}
	rc := http.NewResponseController(c.w)
	_ = rc.Flush()
	if conn, _, err := rc.Hijack(); err == nil {
		_ = conn.Close()
	}
	return errCut
}
