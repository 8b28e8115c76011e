package nsdriver

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

const (
	hygieneToken  = "nsct_HYGIENE_TOKEN_d41d8cd98f00b204"
	hygieneSecret = "HYGIENE-ENV-SECRET-e9800998ecf8427e"
)

// TestSecretsNeverLeak runs whole flows with a recognizable token and env
// secret and looks for them in every log line, error, result and recording.
func TestSecretsNeverLeak(t *testing.T) {
	denoPath(t)
	emu := startTestEmu(t, nsemu.Options{Token: hygieneToken})
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{Endpoint: emu.URL(), Token: hygieneToken, Env: map[string]string{"SECRET": hygieneSecret}}
	d, err := New(cfg, WithLogger(logger), WithClientOptions(WithLogger(logger),
		WithRetryPolicy(RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond})))
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	check := func(what string, texts ...string) {
		for _, text := range texts {
			seen = append(seen, what)
			if strings.Contains(text, hygieneToken) || strings.Contains(text, hygieneSecret) {
				t.Errorf("%s leaks a secret: %s", what, text)
			}
		}
	}
	checkResult := func(what string, res ExecutionResult) {
		b, _ := json.Marshal(res)
		errText := ""
		if res.Err != nil {
			errText = res.Err.Error() + fmt.Sprintf("%+v %#v", res.Err, res.Err)
		}
		check(what, string(b), errText, res.Error)
	}
	ctx := context.Background()
	uses := `test "$SECRET" = "` + "$(printf %s \"$SECRET\")" + `" && echo used`
	checkResult("command success", d.Execute(ctx, commandRequest(uses), Callbacks{}))
	checkResult("command failure", d.Execute(ctx, commandRequest("test -n \"$SECRET\"; echo failing >&2; exit 4"), Callbacks{}))
	checkResult("timeout", func() ExecutionResult {
		short, _ := New(Config{Endpoint: emu.URL(), Token: hygieneToken, Env: cfg.Env, Timeout: Milliseconds(200 * time.Millisecond)}, WithLogger(logger))
		return short.Execute(ctx, commandRequest("sleep 5"), Callbacks{})
	}())
	checkResult("bundle", d.Execute(ctx, bundleRequest(`export const model = { methods: { m: { execute(a, ctx) {
		ctx.logger.info("env has", Object.keys(Deno.env.toObject()).length, "vars"); ctx.writeResource("r", "n", { ok: Deno.env.get("SECRET").length > 0 }); } } } };`, "m"), Callbacks{}))

	// A wrong token and a refused cleartext endpoint: the errors must not echo it.
	wrong, _ := New(Config{Endpoint: emu.URL(), Token: hygieneToken + "x"}, WithLogger(logger))
	res := wrong.Execute(ctx, commandRequest("true"), Callbacks{})
	if !errors.Is(res.Err, ErrUnauthenticated) {
		t.Fatalf("wrong token: %+v", res)
	}
	check("auth failure", res.Error, res.Err.Error())
	_, err = NewClient(WithEndpoint("http://192.0.2.1"), WithToken(hygieneToken))
	check("cleartext refusal", err.Error())
	_, err = ParseConfig(map[string]any{"token": hygieneToken, "env": map[string]any{"BAD NAME": hygieneSecret}, "region": "mars"})
	check("config error", err.Error())
	check("logs", logs.String())
	if !strings.Contains(logs.String(), "instance destroyed") {
		t.Fatal("the logs are empty: nothing was checked")
	}

	// A recording of a flow, decoded: base64 and gzip opened.
	dir := t.TempDir()
	t.Run("recording", func(t *testing.T) {
		c := useCassetteIn(t, dir, "hygiene", cassetteSetup{secrets: []string{hygieneSecret}}, true)
		res := c.driver(t, Config{Env: map[string]string{"SECRET": hygieneSecret}}).Execute(ctx, commandRequest(uses), Callbacks{})
		if res.Status != ResultSuccess {
			t.Fatalf("%+v", res)
		}
	})
	cassette, err := os.ReadFile(filepath.Join(dir, "hygiene.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	check("cassette", string(cassette), decodeAll(cassette))
	if len(seen) < 10 {
		t.Fatalf("only %d texts checked", len(seen))
	}
}

var base64Run = regexp.MustCompile(`[A-Za-z0-9+/]{16,}={0,2}`)

// decodeAll returns every base64 run in b decoded, gunzipped when it is gzip.
func decodeAll(b []byte) string {
	var out strings.Builder
	for _, m := range base64Run.FindAll(b, -1) {
		raw, err := base64.StdEncoding.DecodeString(string(m))
		if err != nil {
			continue
		}
		if zr, err := gzip.NewReader(bytes.NewReader(raw)); err == nil {
			if unzipped, err := io.ReadAll(zr); err == nil {
				raw = unzipped
			}
		}
		out.Write(raw)
	}
	return out.String()
}

func TestHugeMethodArgs(t *testing.T) {
	denoPath(t)
	env := newTestEnv(t, Config{}, nsemu.Options{})
	blob := strings.Repeat("swamp ", 10<<20/6)
	req := bundleRequest(`export const model = { methods: { m: { execute(a, ctx) { ctx.writeResource("r", "len", { len: a.blob.length }); } } } };`, "m")
	req.MethodArgs = map[string]any{"blob": blob}
	res := env.driver.Execute(context.Background(), req, Callbacks{})
	if res.Status != ResultSuccess || string(res.Outputs[0].Content) != fmt.Sprintf(`{"len":%d}`, len(blob)) {
		t.Fatalf("bundle with 10 MiB methodArgs: %+v", res)
	}
	cmd := commandRequest("echo small")
	cmd.MethodArgs["blob"] = blob
	if res := env.driver.Execute(context.Background(), cmd, Callbacks{}); res.Status != ResultSuccess {
		t.Fatalf("command with 10 MiB methodArgs: %+v", res)
	}
}

func TestUnencodableArgsAreRejectedBeforeAnyVM(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	req := bundleRequest("export const model = {}", "m")
	req.MethodArgs = map[string]any{"f": func() {}}
	res := env.driver.Execute(context.Background(), req, Callbacks{})
	if res.Status != ResultError || !errors.Is(res.Err, ErrInvalidRequest) || !strings.Contains(res.Error, "methodArgs or globalArgs") ||
		res.Metadata != nil || env.emu.Count("CreateInstance") != 0 {
		t.Fatalf("%+v: want a rejection before any VM", res)
	}
}

// Loopback is decided by parsing the host, never by its spelling: names
// that merely start like a loopback address are refused as cleartext
// targets (a string-prefix check would let them through).
func TestCleartextRefusedToLookalikeHosts(t *testing.T) {
	for _, endpoint := range []string{"http://localhost.evil.com", "http://127.example.com", "http://127.0.0.1.nip.io:8080",
		"http://localhostx", "http://0x7f000001.example.com"} {
		if _, err := NewClient(WithEndpoint(endpoint), WithToken(testToken)); !errors.Is(err, ErrInsecureEndpoint) {
			t.Errorf("%s: err %v, want ErrInsecureEndpoint", endpoint, err)
		}
	}
	for _, endpoint := range []string{"http://127.0.0.2:9", "http://LOCALHOST:9", "http://[::1]:9", "http://127.255.255.254"} {
		if _, err := NewClient(WithEndpoint(endpoint), WithToken(testToken)); err != nil {
			t.Errorf("%s: %v", endpoint, err)
		}
	}
}
