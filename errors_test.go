package nsdriver

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestDecodeUnaryErrorConnectBody(t *testing.T) {
	e := decodeUnaryError(400, nil, []byte(`{"code":"invalid_argument","message":"shape.virtual_cpu 3 is not valid"}`))
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
			if got := decodeUnaryError(status, nil, []byte(body)).Code; got != want {
				t.Errorf("status %d body %q: %s, want %s", status, body, got, want)
			}
		}
	}
	if got := decodeUnaryError(200, nil, []byte(`{"code":"made_up"}`)).Code; got != CodeUnknown {
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
	e := decodeUnaryError(429, nil, []byte(body))
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

// Error bodies as they occur in the wild, read as Namespace's own Go
// client reads them.
func TestLenientErrorDecoding(t *testing.T) {
	rlDetail := base64.StdEncoding.EncodeToString([]byte{0x2a, 0x03, 'c', 'p', 'u'}) // ResourceLimitsError{description: "cpu"}
	cases := []struct {
		name    string
		status  int
		header  http.Header
		body    string
		code    Code
		message string
		details int
	}{
		{"numeric code wins over a 404", 404, nil, `{"code":5,"message":"gone"}`, CodeNotFound, "gone", 0},
		{"numeric code as a string", 500, nil, `{"code":"14"}`, CodeUnavailable, "", 0},
		{"upper-case name", 400, nil, `{"code":"NOT_FOUND","message":"m"}`, CodeNotFound, "m", 0},
		{"unknown number", 500, nil, `{"code":99}`, CodeUnknown, "", 0},
		{"undecodable details are skipped, good ones kept", 429, nil,
			`{"code":"resource_exhausted","details":[{"type":"x","value":"!!!"},7,"str",{"type":"namespace.cloud.compute.v1beta.ResourceLimitsError","value":"` + rlDetail + `"}]}`,
			CodeResourceExhausted, "", 1},
		{"details not an array", 400, nil, `{"code":"invalid_argument","details":{"a":1}}`, CodeInternal, "Bad Request: {\"code\":\"invalid_argument\",\"details\":{\"a\":1}}", 0},
		{"grpc-status header", 200, http.Header{"Grpc-Status": {"5"}, "Grpc-Message": {"instance%20gone"}}, ``, CodeNotFound, "instance gone", 0},
		{"grpc-status-details-bin", 503, http.Header{"Grpc-Status": {"8"}, "Grpc-Status-Details-Bin": {grpcStatusBin(8, "quota", detailPrefix+"ResourceLimitsError", []byte{0x2a, 0x03, 'c', 'p', 'u'})}},
			`upstream`, CodeResourceExhausted, "quota", 1},
		{"plain 404 is unimplemented", 404, nil, `not here`, CodeUnimplemented, "Not Found: not here", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := decodeUnaryError(tc.status, tc.header, []byte(tc.body))
			if e.Code != tc.code || e.Message != tc.message || len(e.Details) != tc.details {
				t.Fatalf("got %+v", e)
			}
			if tc.details == 1 && e.Details[0].Text != "resource limits: cpu" {
				t.Fatalf("detail %+v", e.Details[0])
			}
		})
	}
}

// grpcStatusBin encodes a google.rpc.Status with one Any detail.
func grpcStatusBin(code int, message, typ string, value []byte) string {
	field := func(num int, b []byte) []byte {
		return append(binary.AppendUvarint(binary.AppendUvarint(nil, uint64(num<<3|2)), uint64(len(b))), b...)
	}
	anyMsg := append(field(1, []byte("type.googleapis.com/"+typ)), field(2, value)...)
	st := append(binary.AppendUvarint(binary.AppendUvarint(nil, 1<<3), uint64(code)), field(2, []byte(message))...)
	st = append(st, field(3, anyMsg)...)
	return base64.RawStdEncoding.EncodeToString(st)
}

// A destroy of an instance that vanished, answered 404 + {"code":5}, is
// a success, not a failure.
func TestDestroyOfVanishedInstanceSucceeds(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 404, map[string]any{"code": 5, "message": "instance not found"})
	})
	m := &instances{client: api.client(t), logger: slog.New(slog.DiscardHandler), destroyCap: time.Second}
	if !m.destroy(context.Background(), "gone") || len(api.requests()) != 1 {
		t.Fatalf("destroy reported failure after %d requests", len(api.requests()))
	}
}

// Every numeric code decodes to its name, in a body and in grpc-status, the
// last (16, unauthenticated) and the first (1) included; 0 and 17 are not
// codes.
func TestEveryNumericCodeDecodes(t *testing.T) {
	names := []string{"", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists",
		"permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range", "unimplemented",
		"internal", "unavailable", "data_loss", "unauthenticated"}
	for n := 1; n < len(names); n++ {
		if e := decodeUnaryError(500, nil, []byte(fmt.Sprintf(`{"code":%d}`, n))); e.Code != Code(names[n]) {
			t.Errorf(`{"code":%d} decoded as %q; want %q`, n, e.Code, names[n])
		}
		if e := decodeUnaryError(200, http.Header{"Grpc-Status": {fmt.Sprint(n)}}, nil); e.Code != Code(names[n]) {
			t.Errorf("grpc-status %d decoded as %q; want %q", n, e.Code, names[n])
		}
	}
	for _, n := range []int{0, len(names)} {
		if e := decodeUnaryError(500, nil, []byte(fmt.Sprintf(`{"code":%d}`, n))); e.Code != CodeUnknown {
			t.Errorf(`{"code":%d} decoded as %q; want unknown`, n, e.Code)
		}
	}
}
