package nsemu

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	pb "github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta"
)

// The interceptor every call passes: authentication, the call log, the
// RTT, and the fault that applies.

type interceptor struct{ s *Server }

type instanceIDer interface{ GetInstanceId() string }

// begin authenticates, counts and logs the call, adds the RTT and applies a
// fault's delay. It returns the matching fault and a function ending the
// log entry.
func (i *interceptor) begin(ctx context.Context, procedure string, header http.Header) (*Fault, func(string, error), error) {
	s := i.s
	method := procedure[strings.LastIndex(procedure, "/")+1:]
	s.mu.Lock()
	s.counts[method]++
	fault := s.matchFault(method, s.counts[method])
	s.calls = append(s.calls, Call{Method: method, Start: time.Now()})
	idx := len(s.calls) - 1
	s.mu.Unlock()
	end := func(instanceID string, err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if idx < len(s.calls) {
			s.calls[idx].End = time.Now()
			s.calls[idx].InstanceID = instanceID
			if err != nil {
				s.calls[idx].Code = connect.CodeOf(err).String()
			}
		}
	}
	bearer, _ := strings.CutPrefix(header.Get("Authorization"), "Bearer ")
	if isSessionProcedure(procedure) && bearer != s.opts.SessionToken || !isSessionProcedure(procedure) && !s.authorized(bearer) {
		err := connect.NewError(connect.CodeUnauthenticated, errors.New("missing or invalid bearer token"))
		end("", err)
		return nil, nil, err
	}
	delay := s.opts.RTT
	if fault != nil {
		delay += fault.Delay
	}
	if err := sleepCtx(ctx, delay); err != nil {
		err = connect.NewError(contextCode(err), err)
		end("", err)
		return nil, nil, err
	}
	if fault != nil && fault.Drop {
		err := dropConnection(ctx)
		end("", err)
		return nil, nil, err
	}
	if fault != nil && fault.Code != 0 && fault.CutAfter == 0 {
		err := fault.err()
		end("", err)
		return nil, nil, err
	}
	return fault, end, nil
}

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		fault, end, err := i.begin(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		resp, err := next(ctx, req)
		id := ""
		if m, ok := req.Any().(instanceIDer); ok {
			id = m.GetInstanceId()
		}
		if id == "" && resp != nil {
			if d, ok := resp.Any().(*pb.DescribeInstanceResponse); ok {
				id = d.GetMetadata().GetInstanceId()
			}
		}
		if fault != nil && fault.LoseResponse && err == nil {
			err = dropConnection(ctx)
			resp = nil
		}
		end(id, err)
		return resp, err
	}
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		fault, end, err := i.begin(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		wrapped := &cuttingConn{StreamingHandlerConn: conn, cutAfter: -1, cancel: cancel}
		wrapped.w, _ = ctx.Value(responseWriterKey{}).(http.ResponseWriter)
		if fault != nil && fault.CutAfter != 0 {
			wrapped.cutAfter = max(fault.CutAfter, 0)
			if fault.Code != 0 {
				wrapped.failWith = fault.err()
			}
		}
		if fault != nil && fault.CutAfterTime > 0 {
			timer := time.AfterFunc(fault.CutAfterTime, wrapped.cutNow)
			defer timer.Stop()
		}
		if wrapped.cutAfter == 0 {
			err = wrapped.cut()
		} else {
			err = next(ctx, wrapped)
		}
		wrapped.mu.Lock()
		defer wrapped.mu.Unlock()
		wrapped.finished = true
		if wrapped.cutAfter >= 0 && !wrapped.wasCut {
			// The handler finished within the allowance: still drop the
			// connection instead of ending the stream.
			err = wrapped.cut()
		}
		end(wrapped.instanceID, err)
		return err
	}
}

// contextCode is the Connect code for a context's end: the caller's
// Connect-Timeout-Ms passing is deadline_exceeded, not canceled.
func contextCode(err error) connect.Code {
	if errors.Is(err, context.DeadlineExceeded) {
		return connect.CodeDeadlineExceeded
	}
	return connect.CodeCanceled
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
