package nsdriver

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"gopkg.in/dnaeon/go-vcr.v3/cassette"
	"gopkg.in/dnaeon/go-vcr.v3/recorder"

	"github.com/swamp-club/nsdriver/nsemu"
)

// Fixtures: tests of the client and the driver replay go-vcr cassettes from
// fixtures/. NSDRIVER_RECORD=1 re-records them against an nsemu the test
// starts (seeded ids, fixed clock), or against real Namespace when
// NAMESPACE_TOKEN is also set. fixtures/manifest.json says where each
// cassette was recorded.

const (
	fixturesDir = "fixtures"
	// decodedHeader marks a stream body stored as decoded JSON.
	decodedHeader = "Nsdriver-Cassette-Body"
	decodedValue  = "connect-stream-decoded"
	replayHost    = "http://127.0.0.1:0"
	redacted      = "[REDACTED]"
)

// recordClock is the fixed "now" of emulator recordings.
var recordClock = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// liveRecordToken is NAMESPACE_TOKEN as TestMain found it, kept only when
// recording (TestMain clears the variable for every test).
var liveRecordToken string

func recording() bool { return os.Getenv("NSDRIVER_RECORD") == "1" }

var (
	tokenLike = regexp.MustCompile(`(nsct|nscw|nsemu)_[A-Za-z0-9_\-]{6,}|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+`)
	hostLike  = regexp.MustCompile(`https?://[A-Za-z0-9.\-]+(:[0-9]+)?|\[::1\](:[0-9]+)?`)
	// Values that legitimately change between recordings of the same flow.
	volatile = []*regexp.Regexp{
		regexp.MustCompile(`"(deadline|newDeadline|createdAt|destroyedAt)":"[^"]*"`),
		regexp.MustCompile(`nsdriver-[0-9a-f]{16}`),
		regexp.MustCompile(`NSDRIVER-RESULT-[0-9a-f]{32}`),
		regexp.MustCompile(`"nsdriver/run-id","value":"[^"]*"`),
	}
)

// scrub removes secrets and normalizes hosts in recorded text.
func scrub(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, redacted)
		}
	}
	s = tokenLike.ReplaceAllString(s, redacted)
	return hostLike.ReplaceAllString(s, replayHost)
}

// unenvelope returns the payloads of a Connect stream body, or nil when it
// is not one.
func unenvelope(body []byte) [][]byte {
	var msgs [][]byte
	for len(body) >= 5 {
		n := binary.BigEndian.Uint32(body[1:5])
		if uint32(len(body)-5) < n {
			return nil
		}
		msgs = append(msgs, append([]byte{body[0]}, body[5:5+n]...))
		body = body[5+n:]
	}
	if len(body) != 0 {
		return nil
	}
	return msgs
}

// decodedStream is how a stream response is stored: its messages, with
// byte fields as text where they are text, and its end-of-stream message.
type decodedStream struct {
	Messages []map[string]any `json:"messages"`
	End      json.RawMessage  `json:"end"`
}

func decodeStreamBody(body []byte) (string, bool) {
	var out decodedStream
	for _, m := range unenvelope(body) {
		if m[0]&envelopeEndStream != 0 {
			out.End = json.RawMessage(m[1:])
			continue
		}
		var msg map[string]any
		if json.Unmarshal(m[1:], &msg) != nil {
			return "", false
		}
		if data, ok := msg["data"].(string); ok {
			if raw, err := base64.StdEncoding.DecodeString(data); err == nil && utf8.Valid(raw) {
				delete(msg, "data")
				msg["dataText"] = string(raw)
			}
		}
		out.Messages = append(out.Messages, msg)
	}
	if out.End == nil {
		return "", false
	}
	coalesce(&out)
	b, err := json.MarshalIndent(out, "", " ")
	return string(b), err == nil
}

// coalesce stores each stream's text as one message, stdout before stderr,
// ahead of the other messages. How two pipes interleave, and how a pipe
// split its output, is timing, which a cassette does not hold (the nsemu
// tests cover streaming order); merging makes two recordings identical.
func coalesce(d *decodedStream) {
	// A stream with a binary chunk keeps its messages as they came, so its
	// bytes stay in order.
	binary := map[any]bool{}
	for _, m := range d.Messages {
		if _, ok := m["data"]; ok {
			binary[m["stream"]] = true
		}
	}
	var text [2]map[string]any
	var rest []map[string]any
	for _, m := range d.Messages {
		chunk, isText := m["dataText"].(string)
		slot := map[any]int{"STDOUT": 0, "STDERR": 1}[m["stream"]]
		if !isText || len(m) != 2 || binary[m["stream"]] || (m["stream"] != "STDOUT" && m["stream"] != "STDERR") {
			rest = append(rest, m)
			continue
		}
		if text[slot] == nil {
			text[slot] = map[string]any{"stream": m["stream"], "dataText": ""}
		}
		text[slot]["dataText"] = text[slot]["dataText"].(string) + chunk
	}
	var merged []map[string]any
	for _, m := range text {
		if m != nil {
			merged = append(merged, m)
		}
	}
	d.Messages = append(merged, rest...)
}

func encodeStreamBody(stored string) (string, error) {
	var in decodedStream
	if err := json.Unmarshal([]byte(stored), &in); err != nil {
		return "", err
	}
	var out bytes.Buffer
	frame := func(flags byte, payload []byte) {
		var hdr [5]byte
		hdr[0] = flags
		binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
		out.Write(hdr[:])
		out.Write(payload)
	}
	for _, msg := range in.Messages {
		if text, ok := msg["dataText"].(string); ok {
			delete(msg, "dataText")
			msg["data"] = base64.StdEncoding.EncodeToString([]byte(text))
		}
		b, err := json.Marshal(msg)
		if err != nil {
			return "", err
		}
		frame(0, b)
	}
	frame(envelopeEndStream, in.End)
	return out.String(), nil
}

// requestJSON is a request body as JSON, unwrapping a stream envelope.
func requestJSON(body string) string {
	if msgs := unenvelope([]byte(body)); len(msgs) == 1 {
		return string(msgs[0][1:])
	}
	return body
}

// normalizedBody is what the matcher compares: scrubbed, volatile values
// blanked, JSON compacted.
func normalizedBody(body string, secrets []string) string {
	s := scrub(requestJSON(body), secrets)
	var compact bytes.Buffer
	if json.Compact(&compact, []byte(s)) == nil {
		s = compact.String()
	}
	for _, re := range volatile {
		s = re.ReplaceAllString(s, "~")
	}
	return s
}

// saveHook makes an interaction fit to commit: secrets and hosts scrubbed,
// streams decoded, volatile headers and timings dropped.
func saveHook(secrets []string) recorder.HookFunc {
	return func(i *cassette.Interaction) error {
		req, resp := &i.Request, &i.Response
		if strings.HasPrefix(req.Headers.Get("Content-Type"), "application/connect+") {
			req.Body = requestJSON(req.Body)
			req.Headers.Set(decodedHeader, decodedValue)
		}
		if pretty, err := indentJSON(req.Body); err == nil {
			req.Body = pretty
		}
		req.Body = scrub(req.Body, secrets)
		req.URL, req.Host = scrub(req.URL, secrets), "127.0.0.1:0"
		req.Headers = keepHeaders(req.Headers, "Content-Type", "Connect-Protocol-Version", decodedHeader)
		req.Headers.Set("Authorization", "Bearer "+redacted)
		req.ContentLength, req.Form = 0, nil
		if strings.HasPrefix(resp.Headers.Get("Content-Type"), "application/connect+") && resp.Code == http.StatusOK {
			decoded, ok := decodeStreamBody([]byte(resp.Body))
			if !ok {
				return fmt.Errorf("cassette: %s: response is not a well-formed Connect stream", req.URL)
			}
			resp.Body = decoded
			resp.Headers.Set(decodedHeader, decodedValue)
		} else if pretty, err := indentJSON(resp.Body); err == nil {
			resp.Body = pretty
		}
		resp.Body = scrub(resp.Body, secrets)
		resp.Headers = keepHeaders(resp.Headers, "Content-Type", decodedHeader)
		resp.ContentLength, resp.Duration, resp.Uncompressed = -1, 0, false
		return nil
	}
}

func indentJSON(s string) (string, error) {
	var b bytes.Buffer
	err := json.Indent(&b, []byte(s), "", " ")
	return b.String(), err
}

func keepHeaders(h http.Header, keep ...string) http.Header {
	out := http.Header{}
	for _, k := range keep {
		if v := h.Get(k); v != "" {
			out.Set(k, v)
		}
	}
	return out
}

// replayHook re-frames a stored decoded stream for the client.
func replayHook(i *cassette.Interaction) error {
	if i.Response.Headers.Get(decodedHeader) != decodedValue {
		return nil
	}
	body, err := encodeStreamBody(i.Response.Body)
	if err != nil {
		return err
	}
	i.Response.Body = body
	i.Response.Headers = i.Response.Headers.Clone()
	i.Response.Headers.Del(decodedHeader)
	return nil
}

func matcher(secrets []string) cassette.MatcherFunc {
	return func(r *http.Request, rec cassette.Request) bool {
		if r.Method != rec.Method || r.URL.Path != pathOf(rec.URL) {
			return false
		}
		var body []byte
		if r.Body != nil {
			body, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		return normalizedBody(string(body), secrets) == normalizedBody(rec.Body, secrets)
	}
}

func pathOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Path
}

// cassetteSetup is how a test's cassette is recorded.
type cassetteSetup struct {
	emu nsemu.Options
	// emulatorOnly: the scenario needs an injected fault, so it is always
	// recorded against nsemu, even with a token.
	emulatorOnly bool
	secrets      []string
}

// cassetteRun is a recorder in place, with where to point clients.
type cassetteRun struct {
	endpoint, token string
	httpClient      *http.Client
	emu             *nsemu.Server // only while recording against nsemu
	live            bool
}

func (c *cassetteRun) client(t *testing.T) *Client {
	t.Helper()
	cl, err := NewClient(WithEndpoint(c.endpoint), WithToken(c.token), WithHTTPClient(c.httpClient),
		WithRetryPolicy(RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// driver builds a Driver whose ids and clock are deterministic.
func (c *cassetteRun) driver(t *testing.T, cfg Config) *Driver {
	t.Helper()
	cfg.Endpoint, cfg.Token = c.endpoint, c.token
	d, err := New(cfg, WithClient(c.client(t)))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	d.vms.newID = func() string { n++; return fmt.Sprintf("%016x", n) }
	d.vms.now = func() time.Time { return recordClock }
	if c.live {
		d.vms.now = time.Now
	}
	return d
}

// useCassette replays fixtures/<name>.yaml, or records it when
// NSDRIVER_RECORD=1 into dir (fixtures/ unless a test says otherwise).
func useCassette(t *testing.T, name string, setup cassetteSetup) *cassetteRun {
	return useCassetteIn(t, fixturesDir, name, setup, recording())
}

func useCassetteIn(t *testing.T, dir, name string, setup cassetteSetup, record bool) *cassetteRun {
	t.Helper()
	path := filepath.Join(dir, name)
	run := &cassetteRun{endpoint: replayHost, token: "replay-token"}
	mode := recorder.ModeReplayOnly
	var entry manifestEntry
	if record {
		mode = recorder.ModeRecordOnly
		if liveRecordToken != "" && !setup.emulatorOnly {
			run.live, run.token = true, liveRecordToken
			region := os.Getenv("NAMESPACE_REGION")
			if region == "" {
				region = "us"
			}
			run.endpoint = ResolveEndpoint("", region)
			entry = manifestEntry{RecordedAgainst: "namespace", Region: region}
		} else {
			opts := setup.emu
			opts.Seed, opts.Clock = 7, func() time.Time { return recordClock }
			emu := startTestEmu(t, opts)
			run.emu, run.endpoint, run.token = emu, emu.URL(), emu.Token()
			entry = manifestEntry{RecordedAgainst: nsemu.Version, Seed: 7, Clock: recordClock.Format(time.RFC3339)}
		}
		entry.RecordedOn = time.Now().UTC().Format("2006-01-02")
	}
	secrets := append([]string{run.token}, setup.secrets...)
	rec, err := recorder.NewWithOptions(&recorder.Options{CassetteName: path, Mode: mode, RealTransport: defaultTransport, SkipRequestLatency: true})
	if err != nil {
		t.Fatalf("cassette %s: %v (record it with NSDRIVER_RECORD=1 go test ./...)", path, err)
	}
	rec.SetMatcher(matcher(secrets))
	rec.AddHook(saveHook(secrets), recorder.BeforeSaveHook)
	rec.AddHook(replayHook, recorder.BeforeResponseReplayHook)
	run.httpClient = &http.Client{Transport: rec}
	t.Cleanup(func() {
		if err := rec.Stop(); err != nil {
			t.Errorf("saving cassette %s: %v", path, err)
		}
		if record && dir == fixturesDir {
			entry.Cassette = name + ".yaml"
			if err := updateManifest(entry); err != nil {
				t.Error(err)
			}
		}
	})
	return run
}

// manifestEntry says where and when a cassette was recorded.
type manifestEntry struct {
	Cassette        string `json:"cassette"`
	RecordedAgainst string `json:"recordedAgainst"` // "nsemu/N" or "namespace"
	Region          string `json:"region,omitempty"`
	Seed            int    `json:"seed,omitempty"`
	Clock           string `json:"clock,omitempty"`
	RecordedOn      string `json:"recordedOn"`
}

var manifestMu sync.Mutex

func updateManifest(e manifestEntry) error {
	manifestMu.Lock()
	defer manifestMu.Unlock()
	path := filepath.Join(fixturesDir, "manifest.json")
	var entries []manifestEntry
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &entries); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	replaced := false
	for i := range entries {
		if entries[i].Cassette == e.Cassette {
			entries[i], replaced = e, true
		}
	}
	if !replaced {
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Cassette < entries[j].Cassette })
	b, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func TestCoalesceKeepsEachStreamInOrder(t *testing.T) {
	d := decodedStream{Messages: []map[string]any{
		{"stream": "STDERR", "dataText": "e1"}, {"stream": "STDOUT", "dataText": "o1"}, {"stream": "STDERR", "dataText": "e2"},
		{"stream": "STDOUT", "data": "AP8="}, {"stream": "STDOUT", "dataText": "o2"}, {"exitStatus": map[string]any{"exitCode": 1}},
	}}
	coalesce(&d)
	got, _ := json.Marshal(d.Messages)
	want := `[{"dataText":"e1e2","stream":"STDERR"},{"dataText":"o1","stream":"STDOUT"},{"data":"AP8=","stream":"STDOUT"},{"dataText":"o2","stream":"STDOUT"},{"exitStatus":{"exitCode":1}}]`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
