package nsdriver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

func TestRetriesUnavailable(t *testing.T) {
	var n atomic.Int32
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) < 3 {
			writeJSON(w, 503, map[string]string{"code": "unavailable"})
			return
		}
		writeJSON(w, 200, map[string]any{"metadata": map[string]any{"instanceId": "i", "status": 3}})
	})
	resp, err := api.client(t).DescribeInstance(context.Background(), &DescribeInstanceRequest{InstanceID: "i"})
	if err != nil || resp.Metadata.Status != StatusRunning || n.Load() != 3 {
		t.Fatalf("resp %v err %v calls %d", resp, err, n.Load())
	}
}

// TestRetryTable checks the per-procedure table of retry.go against a
// server that always fails the same way. The client allows 3 attempts. The
// calls retried until their context ends get one the server ends at its
// fourth request, one past MaxAttempts.
func TestRetryTable(t *testing.T) {
	var short context.Context
	var endShort context.CancelFunc
	cases := []struct {
		name   string
		status int
		body   string
		call   func(c *Client, base string) error
		// calls is the exact count, or with atLeast a lower bound.
		calls   int
		atLeast bool
	}{
		{"create is not retried on unavailable", 503, `{"code":"unavailable"}`, func(c *Client, base string) error {
			_, err := c.CreateInstance(context.Background(), &CreateInstanceRequest{})
			return err
		}, 1, false},
		{"resource_exhausted is never retried, even by destroy", 429, `{"code":"resource_exhausted"}`, func(c *Client, base string) error {
			return c.DestroyInstance(context.Background(), &DestroyInstanceRequest{InstanceID: "i"})
		}, 1, false},
		{"decoded code wins over HTTP status", 503, `{"code":"internal"}`, func(c *Client, base string) error {
			_, err := c.DescribeInstance(context.Background(), &DescribeInstanceRequest{InstanceID: "i"})
			return err
		}, 1, false},
		{"HTTP 429 without a Connect body is unavailable", 429, `slow down`, func(c *Client, base string) error {
			_, err := c.ListInstances(context.Background(), &ListInstancesRequest{})
			return err
		}, 3, false},
		{"extendBy is not retried", 503, `{"code":"unavailable"}`, func(c *Client, base string) error {
			_, err := c.ExtendInstance(context.Background(), &ExtendInstanceRequest{InstanceID: "i", ExtendBy: ProtoDuration(time.Minute)})
			return err
		}, 1, false},
		{"newDeadline is retried", 503, `{"code":"unavailable"}`, func(c *Client, base string) error {
			_, err := c.ExtendInstance(context.Background(), &ExtendInstanceRequest{InstanceID: "i", NewDeadline: NewTimestamp(time.Now())})
			return err
		}, 3, false},
		{"list is retried", 503, `{"code":"unavailable"}`, func(c *Client, base string) error {
			_, err := c.ListInstances(context.Background(), &ListInstancesRequest{})
			return err
		}, 3, false},
		{"wait is retried on unavailable", 503, `{"code":"unavailable"}`, func(c *Client, base string) error {
			_, err := c.WaitInstance(context.Background(), &WaitInstanceRequest{InstanceID: "i"}, nil)
			return err
		}, 3, false},
		{"wait ending in internal is a failed boot, not retried", 500, `{"code":"internal"}`, func(c *Client, base string) error {
			_, err := c.WaitInstance(context.Background(), &WaitInstanceRequest{InstanceID: "i"}, nil)
			return err
		}, 1, false},
		{"destroy retries internal until its cap, past MaxAttempts", 500, `{"code":"internal"}`, func(c *Client, base string) error {
			return c.DestroyInstance(short, &DestroyInstanceRequest{InstanceID: "i"})
		}, 4, true},
		{"destroy retries aborted", 409, `{"code":"aborted"}`, func(c *Client, base string) error {
			return c.DestroyInstance(short, &DestroyInstanceRequest{InstanceID: "i"})
		}, 4, true},
		{"run command sync is not retried on unavailable", 503, `{"code":"unavailable"}`, func(c *Client, base string) error {
			_, err := c.RunCommandSync(context.Background(), base, &RunCommandRequest{})
			return err
		}, 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			short, endShort = context.WithCancel(context.Background())
			defer endShort()
			var served atomic.Int32
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
				if served.Add(1) == 4 {
					endShort()
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			})
			if err := tc.call(api.client(t), api.URL); err == nil {
				t.Fatal("want an error")
			}
			got := len(api.requests())
			if (tc.atLeast && got < tc.calls) || (!tc.atLeast && got != tc.calls) {
				t.Fatalf("%d calls, want %d (at least: %v)", got, tc.calls, tc.atLeast)
			}
		})
	}
}

// A request that reached the server and lost its response is repeated only
// by idempotent procedures: a command might run twice.
func TestLostResponseRepeatsOnlyIdempotentCalls(t *testing.T) {
	drop := func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
	cases := []struct {
		name  string
		call  func(c *Client, base string) error
		calls int
	}{
		{"RunCommand", func(c *Client, base string) error {
			_, err := c.RunCommand(context.Background(), base, &RunCommandRequest{InstanceID: "i", Command: &Command{Command: []string{"true"}}}, nil)
			return err
		}, 1},
		{"RunCommandSync", func(c *Client, base string) error {
			_, err := c.RunCommandSync(context.Background(), base, &RunCommandRequest{InstanceID: "i", Command: &Command{Command: []string{"true"}}})
			return err
		}, 1},
		{"CreateInstance", func(c *Client, base string) error {
			_, err := c.CreateInstance(context.Background(), &CreateInstanceRequest{})
			return err
		}, 1},
		{"DestroyInstance", func(c *Client, base string) error {
			return c.DestroyInstance(context.Background(), &DestroyInstanceRequest{InstanceID: "i"})
		}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 {
					drop(w, r)
					return
				}
				writeJSON(w, 200, map[string]any{})
			})
			err := tc.call(api.client(t), api.URL)
			if got := len(api.requests()); got != tc.calls {
				t.Fatalf("%d requests reached the server, want %d (err %v)", got, tc.calls, err)
			}
			if tc.calls == 1 && !errors.Is(err, ErrUnreachable) {
				t.Fatalf("err %v, want ErrUnreachable", err)
			}
		})
	}
}

// A dial that fails sent nothing, so even CreateInstance is repeated.
func TestNeverSentRequestIsRepeatedForEveryProcedure(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"metadata": map[string]any{"instanceId": "i"}})
	})
	var dials atomic.Int32
	dialer := &net.Dialer{}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) <= 2 {
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("socket: too many open files")}
		}
		return dialer.DialContext(ctx, network, addr)
	}}}
	inst, err := api.client(t, WithHTTPClient(hc)).CreateInstance(context.Background(), &CreateInstanceRequest{})
	if err != nil || inst.InstanceID() != "i" || dials.Load() != 3 || len(api.requests()) != 1 {
		t.Fatalf("inst %v err %v after %d dials and %d requests", inst, err, dials.Load(), len(api.requests()))
	}
}

func TestRetriesDroppedConnection(t *testing.T) {
	var n atomic.Int32
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		}
		writeJSON(w, 200, map[string]any{})
	})
	if err := api.client(t).DestroyInstance(context.Background(), &DestroyInstanceRequest{InstanceID: "i"}); err != nil || n.Load() != 2 {
		t.Fatalf("err %v calls %d", err, n.Load())
	}
}

// When the context ends, the error wraps its cause however far the attempt
// got (before: about 1 run in 300 lost it).
func TestRetryStopsWithContext(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 503, map[string]string{"code": "unavailable"})
	})
	c := api.client(t, WithRetryPolicy(RetryPolicy{MaxAttempts: 100, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.ListInstances(ctx, &ListInstancesRequest{})
	if !errors.Is(err, context.DeadlineExceeded) || len(api.requests()) >= 100 {
		t.Fatalf("err %v after %d calls", err, len(api.requests()))
	}
}

// A policy without backoff ("MaxAttempts: 1 disables retries") does not make
// the calls retried until their context ends a busy loop: a destroy against
// a server answering 503 for half a second, and the lost-create lookup, wait at
// least minPersistentWait between tries.
func TestPersistentRetriesKeepAMinimumWait(t *testing.T) {
	const window = 500 * time.Millisecond
	maxRequests := int(window/minPersistentWait) + 1
	for _, policy := range []RetryPolicy{{MaxAttempts: 1}, {}} {
		api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 503, map[string]string{"code": "unavailable", "message": "try later"})
		})
		m := &instances{client: api.client(t, WithRetryPolicy(policy)), logger: slog.New(slog.DiscardHandler), destroyCap: window}
		if m.destroy(context.Background(), "i-1") {
			t.Fatalf("%+v: destroy reported success against a server answering 503", policy)
		}
		if n := len(api.requests()); n < 2 || n > maxRequests {
			t.Fatalf("%+v: destroy sent %d requests in %v; want a retry, and at most %d (%v apart)", policy, n, window, maxRequests, minPersistentWait)
		}
		before := len(api.requests())
		m.reclaim(context.Background(), "create-1")
		if n := len(api.requests()) - before; n < 2 || n > maxRequests {
			t.Fatalf("%+v: the lost-create lookup sent %d requests in %v; want at most %d", policy, n, window, maxRequests)
		}
	}
}
