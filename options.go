package nsdriver

import (
	"log/slog"
	"net/http"
)

// Options, one vocabulary for the Client and the Driver (as connect-go has
// it): ClientOption configures NewClient, Option configures New, and a
// SharedOption such as WithLogger serves both.

// ClientOption configures NewClient.
type ClientOption interface{ applyToClient(*clientOptions) }

// Option configures New.
type Option interface{ applyToDriver(*driverOptions) }

// SharedOption configures a Client and a Driver alike.
type SharedOption interface {
	ClientOption
	Option
}

type clientOptions struct {
	region, endpoint string
	token            TokenSource
	httpClient       *http.Client
	logger           *slog.Logger
	retry            RetryPolicy
}

type driverOptions struct {
	client     *Client
	logger     *slog.Logger
	clientOpts []ClientOption
}

type clientOptionFunc func(*clientOptions)

func (f clientOptionFunc) applyToClient(o *clientOptions) { f(o) }

type driverOptionFunc func(*driverOptions)

func (f driverOptionFunc) applyToDriver(o *driverOptions) { f(o) }

type loggerOption struct{ logger *slog.Logger }

func (l loggerOption) applyToClient(o *clientOptions) { o.logger = l.logger }
func (l loggerOption) applyToDriver(o *driverOptions) { o.logger = l.logger }

// WithLogger sets the logger: a Driver's progress lines (creating, ready,
// running, destroyed, cost), a Client's retries and debugging. Secrets are
// never logged. A Driver passes its logger on to the Client it builds.
func WithLogger(l *slog.Logger) SharedOption { return loggerOption{l} }

// WithRegion selects the regional endpoint ("us" or "eu").
func WithRegion(region string) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.region = region })
}

// WithEndpoint overrides the API base URL (https, or http to loopback only).
func WithEndpoint(url string) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.endpoint = url })
}

// WithToken sets the bearer token.
func WithToken(token string) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.token = StaticToken(token) })
}

// WithTokenSource sets a source asked for the token on every call.
func WithTokenSource(src TokenSource) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.token = src })
}

// WithHTTPClient sets the HTTP client. Its redirect policy is replaced:
// redirects are never followed.
func WithHTTPClient(c *http.Client) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.httpClient = c })
}

// WithRetryPolicy sets how often and how fast transient failures are
// retried (which failures are transient is decided per procedure).
func WithRetryPolicy(p RetryPolicy) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.retry = p })
}

// WithClient makes the driver use c instead of building a client from the
// config's token and endpoint.
func WithClient(c *Client) Option {
	return driverOptionFunc(func(o *driverOptions) { o.client = c })
}

// WithClientOptions passes options (HTTP client, retry policy, …) to the
// client New builds.
func WithClientOptions(opts ...ClientOption) Option {
	return driverOptionFunc(func(o *driverOptions) { o.clientOpts = append(o.clientOpts, opts...) })
}
