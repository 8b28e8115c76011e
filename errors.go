package nsdriver

import (
	"errors"
	"fmt"
	"net/http"
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

// Sentinels for errors.Is: an *APIError matches the sentinel of its code.
var (
	ErrCanceled           = codeSentinel(CodeCanceled)
	ErrUnknown            = codeSentinel(CodeUnknown)
	ErrInvalidArgument    = codeSentinel(CodeInvalidArgument)
	ErrDeadlineExceeded   = codeSentinel(CodeDeadlineExceeded)
	ErrNotFound           = codeSentinel(CodeNotFound)
	ErrAlreadyExists      = codeSentinel(CodeAlreadyExists)
	ErrPermissionDenied   = codeSentinel(CodePermissionDenied)
	ErrResourceExhausted  = codeSentinel(CodeResourceExhausted)
	ErrFailedPrecondition = codeSentinel(CodeFailedPrecondition)
	ErrAborted            = codeSentinel(CodeAborted)
	ErrOutOfRange         = codeSentinel(CodeOutOfRange)
	ErrUnimplemented      = codeSentinel(CodeUnimplemented)
	ErrInternal           = codeSentinel(CodeInternal)
	ErrUnavailable        = codeSentinel(CodeUnavailable)
	ErrDataLoss           = codeSentinel(CodeDataLoss)
	ErrUnauthenticated    = codeSentinel(CodeUnauthenticated)
)

// Errors of the client itself, before or beside the API.
var (
	// ErrInsecureEndpoint: the token would travel in clear text to a host
	// that is not loopback. Nothing was sent.
	ErrInsecureEndpoint = errors.New("refusing to send the Namespace token over plain http to a non-loopback host; use an https endpoint")
	// ErrNoToken: no token source in the resolution chain had a token.
	ErrNoToken = errors.New("no Namespace token found: set NAMESPACE_TOKEN, pass --token or --token-file, or run `nsc login`")
	// ErrTokenExpired: the token is a JWT whose exp claim has passed.
	ErrTokenExpired = errors.New("the Namespace token has expired: run `nsc login` again or supply a fresh token")
	// ErrStreamTruncated: a server stream ended without its end-of-stream message.
	ErrStreamTruncated = errors.New("the Namespace API stream ended without an end-of-stream message (connection cut?); retry")
	// ErrUnreachable: the connection failed before a response arrived.
	ErrUnreachable = errors.New("could not reach the Namespace API; check the network and the endpoint, then retry")
	// ErrMessageTooLarge: a stream message declared a length over the cap.
	ErrMessageTooLarge = errors.New("a Namespace API stream message exceeds the size cap")
)

type codeSentinel Code

func (c codeSentinel) Error() string { return "namespace: " + string(c) }

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

// Is matches the sentinel error of e's code.
func (e *APIError) Is(target error) bool {
	s, ok := target.(codeSentinel)
	return ok && Code(s) == e.Code
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
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.UserMessage()
	}
	return err.Error()
}

// codeFromHTTPStatus infers a code when the body is not a Connect error.
func codeFromHTTPStatus(status int) Code {
	switch status {
	case http.StatusBadRequest:
		return CodeInternal
	case http.StatusUnauthorized:
		return CodeUnauthenticated
	case http.StatusForbidden:
		return CodePermissionDenied
	case http.StatusNotFound:
		return CodeUnimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	return CodeUnknown
}

var knownCodes = map[Code]bool{
	CodeCanceled: true, CodeUnknown: true, CodeInvalidArgument: true, CodeDeadlineExceeded: true,
	CodeNotFound: true, CodeAlreadyExists: true, CodePermissionDenied: true, CodeResourceExhausted: true,
	CodeFailedPrecondition: true, CodeAborted: true, CodeOutOfRange: true, CodeUnimplemented: true,
	CodeInternal: true, CodeUnavailable: true, CodeDataLoss: true, CodeUnauthenticated: true,
}
