package nsdriver

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Code is a Connect error code, as written on the wire ("unavailable").
type Code string

// The Connect error codes.
const (
	CodeCanceled           Code = "canceled"
	CodeUnknown            Code = "unknown"
	CodeInvalidArgument    Code = "invalid_argument"
	CodeDeadlineExceeded   Code = "deadline_exceeded"
	CodeNotFound           Code = "not_found"
	CodeAlreadyExists      Code = "already_exists"
	CodePermissionDenied   Code = "permission_denied"
	CodeResourceExhausted  Code = "resource_exhausted"
	CodeFailedPrecondition Code = "failed_precondition"
	CodeAborted            Code = "aborted"
	CodeOutOfRange         Code = "out_of_range"
	CodeUnimplemented      Code = "unimplemented"
	CodeInternal           Code = "internal"
	CodeUnavailable        Code = "unavailable"
	CodeDataLoss           Code = "data_loss"
	CodeUnauthenticated    Code = "unauthenticated"
)

// Errors callers test with errors.Is. An *APIError matches the first four
// by its code (see APIError.Is).
var (
	// ErrNotFound: the instance does not exist (any more).
	ErrNotFound = errors.New("namespace: not found")
	// ErrUnauthenticated: Namespace refused the token.
	ErrUnauthenticated = errors.New("namespace: unauthenticated")
	// ErrTimeout: the execution hit the timeout setting, or an API call its
	// deadline.
	ErrTimeout = errors.New("execution timed out")
	// ErrInvalidRequest: the request was rejected before a VM was created
	// (by the driver, or by Namespace as invalid_argument).
	ErrInvalidRequest = errors.New("invalid ExecutionRequest")
	// ErrWorkloadFailed: the command or model exited non-zero; see
	// *WorkloadError for its exit code.
	ErrWorkloadFailed = errors.New("workload failed")
	// ErrPanicked: a callback (or the driver) panicked during Execute.
	ErrPanicked = errors.New("a panic stopped the execution")
	// ErrOutputTooLarge: stdout passed maxOutputBytes.
	ErrOutputTooLarge = errors.New("output exceeds maxOutputBytes")
	// ErrInvalidConfig matches every *ConfigError.
	ErrInvalidConfig = errors.New("invalid driverConfig")

	// ErrInsecureEndpoint: the token would travel in clear text to a host
	// that is not loopback. Nothing was sent.
	ErrInsecureEndpoint = errors.New("refusing to send the Namespace token over plain http to a non-loopback host; use an https endpoint")
	// ErrNoToken: no token source in the resolution chain had a token.
	ErrNoToken = errors.New("no Namespace token found: set Config.Token or NAMESPACE_TOKEN, run `nsc login`, or point Config.Endpoint and Config.Token at nsemu, the local emulator")
	// ErrTokenExpired: the token is a JWT whose exp claim has passed.
	ErrTokenExpired = errors.New("the Namespace token has expired: run `nsc login` again or supply a fresh token")
	// ErrStreamTruncated: a server stream ended without its end-of-stream message.
	ErrStreamTruncated = errors.New("the Namespace API stream ended without an end-of-stream message (connection cut?); retry")
	// ErrUnreachable: the connection failed before a response arrived.
	ErrUnreachable = errors.New("could not reach the Namespace API; check the network and the endpoint, then retry")
	// ErrMessageTooLarge: a stream message declared a length over the cap.
	ErrMessageTooLarge = errors.New("a Namespace API stream message exceeds the size cap")
)

// APIError is an error returned by the Namespace API.
type APIError struct {
	Code    Code
	Message string
	Details []ErrorDetail
	// HTTPStatus is the response status; 200 for errors in a stream trailer.
	HTTPStatus int
}

// ErrorDetail is one entry of a Connect error's details.
type ErrorDetail struct {
	// Type is the detail's full message name, such as
	// "namespace.cloud.compute.v1beta.ResourceLimitsError".
	Type string
	// Value is the detail's protobuf wire encoding.
	Value []byte
	// Text is a readable rendering of a known detail type, else "".
	Text string
}

// Error returns "namespace <code>: <message>[: <detail>...]".
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "namespace %s", e.Code)
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	for _, d := range e.Details {
		if d.Text != "" {
			b.WriteString(" (" + d.Text + ")")
		}
	}
	return b.String()
}

// Is lets the few codes callers branch on match a sentinel: not_found
// matches ErrNotFound, unauthenticated ErrUnauthenticated,
// deadline_exceeded ErrTimeout and invalid_argument ErrInvalidRequest. For
// any other code use CodeOf.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == CodeNotFound
	case ErrUnauthenticated:
		return e.Code == CodeUnauthenticated
	case ErrTimeout:
		return e.Code == CodeDeadlineExceeded
	case ErrInvalidRequest:
		return e.Code == CodeInvalidArgument
	}
	return false
}

// CodeOf returns the Connect code of the first *APIError in err's chain;
// canceled or deadline_exceeded for an error that wraps the context's;
// "" for nil; unknown for anything else.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var apiErr *APIError
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Code
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded
	}
	return CodeUnknown
}

// UserMessage is a sentence for a person: what went wrong and what to do.
func (e *APIError) UserMessage() string {
	detail := e.Message
	for _, d := range e.Details {
		if d.Text != "" {
			detail = strings.TrimSpace(detail + "; " + d.Text)
		}
	}
	detail = strings.TrimPrefix(detail, "; ")
	switch e.Code {
	case CodeUnauthenticated:
		return "Namespace auth failed. Check your API token."
	case CodeResourceExhausted:
		return withDetail("Namespace quota exceeded. Check workspace billing.", detail)
	case CodeUnavailable:
		return "Namespace API unavailable. Retry later."
	case CodeInvalidArgument:
		return "Invalid Namespace config: " + detail
	case CodePermissionDenied:
		return withDetail("Namespace denied permission. Check that the token's workspace may do this.", detail)
	case CodeNotFound:
		return withDetail("Namespace instance not found. It may have reached its deadline or been destroyed.", detail)
	case CodeDeadlineExceeded:
		return withDetail("Namespace API call timed out. Raise the timeout or retry.", detail)
	case CodeCanceled:
		return "Namespace API call canceled."
	case CodeFailedPrecondition:
		return withDetail("Namespace refused the call in the instance's current state. Retry with a fresh instance.", detail)
	case CodeAlreadyExists, CodeAborted:
		return withDetail("Namespace reported a conflict. Retry.", detail)
	case CodeOutOfRange:
		return withDetail("Namespace rejected a value as out of range. Check the config.", detail)
	case CodeUnimplemented:
		return withDetail("Namespace does not support this call. Update nsdriver or check the endpoint.", detail)
	case CodeInternal, CodeDataLoss, CodeUnknown:
		return withDetail("Namespace API error. Retry; if it persists, contact Namespace support.", detail)
	}
	return withDetail("Namespace API error ("+string(e.Code)+").", detail)
}

func withDetail(msg, detail string) string {
	if detail == "" {
		return msg
	}
	return msg + " (" + detail + ")"
}

// UserMessage renders any error from this package for a person. API errors
// get their per-code sentence; others their own text.
func UserMessage(err error) string {
	var bootErr *BootError
	if errors.As(err, &bootErr) && len(bootErr.Reasons) > 0 {
		return "The Namespace VM failed to start: " + bootErr.reasons() + ". Check the image and its entrypoint."
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.UserMessage()
	}
	return err.Error()
}

// WorkloadError is a workload that ran and failed: its message is the
// workload's own (stderr, or the runner's explanation). It matches
// ErrWorkloadFailed.
type WorkloadError struct {
	ExitCode int
	Message  string
}

func (e *WorkloadError) Error() string { return e.Message }

// Is matches ErrWorkloadFailed.
func (e *WorkloadError) Is(target error) bool { return target == ErrWorkloadFailed }

// BootError is an instance that failed to start. Reasons are what
// Namespace says about it (DescribeInstance's shutdownReasons), such as
// "failed to pull image …: manifest unknown"; Err is the wait's error.
type BootError struct {
	InstanceID string
	Reasons    []ShutdownReason
	Err        error
}

func (e *BootError) Error() string {
	if len(e.Reasons) == 0 {
		return fmt.Sprintf("instance %s failed to boot: %v", e.InstanceID, e.Err)
	}
	return "instance " + e.InstanceID + " failed to boot: " + e.reasons()
}

func (e *BootError) reasons() string {
	parts := make([]string, len(e.Reasons))
	for i, r := range e.Reasons {
		parts[i] = r.String()
	}
	return strings.Join(parts, "; ")
}

func (e *BootError) Unwrap() error { return e.Err }

// Problem is one invalid config value, with its key path ("env.FOO").
type Problem struct {
	Path    string
	Message string
}

// ConfigError lists every problem found in a driverConfig. It matches
// ErrInvalidConfig.
type ConfigError struct{ Problems []Problem }

func (e *ConfigError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Path + ": " + p.Message
	}
	return "invalid driverConfig: " + strings.Join(parts, "; ")
}

// Is matches ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

func (e *ConfigError) add(path, format string, args ...any) {
	e.Problems = append(e.Problems, Problem{path, fmt.Sprintf(format, args...)})
}

func (e *ConfigError) orNil() error {
	if len(e.Problems) == 0 {
		return nil
	}
	return e
}
