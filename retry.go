package nsdriver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"time"
)

// The one retry policy (design.md decision 15). Each procedure says once
// whether it is idempotent — connect-go calls this its idempotency level —
// and which failures it treats as transient; transport.call applies it.

// idempotency says whether a call may be repeated once its request may have
// reached the server.
type idempotency int

const (
	// sideEffects: a second call could do the work twice (create a second
	// VM, append a spilled upload twice). Repeated only when the request
	// provably never left this machine.
	sideEffects idempotency = iota
	// idempotent: repeating the call has the effect of one call.
	idempotent
)

// procedure is one API method and how its failures are treated.
type procedure struct {
	// path is "<package>.<Service>/<Method>", appended to the base URL.
	path        string
	idempotency idempotency
	// transient are the Connect codes retried (idempotent procedures only).
	transient []Code
	// untilDeadline: retried until the context ends, not MaxAttempts
	// times (a destroy is worth its whole cap).
	untilDeadline bool
}

const (
	computeService = "namespace.cloud.compute.v1beta.ComputeService/"
	commandService = "namespace.cloud.compute.v1beta.CommandService/"
)

// The procedures the client calls. A WaitInstance that ends in internal is
// a failed boot, not a blip, so only unavailable is transient there; a
// destroy also retries what a struggling server answers mid-restart.
var (
	procCreateInstance   = procedure{path: computeService + "CreateInstance", idempotency: sideEffects}
	procWaitInstance     = procedure{path: computeService + "WaitInstance", idempotency: idempotent, transient: []Code{CodeUnavailable}}
	procWaitInstanceSync = procedure{path: computeService + "WaitInstanceSync", idempotency: idempotent, transient: []Code{CodeUnavailable}}
	procDescribeInstance = procedure{path: computeService + "DescribeInstance", idempotency: idempotent, transient: []Code{CodeUnavailable}}
	procListInstances    = procedure{path: computeService + "ListInstances", idempotency: idempotent, transient: []Code{CodeUnavailable}}
	procDestroyInstance  = procedure{path: computeService + "DestroyInstance", idempotency: idempotent, untilDeadline: true,
		transient: []Code{CodeUnavailable, CodeInternal, CodeUnknown, CodeDeadlineExceeded, CodeAborted}}
	// ExtendInstance with newDeadline or ensureMinimum sets an absolute
	// deadline; with extendBy a repeat would extend twice.
	procExtendInstanceTo = procedure{path: computeService + "ExtendInstance", idempotency: idempotent, transient: []Code{CodeUnavailable}}
	procExtendInstanceBy = procedure{path: computeService + "ExtendInstance", idempotency: sideEffects}
	procRunCommand       = procedure{path: commandService + "RunCommand", idempotency: sideEffects}
	procRunCommandSync   = procedure{path: commandService + "RunCommandSync", idempotency: sideEffects}
)

// retryable reports whether a failed attempt of p may be repeated.
func (p procedure) retryable(err error) bool {
	if neverSent(err) {
		return true // whatever the procedure: the server saw nothing
	}
	if p.idempotency != idempotent {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return slices.Contains(p.transient, apiErr.Code)
	}
	// A connection lost before the response, or a stream cut mid-way.
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrStreamTruncated)
}

// errNotSent marks a request of which no header was written.
var errNotSent = errors.New("the request was not sent")

// neverSent reports whether err proves the request never left: no header
// was written, or the dial failed (refused, no route, no file descriptor).
func neverSent(err error) bool {
	var op *net.OpError
	return errors.Is(err, errNotSent) || (errors.As(err, &op) && op.Op == "dial")
}

// RetryPolicy sets how often and how fast transient failures are retried.
// Which failures are transient is decided per procedure, not here.
type RetryPolicy struct {
	// MaxAttempts counts the first try; 1 disables retries (a destroy is
	// retried until its context ends regardless, at least 100 ms apart).
	MaxAttempts int
	// InitialBackoff is the wait before the second try; it doubles per try.
	InitialBackoff time.Duration
	// MaxBackoff caps each wait. Each wait is jittered to 50–100 %.
	MaxBackoff time.Duration
}

// DefaultRetryPolicy is 5 attempts, 100 ms doubling to at most 2 s.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second}
}

// minPersistentWait is the least wait between tries of a call that is
// retried until its context ends (a destroy, the lost-create lookup): a
// policy without backoff must not turn those into a busy loop of requests.
const minPersistentWait = 100 * time.Millisecond

// persistentBackoff is backoff for calls retried until their context ends.
func (r RetryPolicy) persistentBackoff(attempt int) time.Duration {
	return max(r.backoff(attempt), minPersistentWait)
}

func (r RetryPolicy) backoff(attempt int) time.Duration {
	d := r.InitialBackoff << min(attempt, 30)
	if d > r.MaxBackoff || d <= 0 {
		d = r.MaxBackoff
	}
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// call runs attempt, with a token for each try, until it succeeds, fails
// for good, or p's retries are spent. A call refused as unauthenticated is
// repeated once, whatever the procedure (a refused call ran nothing), when
// the token source could renew the refused token. When ctx ends, the error
// always wraps ctx.Err(), however far the attempt got.
func (t *transport) call(ctx context.Context, p procedure, attempt func(token string) error) error {
	renewed := false
	for try := 0; ; try++ {
		token, err := t.token.Token(ctx)
		if err != nil {
			return fmt.Errorf("getting the Namespace token: %w", err)
		}
		err = attempt(token)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return withContextErr(err, ctx)
		}
		if r, ok := t.token.(renewer); ok && !renewed && CodeOf(err) == CodeUnauthenticated && r.renew(ctx, token) {
			renewed = true
			try--
			continue
		}
		if !p.retryable(err) || (!p.untilDeadline && try+1 >= t.retry.MaxAttempts) {
			return err
		}
		wait := t.retry.backoff(try)
		if p.untilDeadline {
			wait = t.retry.persistentBackoff(try)
		}
		t.logger.Debug("retrying Namespace API call", "procedure", p.path, "attempt", try+2, "after", wait, "error", err)
		if !sleepCtx(ctx, wait) {
			return withContextErr(err, ctx)
		}
	}
}

// sleepCtx waits d, or less when ctx ends; it reports whether ctx is live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

func withContextErr(err error, ctx context.Context) error {
	if errors.Is(err, ctx.Err()) {
		return err
	}
	return errors.Join(err, ctx.Err())
}
