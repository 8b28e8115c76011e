package nsdriver

// Connect errors as they arrive on the wire: unary error bodies, stream
// trailers, and the details the API documents.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// wireError is a Connect error as JSON: a unary error body, or the "error"
// member of a stream's end-of-stream message.
type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"details"`
}

func (w *wireError) toAPIError(status int) *APIError {
	e := &APIError{Code: Code(w.Code), Message: w.Message, HTTPStatus: status}
	if !knownCodes[e.Code] {
		e.Code = CodeUnknown
	}
	for _, d := range w.Details {
		value, err := decodeBase64Lenient(d.Value)
		if err != nil {
			continue
		}
		e.Details = append(e.Details, ErrorDetail{Type: d.Type, Value: value, Text: describeDetail(d.Type, value)})
	}
	return e
}

// decodeUnaryError turns a non-200 unary response into an *APIError. When the
// body is not a Connect error the code comes from the HTTP status.
func decodeUnaryError(status int, body []byte) *APIError {
	var w wireError
	if err := json.Unmarshal(body, &w); err == nil && w.Code != "" {
		return w.toAPIError(status)
	}
	msg := http.StatusText(status)
	if snippet := printableSnippet(body, 200); snippet != "" {
		msg += ": " + snippet
	}
	return &APIError{Code: codeFromHTTPStatus(status), Message: msg, HTTPStatus: status}
}

// printableSnippet keeps an error message short and free of binary noise.
func printableSnippet(b []byte, limit int) string {
	s := strings.TrimSpace(string(b))
	if !utf8.ValidString(s) {
		return ""
	}
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}

// responseError decodes a non-200 response; redirects are reported as such.
func responseError(resp *http.Response, body []byte) *APIError {
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return &APIError{Code: CodeUnknown, HTTPStatus: resp.StatusCode,
			Message: fmt.Sprintf("HTTP %d redirect refused (redirects are never followed); check the endpoint", resp.StatusCode)}
	}
	return decodeUnaryError(resp.StatusCode, body)
}

// endStreamError decodes an end-of-stream message; nil when it carries none.
func endStreamError(payload []byte) error {
	var end struct {
		Error *wireError `json:"error"`
	}
	if err := json.Unmarshal(payload, &end); err != nil {
		return fmt.Errorf("malformed end-of-stream message: %w", err)
	}
	if end.Error == nil {
		return nil
	}
	if end.Error.Code == "" {
		end.Error.Code = string(CodeUnknown)
	}
	return end.Error.toAPIError(http.StatusOK)
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

const detailPrefix = "namespace.cloud.compute.v1beta."

// describeDetail renders the error details the API documents; others are "".
func describeDetail(typeName string, value []byte) string {
	fields, err := parseProtoFields(value)
	if err != nil {
		return ""
	}
	switch typeName {
	case detailPrefix + "ResourceLimitsError":
		var parts []string
		if d := fields.str(5); d != "" {
			parts = append(parts, d)
		}
		for _, r := range []struct {
			num  int
			name string
		}{{1, "requested"}, {2, "used"}, {3, "limit"}} {
			if raw, ok := fields.last(r.num); ok {
				if res, err := parseProtoFields(raw.bytes); err == nil {
					parts = append(parts, fmt.Sprintf("%s %d vCPU, %d MB, %d instances", r.name, res.int(1), res.int(2), res.int(3)))
				}
			}
		}
		return "resource limits: " + strings.Join(parts, "; ")
	case detailPrefix + "UsageLimitsError":
		var parts []string
		for _, u := range []struct {
			num  int
			name string
		}{{1, "used"}, {2, "limit"}} {
			if raw, ok := fields.last(u.num); ok {
				if usage, err := parseProtoFields(raw.bytes); err == nil {
					parts = append(parts, fmt.Sprintf("%s %d unit minutes", u.name, usage.int(1)))
				}
			}
		}
		return "usage limits: " + strings.Join(parts, "; ")
	case detailPrefix + "PlatformNotAllowedError":
		var allowed []string
		for _, f := range fields[2] {
			allowed = append(allowed, string(f.bytes))
		}
		return fmt.Sprintf("platform %q not allowed; allowed: %s", fields.str(1), strings.Join(allowed, ", "))
	}
	return ""
}

// protoField is one decoded field: varints in num, length-delimited in bytes.
type protoField struct {
	num   uint64
	bytes []byte
}

type protoFields map[int][]protoField

func (f protoFields) last(n int) (protoField, bool) {
	if vs := f[n]; len(vs) > 0 {
		return vs[len(vs)-1], true
	}
	return protoField{}, false
}

func (f protoFields) str(n int) string {
	v, _ := f.last(n)
	return string(v.bytes)
}

func (f protoFields) int(n int) int64 {
	v, _ := f.last(n)
	return int64(v.num)
}

var errBadProto = errors.New("malformed protobuf")

// parseProtoFields reads the protobuf wire format just far enough for error
// details, so the client stays free of the protobuf runtime.
func parseProtoFields(b []byte) (protoFields, error) {
	fields := protoFields{}
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errBadProto
		}
		b = b[n:]
		num, wireType := int(key>>3), key&7
		if num <= 0 {
			return nil, errBadProto
		}
		switch wireType {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, errBadProto
			}
			b = b[n:]
			fields[num] = append(fields[num], protoField{num: v})
		case 1:
			if len(b) < 8 {
				return nil, errBadProto
			}
			fields[num] = append(fields[num], protoField{num: binary.LittleEndian.Uint64(b)})
			b = b[8:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return nil, errBadProto
			}
			fields[num] = append(fields[num], protoField{bytes: b[n : n+int(l)]})
			b = b[n+int(l):]
		case 5:
			if len(b) < 4 {
				return nil, errBadProto
			}
			fields[num] = append(fields[num], protoField{num: uint64(binary.LittleEndian.Uint32(b))})
			b = b[4:]
		default:
			return nil, errBadProto
		}
	}
	return fields, nil
}
