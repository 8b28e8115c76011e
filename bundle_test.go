package nsdriver

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/swamp-club/nsdriver/nsemu"
	"go.uber.org/goleak"
)

// testModel is a bundle whose methods exercise the whole runner contract.
const testModel = `
const enc = new TextEncoder();
export const model = {
  methods: {
    everything: {
      async execute(args, ctx) {
        ctx.logger.debug("d", 1);
        ctx.logger.info("i", { a: 1 });
        ctx.logger.warn("w");
        ctx.logger.error("e");
        console.log("console noise must not reach the frame");
        console.info("info noise");
        console.table([1, 2]);
        await Deno.stdout.write(enc.encode("raw stdout line\nNSDRIVER-RESULT-forged-BEGIN\n{\"resources\":[]}\nNSDRIVER-RESULT-forged-END\n"));
        const h = await ctx.writeResource("state", "main", { args, model: ctx.modelType, id: ctx.modelId, method: ctx.methodName,
          def: ctx.definition.name, global: ctx.globalArgs.region });
        if (h.kind !== "resource" || h.version !== 1 || h.specName !== "state" || typeof h.dataId !== "string") throw new Error("bad handle");
        await ctx.writeResource("state", "empty", undefined);
        if (await ctx.readResource("state", "main") !== null) throw new Error("readResource must resolve to null");
        if (!(ctx.signal instanceof AbortSignal) || ctx.signal.aborted) throw new Error("no live signal");
        await ctx.createFileWriter("files", "bytes.bin").writeAll(new Uint8Array([0, 255, 1, 254]));
        await ctx.createFileWriter("files", "str.txt").writeAll("from a string");
        const text = ctx.createFileWriter("files", "text.txt");
        if (typeof text.dataId !== "string" || text.name !== "text.txt") throw new Error("writer lacks dataId/name");
        const th = await text.writeText("text");
        if (th.dataId !== text.dataId) throw new Error("handle and writer dataId differ");
        const rejects = async (p, msg) => { try { await p; } catch (e) { if (e.message === msg) return; throw e; } throw new Error("did not reject: " + msg); };
        await rejects(text.writeAll("again"), 'DataWriter "text.txt" has already been finalized');
        await rejects(text.writeLine("again"), 'DataWriter "text.txt" has already been finalized');
        await rejects(ctx.createFileWriter("files", "unused").finalize(), 'DataWriter "unused" has not been used — nothing to finalize');
        const lines = ctx.createFileWriter("files", "lines.txt");
        if (!(lines.writeLine("one") instanceof Promise)) throw new Error("writeLine must return a Promise");
        await lines.writeLine("two");
        const fh = await lines.finalize();
        if (fh.size !== 8) throw new Error("finalize size " + fh.size);
        await rejects(lines.finalize(), 'DataWriter "lines.txt" has already been finalized');
        const open = ctx.createFileWriter("files", "unfinalized.txt");
        await open.writeLine("kept"); // never finalized: still returned
        const stream = new ReadableStream({ start(c) { c.enqueue(enc.encode("chunk1,")); c.enqueue(enc.encode("chunk2")); c.close(); } });
        await ctx.createFileWriter("files", "stream.txt").writeStream(stream);
        await rejects(ctx.createFileWriter("files", "p").getFilePath(), "getFilePath is not supported when running on Namespace; use writeAll, writeText, writeLine or writeStream");
        await Deno.stdout.write(enc.encode("partial line without newline"));
      },
    },
    boom: { execute() { throw new Error("kaboom from the model"); } },
    atWriteTime: {
      async execute(args, ctx) {
        const state = { n: 1 };
        await ctx.writeResource("state", "first", state);
        state.n = 2;
        await ctx.writeResource("state", "second", state);
        state.n = 3;
        const buf = new Uint8Array([1, 2, 3]);
        await ctx.createFileWriter("files", "bytes").writeAll(buf);
        buf[0] = 9;
        const msg = "hello";
        ctx.logger.info("writing {msg}", { msg });
        ctx.logger.info("two {a} and {b}", { a: 1, b: { c: true } });
        ctx.logger.info("no template", { a: 1 });
      },
    },
    stopped: {
      async execute(args, ctx) {
        const seen = new Promise((resolve) => ctx.signal.addEventListener("abort", () => resolve(ctx.signal.reason.message)));
        Deno.kill(Deno.pid, "SIGTERM");
        await ctx.writeResource("state", "stop", { reason: await seen });
      },
    },
    exitEarly: { execute() { console.error("leaving"); Deno.exit(0); } },
  },
};
`

func bundleRequest(bundle string, method string) ExecutionRequest {
	return ExecutionRequest{ProtocolVersion: 1, ModelType: "@test/model", ModelID: "model-1", MethodName: method,
		GlobalArgs: map[string]any{"region": "eu"}, MethodArgs: map[string]any{"n": json.Number("9007199254740991")},
		DefinitionMeta: DefinitionMeta{ID: "def-1", Name: "my-def", Version: 2, Tags: map[string]string{"t": "v"}},
		Bundle:         []byte(bundle)}
}

func outputsByName(outs []DriverOutput) map[string]DriverOutput {
	m := map[string]DriverOutput{}
	for _, o := range outs {
		m[o.Name] = o
	}
	return m
}

func TestBundleModeContract(t *testing.T) {
	denoPath(t)
	env := newTestEnv(t, Config{}, nsemu.Options{})
	var logs []string
	ignore := goleak.IgnoreCurrent()
	res := env.driver.Execute(context.Background(), bundleRequest(testModel, "everything"), Callbacks{OnLog: func(l string) { logs = append(logs, l) }})
	verifyNoLeaks(t, ignore) // the packing goroutine ends with Execute
	if res.Status != ResultSuccess {
		t.Fatalf("result %+v", res)
	}
	out := outputsByName(res.Outputs)
	if len(res.Outputs) != 8 {
		t.Fatalf("%d outputs: %+v", len(res.Outputs), res.Outputs)
	}
	main := out["main"]
	if main.Type != OutputResource || main.SpecName != "state" || main.Kind != "pending" ||
		string(main.Content) != `{"args":{"n":9007199254740991},"model":"@test/model","id":"model-1","method":"everything","def":"my-def","global":"eu"}` {
		t.Fatalf("resource %+v %s", main, main.Content)
	}
	if string(out["empty"].Content) != "{}" {
		t.Fatalf("undefined data: %s", out["empty"].Content)
	}
	for name, want := range map[string]string{"bytes.bin": "\x00\xff\x01\xfe", "str.txt": "from a string", "text.txt": "text",
		"lines.txt": "one\ntwo\n", "unfinalized.txt": "kept\n", "stream.txt": "chunk1,chunk2"} {
		if o := out[name]; o.Type != OutputFile || o.SpecName != "files" || string(o.Content) != want {
			t.Errorf("file %s: %+v %q, want %q", name, o, o.Content, want)
		}
	}
	if _, ok := out["p"]; ok {
		t.Error("a writer that wrote nothing became an output")
	}
	joined := strings.Join(logs, "\n")
	for _, want := range []string{"[DEBUG] d 1", "[INFO] i { a: 1 }", "[WARN] w", "[ERROR] e", "console noise must not reach the frame",
		"info noise", "raw stdout line", "NSDRIVER-RESULT-forged-BEGIN", "partial line without newline",
		"[WARN] readResource is not available"} {
		if !strings.Contains(joined, want) {
			t.Errorf("logs lack %q:\n%s", want, joined)
		}
	}
	if strings.Join(res.Logs, "\n") != joined {
		t.Error("OnLog and result logs differ")
	}
}

func TestBundleUnknownAndThrowingMethods(t *testing.T) {
	denoPath(t)
	env := newTestEnv(t, Config{}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), bundleRequest(testModel, "nope"), Callbacks{})
	var we *WorkloadError
	if res.Status != ResultError || !errors.As(res.Err, &we) || we.ExitCode != runnerUnknownMethod ||
		!strings.Contains(res.Error, `unknown method "nope"`) || !strings.Contains(res.Error, "everything, boom, atWriteTime, stopped, exitEarly") {
		t.Fatalf("unknown: %+v", res)
	}
	res = env.driver.Execute(context.Background(), bundleRequest(testModel, "boom"), Callbacks{})
	if res.Status != ResultError || !errors.As(res.Err, &we) || we.ExitCode != runnerMethodThrew || !strings.Contains(res.Error, "kaboom from the model") || len(res.Outputs) != 0 {
		t.Fatalf("throwing: %+v", res)
	}
	res = env.driver.Execute(context.Background(), bundleRequest("this is not javascript {", "x"), Callbacks{})
	if res.Status != ResultError || !errors.As(res.Err, &we) || we.ExitCode != runnerLoadFailed || !strings.Contains(res.Error, "could not be loaded") {
		t.Fatalf("not a module: %+v", res)
	}
}

func TestBundleWithoutFrameFallsBackToRawOutput(t *testing.T) {
	denoPath(t)
	env := newTestEnv(t, Config{}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), bundleRequest(testModel, "exitEarly"), Callbacks{})
	if res.Status != ResultSuccess || len(res.Outputs) != 1 || res.Outputs[0].SpecName != "output" || res.Outputs[0].Name != "output" ||
		res.Outputs[0].Type != OutputResource {
		t.Fatalf("result %+v", res)
	}
}

func TestLargeIncompressibleBundleSpills(t *testing.T) {
	denoPath(t)
	env := newTestEnv(t, Config{}, nsemu.Options{})
	// Several spills, sent at once: the parts must be put back in order.
	noise := make([]byte, 5<<20)
	_, _ = rand.Read(noise)
	bundle := "const blob = `" + base64.StdEncoding.EncodeToString(noise)[:5<<20] + "`;\n" +
		`export const model = { methods: { size: { execute(a, ctx) { ctx.writeResource("s", "len", { len: blob.length }); } } } };`
	res := env.driver.Execute(context.Background(), bundleRequest(bundle, "size"), Callbacks{})
	if res.Status != ResultSuccess || string(res.Outputs[0].Content) != `{"len":5242880}` {
		t.Fatalf("result %+v", res)
	}
	if n := env.emu.Count("RunCommandSync"); n < 3 {
		t.Fatalf("a 5 MiB incompressible bundle used %d spill calls; want at least three", n)
	}
}

func TestInstallModeFailsClearly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() + "/install.sh"
	ln.Close()
	env := newTestEnv(t, Config{DenoSetup: DenoSetupInstall, DenoInstallURL: closedURL}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), bundleRequest(testModel, "everything"), Callbacks{})
	if res.Status != ResultError || !strings.Contains(res.Error, "installing Deno from "+closedURL+" failed") ||
		!strings.Contains(res.Error, "denoInstallUrl") {
		t.Fatalf("result %+v", res)
	}
}

func TestImageWithoutDeno(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{Images: map[string]string{DefaultBundleImage: "/usr/bin:/bin"}})
	res := env.driver.Execute(context.Background(), bundleRequest(testModel, "everything"), Callbacks{})
	// On the emulator the fix is this machine's Deno, not the image.
	if res.Status != ResultError || !strings.Contains(res.Error, "NSDRIVER_DENO") || !strings.Contains(res.Error, "./scripts/setup-deno") || strings.Contains(res.Error, "bundleImage") {
		t.Fatalf("on nsemu: want the fix to be NSDRIVER_DENO or ./scripts/setup-deno, got %+v", res)
	}
	// On Namespace it is the image, or installing Deno at boot.
	out := &streamed{exitCode: shellNotFound}
	out.stderr.WriteString("sh: 1: deno: not found\n")
	if err := bundleFailure(out, env.driver.cfg, false); !strings.Contains(err.Error(), "deno was not found in the image") || !strings.Contains(err.Error(), "bundleImage") {
		t.Fatalf("on Namespace: want the image named and bundleImage suggested, got %v", err)
	}
}

func TestFrameScanner(t *testing.T) {
	var lines []string
	f := frameScanner{marker: "M", onLine: func(l string) { lines = append(lines, l) }}
	for _, chunk := range []string{"lo", "g1\nM-BE", "GIN\n{\"resources\":", "[]}\nM-END\nafter\n", "tail"} {
		f.write([]byte(chunk))
	}
	f.flush()
	doc, ok := f.document()
	if !ok || strings.TrimSpace(string(doc)) != `{"resources":[]}` || strings.Join(lines, "|") != "log1|after|tail" {
		t.Fatalf("doc %q ok %v lines %q", doc, ok, lines)
	}
	broken := frameScanner{marker: "M", onLine: func(string) {}}
	broken.write([]byte("M-BEGIN\n{\"resources\":[]}\n"))
	broken.flush()
	if _, ok := broken.document(); ok {
		t.Fatal("a frame without its end was accepted")
	}
}

func TestParseRunnerDocumentSkipsMalformedEntries(t *testing.T) {
	outs, ok := parseRunnerDocument([]byte(`{"resources":[{"specName":"a","name":"n","data":{"x": 1}},{"specName":1,"name":"n"},{"name":"n"},
		{"specName":"a","name":"nil","data":null}],
		"files":[{"specName":"f","name":"ok","content":"aGk="},{"specName":"f","name":"bad","content":"!!"},{"specName":"f","name":"num","content":5}]}`))
	if !ok || len(outs) != 3 || string(outs[0].Content) != `{"x":1}` || string(outs[1].Content) != "{}" || string(outs[2].Content) != "hi" {
		t.Fatalf("outs %+v", outs)
	}
	if _, ok := parseRunnerDocument([]byte("not json")); ok {
		t.Fatal("not json accepted")
	}
}

func TestPackFilesIsDeterministic(t *testing.T) {
	files := []file{{name: "a", data: []byte("x")}, {name: "b", data: bytes.Repeat([]byte("y"), 1000)}}
	a, _, _ := packFiles(files)
	b, _, _ := packFiles(files)
	if strings.Join(a, "") != strings.Join(b, "") {
		t.Fatal("packFiles differs between runs")
	}
}

// The parts are argv-sized and decode to a gzipped tar of the files.
func TestPackFilesParts(t *testing.T) {
	big := make([]byte, 400<<10) // incompressible: several parts
	_, _ = rand.Read(big)
	files := []file{{name: "big", data: big}, {name: "run.sh", data: []byte("echo hi"), mode: 0o755}}
	parts, packed, err := packFiles(files)
	if err != nil || len(parts) < 4 {
		t.Fatalf("%d parts: %v", len(parts), err)
	}
	for i, p := range parts[:len(parts)-1] {
		if len(p) != maxArgBytes {
			t.Fatalf("part %d has %d bytes; all but the last are full", i, len(p))
		}
	}
	archive, err := base64.StdEncoding.DecodeString(strings.Join(parts, ""))
	if err != nil || len(archive) != packed {
		t.Fatalf("decoded %d bytes, packed %d: %v", len(archive), packed, err)
	}
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for _, f := range files {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if hdr.Name != f.name || !bytes.Equal(data, f.data) {
			t.Fatalf("entry %s: %d bytes", hdr.Name, len(data))
		}
	}
}

func TestPlanUploadRespectsArgvLimits(t *testing.T) {
	for _, size := range []int{10, 200 << 10, 1 << 20, 5 << 20} {
		archive := make([]byte, size)
		_, _ = rand.Read(archive)
		plan, err := planUpload("rid", splitArgs(base64.StdEncoding.EncodeToString(archive)), "true", []EnvironmentVariable{{Name: "K", Value: strings.Repeat("v", 1000)}})
		if err != nil {
			t.Fatal(err)
		}
		var joined strings.Builder
		for _, argv := range append(plan.spills, plan.final) {
			total := 0
			for i, a := range argv {
				if len(a) > maxArgBytes {
					t.Fatalf("size %d: argument of %d bytes", size, len(a))
				}
				total += len(a) + execOverhead
				if i >= 4 {
					joined.WriteString(a)
				}
			}
			if total+1000+execOverhead > maxExecBytes {
				t.Fatalf("size %d: a call carries %d bytes", size, total)
			}
		}
		decoded, err := base64.StdEncoding.DecodeString(joined.String())
		if err != nil || !bytes.Equal(decoded, archive) {
			t.Fatalf("size %d: the parts do not reassemble", size)
		}
		if wantSpills := size > 1<<20; (len(plan.spills) > 0) != wantSpills {
			t.Fatalf("size %d: %d spills", size, len(plan.spills))
		}
	}
}

// SIGTERM (how a stopped run ends) fires the context's AbortSignal, which
// models hand to their subprocesses.
func TestBundleSignalFiresOnSIGTERM(t *testing.T) {
	denoPath(t)
	env := newTestEnv(t, Config{}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), bundleRequest(testModel, "stopped"), Callbacks{})
	if res.Status != ResultSuccess || len(res.Outputs) != 1 || string(res.Outputs[0].Content) != `{"reason":"the run was stopped (SIGTERM)"}` {
		t.Fatalf("result %+v %q", res.Error, res.Outputs)
	}
}

// What a model writes is taken when it writes it; a template log line reads
// as swamp's logger renders it in process; a thrown error is stored as its
// message, the stack going to the log.
func TestBundleWritesAsSwampDoesInProcess(t *testing.T) {
	denoPath(t)
	env := newTestEnv(t, Config{}, nsemu.Options{})
	var logs []string
	res := env.driver.Execute(context.Background(), bundleRequest(testModel, "atWriteTime"), Callbacks{OnLog: func(l string) { logs = append(logs, l) }})
	if res.Status != ResultSuccess {
		t.Fatalf("want success, got %+v", res)
	}
	out := outputsByName(res.Outputs)
	for name, want := range map[string]string{"first": `{"n":1}`, "second": `{"n":2}`, "bytes": "\x01\x02\x03"} {
		if got := string(out[name].Content); got != want {
			t.Errorf("%s: stored %q; want %q, as it was when written", name, got, want)
		}
	}
	joined := strings.Join(logs, "\n")
	for _, want := range []string{`[INFO] writing "hello"`, `[INFO] two 1 and { c: true }`, `[INFO] no template { a: 1 }`} {
		if !strings.Contains(joined, want) {
			t.Errorf("logs lack %q:\n%s", want, joined)
		}
	}
	res = env.driver.Execute(context.Background(), bundleRequest(testModel, "boom"), Callbacks{})
	if res.Error != "kaboom from the model" || !strings.Contains(strings.Join(res.Logs, "\n"), "at Object.execute") {
		t.Fatalf("thrown error: want the error to be the message and the stack in the logs; got error %q, logs %q", res.Error, res.Logs)
	}
}
