package nsdriver

// Connect errors as they arrive on the wire: unary error bodies, stream
// trailers, and the details the API documents.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// wireError is a Connect error as JSON: a unary error body, or the "error"
// member of a stream's end-of-stream message. It is read leniently, as
// Namespace's own Go client reads it: the code as a name in any case or as
// a number, details that do not decode skipped one by one.
type wireError struct {
	Code    json.RawMessage   `json:"code"`
	Message string            `json:"message"`
	Details []json.RawMessage `json:"details"`
}

// codeNumbers are the Connect (and gRPC) codes by number.
var codeNumbers = []Code{1: CodeCanceled, 2: CodeUnknown, 3: CodeInvalidArgument, 4: CodeDeadlineExceeded,
	5: CodeNotFound, 6: CodeAlreadyExists, 7: CodePermissionDenied, 8: CodeResourceExhausted,
	9: CodeFailedPrecondition, 10: CodeAborted, 11: CodeOutOfRange, 12: CodeUnimplemented,
	13: CodeInternal, 14: CodeUnavailable, 15: CodeDataLoss, 16: CodeUnauthenticated}

// parseCode reads "not_found", "NOT_FOUND", 5 or "5"; ok is false when
// raw holds no code at all.
func parseCode(raw json.RawMessage) (code Code, ok bool) {
	var text string
	if json.Unmarshal(raw, &text) != nil {
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return "", false
		}
		text = n.String()
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return "", false
	}
	if n, err := strconv.Atoi(text); err == nil {
		if n > 0 && n < len(codeNumbers) {
			return codeNumbers[n], true
		}
		return CodeUnknown, true
	}
	if c := Code(strings.ToLower(text)); knownCodes[c] {
		return c, true
	}
	return CodeUnknown, true
}

func (w *wireError) toAPIError(status int) *APIError {
	code, ok := parseCode(w.Code)
	if !ok {
		code = CodeUnknown
	}
	e := &APIError{Code: code, Message: w.Message, HTTPStatus: status}
	for _, raw := range w.Details {
		var d struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		}
		if json.Unmarshal(raw, &d) != nil {
			continue
		}
		value, err := decodeBase64Lenient(d.Value)
		if err != nil {
			continue
		}
		e.Details = append(e.Details, ErrorDetail{Type: d.Type, Value: value, Text: describeDetail(d.Type, value)})
	}
	return e
}

// decodeUnaryError turns a non-200 unary response into an *APIError: from
// a Connect error body (whose code wins over the HTTP status), else from
// gRPC-style grpc-status headers, else from the HTTP status.
func decodeUnaryError(status int, header http.Header, body []byte) *APIError {
	var w wireError
	if err := json.Unmarshal(body, &w); err == nil {
		if _, ok := parseCode(w.Code); ok {
			return w.toAPIError(status)
		}
	}
	if e := grpcHeaderError(status, header); e != nil {
		return e
	}
	msg := http.StatusText(status)
	if snippet := printableSnippet(body, 200); snippet != "" {
		msg += ": " + snippet
	}
	return &APIError{Code: codeFromHTTPStatus(status), Message: msg, HTTPStatus: status}
}

// grpcHeaderError reads grpc-status, grpc-message (percent-encoded) and
// grpc-status-details-bin (a google.rpc.Status: code 1, message 2, details
// 3 as Any{type_url 1, value 2}); nil without grpc-status.
func grpcHeaderError(status int, header http.Header) *APIError {
	raw := header.Get("Grpc-Status")
	if raw == "" {
		return nil
	}
	code, ok := parseCode(json.RawMessage(strconv.Quote(raw)))
	if !ok || raw == "0" {
		return nil
	}
	e := &APIError{Code: code, HTTPStatus: status}
	if msg, err := url.PathUnescape(header.Get("Grpc-Message")); err == nil {
		e.Message = msg
	}
	bin, err := decodeBase64Lenient(header.Get("Grpc-Status-Details-Bin"))
	if err != nil || len(bin) == 0 {
		return e
	}
	st, err := parseProtoFields(bin)
	if err != nil {
		return e
	}
	if e.Message == "" {
		e.Message = st.str(2)
	}
	for _, anyField := range st[3] {
		a, err := parseProtoFields(anyField.bytes)
		if err != nil {
			continue
		}
		typ := a.str(1)
		typ = typ[strings.LastIndex(typ, "/")+1:] // type.googleapis.com/<name>
		value, _ := a.last(2)
		e.Details = append(e.Details, ErrorDetail{Type: typ, Value: value.bytes, Text: describeDetail(typ, value.bytes)})
	}
	return e
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
	return decodeUnaryError(resp.StatusCode, resp.Header, body)
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
