package nsdriver

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"
)

// Version is the nsdriver release; it travels in the User-Agent header.
var Version = "0.1.0-dev"

// Client calls Namespace's Compute API (ComputeService at the regional
// endpoint, CommandService at each instance's own endpoint) over Connect
// with the JSON codec. It is safe for concurrent use.
type Client struct {
	t        transport
	endpoint string
	region   string
}

// NewClient builds a Client. Without WithToken or WithTokenSource the token
// comes from the chain NewTokenSource walks. The endpoint is WithEndpoint's,
// else WithRegion's, else NSC_ENDPOINT, else the region the token's claims
// name (as nsc reads them), else us.
func NewClient(opts ...ClientOption) (*Client, error) {
	o := clientOptions{retry: DefaultRetryPolicy()}
	for _, opt := range opts {
		opt.applyToClient(&o)
	}
	if o.token == nil {
		src, err := NewTokenSource("", "")
		if err != nil {
			return nil, err
		}
		o.token = src
	}
	endpoint, region, err := resolveEndpoint(o.endpoint, o.region, o.token)
	if err != nil {
		return nil, err
	}
	if _, err := checkEndpoint(endpoint); err != nil {
		return nil, err
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.retry.MaxAttempts < 1 {
		o.retry.MaxAttempts = 1
	}
	hc := http.Client{Transport: defaultTransport}
	if o.httpClient != nil {
		hc = *o.httpClient
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{
		t:        transport{http: &hc, token: o.token, logger: o.logger, retry: o.retry, emulated: new(atomic.Bool)},
		endpoint: endpoint,
		region:   region,
	}, nil
}

// defaultTransport is shared so that every Client reuses warm connections.
var defaultTransport = newTransport(nil, nil)

// maxDialsPerHost bounds the TLS dials in progress to one host. Namespace
// speaks HTTP/2 over TLS, where this is all MaxConnsPerHost limits: a burst
// of calls waits for a connection being set up and multiplexes on it,
// instead of each dialing its own (a thousand at once ran out of file
// descriptors). An https endpoint that only spoke HTTP/1.1 would be capped
// at this many calls in flight.
const maxDialsPerHost = 16

// newTransport makes the client's round tripper: HTTPS through a transport
// that shares HTTP/2 connections, plain http (the local emulator, HTTP/1.1,
// where a connection cap would cap the calls in flight) through one
// without a cap. tlsConfig and dial are for tests (nil: the defaults).
func newTransport(tlsConfig *tls.Config, dial func(ctx context.Context, network, addr string) (net.Conn, error)) http.RoundTripper {
	plain := http.DefaultTransport.(*http.Transport).Clone()
	plain.MaxIdleConnsPerHost = 64
	if dial != nil {
		plain.DialContext = dial
	}
	secure := plain.Clone()
	secure.ForceAttemptHTTP2 = true
	secure.MaxConnsPerHost = maxDialsPerHost
	if tlsConfig != nil {
		secure.TLSClientConfig = tlsConfig
	}
	return schemeTransport{secure: secure, plain: plain}
}

// schemeTransport sends https requests through secure, others through plain.
type schemeTransport struct{ secure, plain http.RoundTripper }

func (t schemeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "https" {
		return t.secure.RoundTrip(req)
	}
	return t.plain.RoundTrip(req)
}

// Endpoint is the ComputeService base URL in use.
func (c *Client) Endpoint() string { return c.endpoint }

// Emulated reports whether the API answering has said it is nsemu, the
// emulator: its instances run commands on its own machine, at no charge.
// It is false until the first answer.
func (c *Client) Emulated() bool { return c.t.emulated != nil && c.t.emulated.Load() }

// Region names the region the Client's calls go to: us or eu, the region
// the token claims, or for an endpoint given outright its host.
func (c *Client) Region() string { return c.region }

// CreateInstance creates an instance and returns at once, before it runs.
// It is repeated only when the request provably never left (the dial
// failed): a repeat after a lost response could leave a second VM running.
func (c *Client) CreateInstance(ctx context.Context, req *CreateInstanceRequest) (*DescribeInstanceResponse, error) {
	var resp DescribeInstanceResponse
	if err := c.t.unary(ctx, c.endpoint, procCreateInstance, req, &resp); err != nil {
		return nil, err
	}
	if resp.InstanceID() == "" {
		return nil, errors.New("CreateInstance: the response has no instance id")
	}
	return &resp, nil
}

// WaitInstance streams the instance's status until it is RUNNING, handing
// each update to onUpdate (which may be nil) as it arrives, and returns the
// last metadata. It may be retried on transient failures, so onUpdate can
// see a status twice.
func (c *Client) WaitInstance(ctx context.Context, req *WaitInstanceRequest, onUpdate func(*WaitInstanceResponse)) (*InstanceMetadata, error) {
	var last *InstanceMetadata
	err := c.t.serverStream(ctx, c.endpoint, procWaitInstance, req, func(msg []byte) error {
		var update WaitInstanceResponse
		if err := json.Unmarshal(msg, &update); err != nil {
			return fmt.Errorf("decoding status update: %w", err)
		}
		if update.Metadata != nil {
			last = update.Metadata
		}
		if onUpdate != nil {
			onUpdate(&update)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if last == nil {
		return nil, errors.New("WaitInstance: the stream ended without a status")
	}
	return last, nil
}

// WaitInstanceSync waits in one unary call until the instance is RUNNING.
func (c *Client) WaitInstanceSync(ctx context.Context, req *WaitInstanceRequest) (*WaitInstanceResponse, error) {
	var resp WaitInstanceResponse
	if err := c.t.unary(ctx, c.endpoint, procWaitInstanceSync, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// DescribeInstance returns an instance's current description.
func (c *Client) DescribeInstance(ctx context.Context, req *DescribeInstanceRequest) (*DescribeInstanceResponse, error) {
	var resp DescribeInstanceResponse
	if err := c.t.unary(ctx, c.endpoint, procDescribeInstance, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// DefaultDestroyCap bounds DestroyInstance's retries when its context has
// no deadline of its own.
const DefaultDestroyCap = 60 * time.Second

// DestroyInstance destroys an instance. It is idempotent, and transient
// failures are retried until ctx ends, or for DefaultDestroyCap when ctx
// has no deadline: a VM left behind costs money until its deadline.
func (c *Client) DestroyInstance(ctx context.Context, req *DestroyInstanceRequest) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultDestroyCap)
		defer cancel()
	}
	return c.t.unary(ctx, c.endpoint, procDestroyInstance, req, &struct{}{})
}

// ListInstances returns one page of instances; see ListAllInstances.
func (c *Client) ListInstances(ctx context.Context, req *ListInstancesRequest) (*ListInstancesResponse, error) {
	var resp ListInstancesResponse
	if err := c.t.unary(ctx, c.endpoint, procListInstances, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// ListAllInstances follows pagination cursors and returns every page's
// instances.
func (c *Client) ListAllInstances(ctx context.Context, req *ListInstancesRequest) ([]InstanceMetadata, error) {
	page := *req
	var all []InstanceMetadata
	for {
		resp, err := c.ListInstances(ctx, &page)
		if err != nil {
			return all, err
		}
		all = append(all, resp.Instances...)
		if len(resp.PaginationCursor) == 0 {
			return all, nil
		}
		page.PaginationCursor = resp.PaginationCursor
	}
}

// ExtendInstance moves an instance's deadline. Requests with NewDeadline or
// EnsureMinimum are idempotent and retried; ExtendBy is not, since a retry
// after a lost response would extend twice.
func (c *Client) ExtendInstance(ctx context.Context, req *ExtendInstanceRequest) (*ExtendInstanceResponse, error) {
	p := procExtendInstanceBy
	if req.ExtendBy == 0 && (!req.NewDeadline.IsZero() || req.EnsureMinimum != 0) {
		p = procExtendInstanceTo
	}
	var resp ExtendInstanceResponse
	if err := c.t.unary(ctx, c.endpoint, p, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// RunCommand runs a command in an instance's container through the
// instance's CommandService endpoint (DescribeInstanceResponse.CommandEndpoint),
// handing stdout and stderr chunks to onOutput as they arrive, and returns
// the exit code. A chunk is valid only during the call: onOutput copies
// what it keeps. Like RunCommandSync, it is repeated only when the request
// provably never left: the command may have side effects.
func (c *Client) RunCommand(ctx context.Context, endpoint string, req *RunCommandRequest, onOutput func(OutputStream, []byte)) (int, error) {
	if endpoint == "" {
		return 0, errors.New("RunCommand: the instance has no command service endpoint")
	}
	exitCode := -1
	var out outputChunk
	err := c.t.serverStream(ctx, endpoint, procRunCommand, req, func(msg []byte) error {
		stream, data, exit, err := out.decode(msg)
		if err != nil {
			return fmt.Errorf("decoding command output: %w", err)
		}
		if len(data) > 0 && onOutput != nil {
			onOutput(stream, data)
		}
		if exit != nil {
			exitCode = int(exit.ExitCode)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if exitCode < 0 {
		return 0, errors.New("RunCommand: the stream ended without an exit status")
	}
	return exitCode, nil
}

// outputChunk decodes RunCommandResponse messages with buffers it reuses.
// The base64 of data, nearly all of a message, is found with byte searches
// and decoded straight from the message bytes; encoding/json parses only
// what is left (stream, exitStatus). Anything unusual takes the general
// path. A chunk costs no allocation once the buffers have grown.
type outputChunk struct {
	msg struct {
		Stream     OutputStream    `json:"stream"`
		Data       json.RawMessage `json:"data"`
		ExitStatus *ExitStatus     `json:"exitStatus"`
	}
	rest, decoded []byte
}

var dataKey = []byte(`"data":"`)

func (o *outputChunk) decode(msg []byte) (OutputStream, []byte, *ExitStatus, error) {
	o.msg.Stream, o.msg.Data, o.msg.ExitStatus = "", o.msg.Data[:0], nil
	if i := bytes.Index(msg, dataKey); i >= 0 {
		start := i + len(dataKey)
		if end := bytes.IndexByte(msg[start:], '"'); end >= 0 && bytes.IndexByte(msg[start:start+end], '\\') < 0 {
			b64 := msg[start : start+end]
			o.rest = append(append(append(o.rest[:0], msg[:i]...), `"data":""`...), msg[start+end+1:]...)
			if json.Unmarshal(o.rest, &o.msg) == nil {
				if data, err := o.base64(b64); err == nil {
					return o.msg.Stream, data, o.msg.ExitStatus, nil
				}
			}
			o.msg.Stream, o.msg.Data, o.msg.ExitStatus = "", o.msg.Data[:0], nil
		}
	}
	// The general path: the whole message through encoding/json.
	if err := json.Unmarshal(msg, &o.msg); err != nil {
		return "", nil, nil, err
	}
	raw := bytes.TrimSpace(o.msg.Data)
	if len(raw) < 2 || raw[0] != '"' {
		return o.msg.Stream, nil, o.msg.ExitStatus, nil // absent or null
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", nil, nil, err
	}
	data, err := o.base64([]byte(s))
	if err != nil {
		return "", nil, nil, fmt.Errorf("data: %w", err)
	}
	return o.msg.Stream, data, o.msg.ExitStatus, nil
}

// base64 decodes b64 into the reused buffer; unpadded and URL-safe
// encodings, which protojson readers accept, go the lenient way.
func (o *outputChunk) base64(b64 []byte) ([]byte, error) {
	size := base64.StdEncoding.DecodedLen(len(b64))
	o.decoded = slices.Grow(o.decoded[:0], size)[:size]
	n, err := base64.StdEncoding.Decode(o.decoded, b64)
	if err != nil {
		return decodeBase64Lenient(string(b64))
	}
	return o.decoded[:n], nil
}

// RunCommandSync runs a command and returns its whole output.
func (c *Client) RunCommandSync(ctx context.Context, endpoint string, req *RunCommandRequest) (*RunCommandSyncResponse, error) {
	if endpoint == "" {
		return nil, errors.New("RunCommandSync: the instance has no command service endpoint")
	}
	var resp RunCommandSyncResponse
	if err := c.t.unary(ctx, endpoint, procRunCommandSync, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}
