package nsdriver

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDecodeUnaryErrorConnectBody(t *testing.T) {
	e := decodeUnaryError(400, []byte(`{"code":"invalid_argument","message":"shape.virtual_cpu 3 is not valid"}`))
	if e.Code != CodeInvalidArgument || CodeOf(e) != CodeInvalidArgument || CodeOf(e) == CodeInternal {
		t.Fatalf("%#v", e)
	}
	if got := e.UserMessage(); got != "Invalid Namespace config: shape.virtual_cpu 3 is not valid" {
		t.Fatalf("user message %q", got)
	}
}

func TestDecodeUnaryErrorFallbackTable(t *testing.T) {
	for status, want := range map[int]Code{
		400: CodeInternal, 401: CodeUnauthenticated, 403: CodePermissionDenied, 404: CodeUnimplemented,
		429: CodeUnavailable, 502: CodeUnavailable, 503: CodeUnavailable, 504: CodeUnavailable,
		500: CodeUnknown, 418: CodeUnknown,
	} {
		for _, body := range []string{"<html>oops</html>", "", `{"message":"no code"}`, "\x00\xff"} {
			if got := decodeUnaryError(status, []byte(body)).Code; got != want {
				t.Errorf("status %d body %q: %s, want %s", status, body, got, want)
			}
		}
	}
	if got := decodeUnaryError(200, []byte(`{"code":"made_up"}`)).Code; got != CodeUnknown {
		t.Errorf("unknown code decoded as %s", got)
	}
}

// protoBytes builds wire-format bytes: tag pairs of (field, value) where a
// value is a uint64 (varint) or []byte/string (length-delimited).
func protoBytes(fields ...any) []byte {
	var b []byte
	for i := 0; i < len(fields); i += 2 {
		num := uint64(fields[i].(int))
		switch v := fields[i+1].(type) {
		case int:
			b = appendVarint(b, num<<3)
			b = appendVarint(b, uint64(v))
		case string:
			b = appendVarint(b, num<<3|2)
			b = appendVarint(b, uint64(len(v)))
			b = append(b, v...)
		case []byte:
			b = appendVarint(b, num<<3|2)
			b = appendVarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func TestErrorDetailsDecoded(t *testing.T) {
	limits := protoBytes(5, "too many", 4, 2,
		1, protoBytes(1, 2, 2, 4096, 3, 1), 2, protoBytes(3, 5), 3, protoBytes(3, 5))
	usage := protoBytes(1, protoBytes(1, 1200), 2, protoBytes(1, 1000))
	platform := protoBytes(1, "macos/arm64", 2, "linux/amd64", 2, "linux/arm64")
	body := fmt.Sprintf(`{"code":"resource_exhausted","message":"no","details":[
		{"type":"namespace.cloud.compute.v1beta.ResourceLimitsError","value":%q,"debug":{"x":1}},
		{"type":"namespace.cloud.compute.v1beta.UsageLimitsError","value":%q},
		{"type":"namespace.cloud.compute.v1beta.PlatformNotAllowedError","value":%q},
		{"type":"some.Other","value":"AAAA"}]}`,
		base64.RawStdEncoding.EncodeToString(limits), // connect-go writes no padding
		base64.StdEncoding.EncodeToString(usage),
		base64.RawURLEncoding.EncodeToString(platform))
	e := decodeUnaryError(429, []byte(body))
	if len(e.Details) != 4 {
		t.Fatalf("details %v", e.Details)
	}
	for i, want := range []string{
		"resource limits: too many; requested 2 vCPU, 4096 MB, 1 instances; used 0 vCPU, 0 MB, 5 instances; limit 0 vCPU, 0 MB, 5 instances",
		"usage limits: used 1200 unit minutes; limit 1000 unit minutes",
		`platform "macos/arm64" not allowed; allowed: linux/amd64, linux/arm64`,
		"",
	} {
		if e.Details[i].Text != want {
			t.Errorf("detail %d: %q, want %q", i, e.Details[i].Text, want)
		}
	}
	msg := e.UserMessage()
	if !strings.HasPrefix(msg, "Namespace quota exceeded. Check workspace billing.") || !strings.Contains(msg, "5 instances") {
		t.Fatalf("user message %q", msg)
	}
}

func TestUserMessagesVerbatim(t *testing.T) {
	for code, want := range map[Code]string{
		CodeUnauthenticated:   "Namespace auth failed. Check your API token.",
		CodeResourceExhausted: "Namespace quota exceeded. Check workspace billing.",
		CodeUnavailable:       "Namespace API unavailable. Retry later.",
		CodeInvalidArgument:   "Invalid Namespace config: bad shape",
	} {
		msg := ""
		if code == CodeInvalidArgument {
			msg = "bad shape"
		}
		if got := (&APIError{Code: code, Message: msg}).UserMessage(); got != want {
			t.Errorf("%s: %q, want %q", code, got, want)
		}
	}
	for code := range knownCodes {
		if msg := (&APIError{Code: code}).UserMessage(); !strings.HasPrefix(msg, "Namespace") && !strings.HasPrefix(msg, "Invalid Namespace") {
			t.Errorf("%s: %q", code, msg)
		}
	}
}

func TestErrorsIsThroughWrapping(t *testing.T) {
	err := fmt.Errorf("creating: %w", &APIError{Code: CodeNotFound})
	var apiErr *APIError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &apiErr) || CodeOf(err) == CodeUnavailable {
		t.Fatal("errors.Is/As through wrapping")
	}
	if UserMessage(err) != apiErr.UserMessage() || UserMessage(errors.New("x")) != "x" {
		t.Fatal("UserMessage")
	}
}

func TestParseProtoFieldsRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{{0x0a, 0x05, 'a'}, {0x80}, {0x0b}, {0x00, 0x01}} {
		if _, err := parseProtoFields(b); err == nil {
			t.Errorf("%x parsed", b)
		}
	}
}

func TestCodeOfAndSentinels(t *testing.T) {
	wrapped := func(c Code) error { return fmt.Errorf("calling: %w", &APIError{Code: c}) }
	cases := []struct {
		err  error
		code Code
		is   error
	}{
		{nil, "", nil},
		{wrapped(CodeNotFound), CodeNotFound, ErrNotFound},
		{wrapped(CodeUnauthenticated), CodeUnauthenticated, ErrUnauthenticated},
		{wrapped(CodeDeadlineExceeded), CodeDeadlineExceeded, ErrTimeout},
		{wrapped(CodeInvalidArgument), CodeInvalidArgument, ErrInvalidRequest},
		{wrapped(CodeResourceExhausted), CodeResourceExhausted, nil},
		{fmt.Errorf("x: %w", context.Canceled), CodeCanceled, nil},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), CodeDeadlineExceeded, nil},
		{errors.New("plain"), CodeUnknown, nil},
	}
	sentinels := []error{ErrNotFound, ErrUnauthenticated, ErrTimeout, ErrInvalidRequest}
	for _, tc := range cases {
		if got := CodeOf(tc.err); got != tc.code {
			t.Errorf("CodeOf(%v) = %q, want %q", tc.err, got, tc.code)
		}
		for _, s := range sentinels {
			if want := s == tc.is; errors.Is(tc.err, s) != want {
				t.Errorf("errors.Is(%v, %v) = %v, want %v", tc.err, s, !want, want)
			}
		}
	}
}
