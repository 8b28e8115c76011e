package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/internal/denotest"
	"github.com/swamp-club/nsdriver/nsemu"
)

// Real driver-era swamp (NSDRIVER_SWAMP_DRIVERS names its launcher:
// ../shared/realswamp/setup drivers prints one; ./scripts/test sets it)
// runs the same command/shell definitions under its in-process raw driver
// and under @swamp/namespace on nsemu, installed as docs/swamp.md says; what
// it stores must be the same, executedAt and durationMs aside.

// swampRepo is a scratch swamp repository with the extension installed,
// nsdriver on PATH, and the emulator's endpoint and token in the
// environment.
type swampRepo struct {
	swampCLI
	tmp string // the TMPDIR swamp and nsdriver see
}

func newSwampRepo(t *testing.T, emu *nsemu.Server) *swampRepo {
	t.Helper()
	launcher := os.Getenv("NSDRIVER_SWAMP_DRIVERS")
	if launcher == "" {
		t.Skip("NSDRIVER_SWAMP_DRIVERS is not set: run ../shared/realswamp/setup drivers and set it to the launcher it prints (./scripts/test does)")
	}
	bin := t.TempDir()
	if err := os.Symlink(binary, filepath.Join(bin, "nsdriver")); err != nil {
		t.Fatal(err)
	}
	r := &swampRepo{swampCLI: swampCLI{t: t, launcher: launcher, dir: t.TempDir()}, tmp: t.TempDir()}
	r.env = append(os.Environ(), "NO_COLOR=1", "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"NSC_ENDPOINT="+emu.URL(), "NAMESPACE_TOKEN="+emu.Token(), "TMPDIR="+r.tmp)
	if out, err := r.command("git", "init", "-q", ".").CombinedOutput(); err != nil {
		t.Fatalf("git init: %v\n%s", err, out)
	}
	r.swamp("init", "--tool", "none")
	ext := filepath.Join(r.dir, "extensions", "drivers")
	src, err := os.ReadFile("../../swamp/extensions/drivers/namespace.ts")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(ext, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ext, "namespace.ts"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	r.swamp("model", "create", "command/shell", "hello")
	return r
}

// parityModel is an extension model that writes, then changes what it
// wrote; logs a message template; and throws.
const parityModel = `import { z } from "npm:zod@4";

export const model = {
  type: "@nsdtest/parity",
  version: "2026.02.09.1",
  resources: {
    state: { description: "state", schema: z.object({ n: z.number() }), lifetime: "infinite", garbageCollection: 10 },
  },
  files: {
    out: { description: "out", contentType: "text/plain", lifetime: "infinite", garbageCollection: 10 },
  },
  methods: {
    write: {
      description: "writes, then changes what it wrote",
      arguments: z.object({}),
      execute: async (_args: Record<string, never>, ctx: any) => {
        const state = { n: 1 };
        const first = await ctx.writeResource("state", "first", state);
        state.n = 2;
        const second = await ctx.writeResource("state", "second", state);
        state.n = 3;
        const lines = ctx.createFileWriter("out", "lines");
        await lines.writeLine("one");
        await lines.writeLine("two");
        const linesHandle = await lines.finalize();
        const buf = new TextEncoder().encode("abc");
        const bytes = await ctx.createFileWriter("out", "bytes").writeAll(buf);
        buf[0] = 120;
        const msg = "hello";
        ctx.logger.info("writing {msg}", { msg });
        return { dataHandles: [first, second, linesHandle, bytes] };
      },
    },
    boom: { description: "throws", arguments: z.object({}), execute: async () => { throw new Error("kaboom from the model"); } },
  },
};
`

// swamp runs swamp and fails the test when it fails or warns about the
// extension; it returns stdout.
func (r *swampRepo) swamp(args ...string) string {
	r.t.Helper()
	res := r.run(args...)
	r.noExtensionWarning(res.stderr)
	return res.stdout
}

func (r *swampRepo) noExtensionWarning(stderr string) {
	r.t.Helper()
	if strings.Contains(stderr, "could not be extracted") || strings.Contains(stderr, "namespace.ts") {
		r.t.Errorf("swamp warned about the extension:\n%s", stderr)
	}
}

// stored is what one method run left: its status, error, resources
// (timings aside) and files.
type stored struct {
	Succeeded bool
	Error     string
	Result    map[string]any    // the "result" resource's attributes, or every resource's by name
	Files     map[string]string // file outputs by name
	runLog    string            // swamp's log of the run (compared apart: it has timestamps)
}

func (r *swampRepo) runMethod(model, method, driver string, inputs ...string) stored {
	r.t.Helper()
	args := []string{"model", "method", "run", model, method, "--json"}
	if driver != "" {
		args = append(args, "--driver", driver)
	}
	for _, in := range inputs {
		args = append(args, "--input", in)
	}
	res := runCmd(r.t, r.command(r.launcher, args...))
	r.noExtensionWarning(res.stderr)
	var out struct {
		Status        string
		Error         string
		LogFile       string
		DataArtifacts []struct {
			Name       string
			Path       string
			Attributes map[string]any
		}
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		// A failed run prints its error on stderr, not a document.
		return stored{Error: lastErrorLine(res.stderr)}
	}
	s := stored{Succeeded: out.Status == "succeeded", Error: out.Error, Files: map[string]string{}}
	for _, a := range out.DataArtifacts {
		switch {
		case a.Attributes != nil:
			if s.Result == nil {
				s.Result = map[string]any{}
			}
			delete(a.Attributes, "executedAt")
			delete(a.Attributes, "durationMs")
			if a.Name == "result" {
				s.Result = a.Attributes
			} else {
				s.Result[a.Name] = a.Attributes
			}
		default:
			data, err := os.ReadFile(filepath.Join(a.Path, "raw"))
			if err != nil {
				r.t.Fatalf("reading the file output %s: %v", a.Name, err)
			}
			s.Files[a.Name] = string(data)
		}
	}
	if res.code == 0 && out.LogFile != "" {
		data, _ := os.ReadFile(out.LogFile)
		s.runLog = string(data)
	}
	return s
}

// lastErrorLine is the error swamp printed for a failed run.
func lastErrorLine(stderr string) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "rror") {
			return strings.TrimSpace(lines[i])
		}
	}
	return strings.TrimSpace(stderr)
}

func TestRealSwampCommandShellMatchesRaw(t *testing.T) {
	emu := startEmu(t, nsemu.Options{})
	r := newSwampRepo(t, emu)
	for _, inputs := range [][]string{
		{"run=echo hello; echo warn >&2"},
		{`run=echo '{"a":1}'`},
		{"run=echo 42"},
		{`run=echo "dir=$(pwd) FOO=$FOO"; exit 3`, "workingDir=/usr", `env:json={"FOO":"bar"}`, "ignoreExitCode=true"},
		{"run=echo out; echo bad >&2; exit 3"},
	} {
		r.sameUnderBoth(fmt.Sprintf("%q", inputs), "hello", "execute", inputs...)
	}
	r.nothingLeft(emu)
}

// sameUnderBoth runs a method under raw and under @swamp/namespace and
// reports any difference in what swamp stored; it returns both.
func (r *swampRepo) sameUnderBoth(what, model, method string, inputs ...string) (raw, ns stored) {
	r.t.Helper()
	raw = r.runMethod(model, method, "raw", inputs...)
	ns = r.runMethod(model, method, "@swamp/namespace", inputs...)
	a, b := raw, ns
	a.runLog, b.runLog = "", "" // timestamps
	if !reflect.DeepEqual(a, b) {
		r.t.Errorf("%s:\n raw stored       %+v\n namespace stored %+v", what, a, b)
	}
	return raw, ns
}

// nothingLeft checks that no instance lives and nothing of nsdriver's is
// left in the temp directory.
func (r *swampRepo) nothingLeft(emu *nsemu.Server) {
	r.t.Helper()
	if n := len(emu.LiveInstances()); n != 0 {
		r.t.Errorf("%d instances left alive", n)
	}
	r.noTempLeftovers()
}

// A bundle model under @swamp/namespace stores what it stores under raw:
// data as it was when written, files, a thrown error's message; its log
// template reads as swamp renders it in process.
func TestRealSwampBundleMatchesRaw(t *testing.T) {
	emu := startEmu(t, nsemu.Options{DefaultPath: filepath.Dir(denotest.Path(t)) + string(os.PathListSeparator) + os.Getenv("PATH")})
	r := newSwampRepo(t, emu)
	models := filepath.Join(r.dir, "extensions", "models")
	if err := os.MkdirAll(models, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(models, "parity.ts"), []byte(parityModel), 0o644); err != nil {
		t.Fatal(err)
	}
	r.swamp("model", "create", "@nsdtest/parity", "p1")
	for _, method := range []string{"write", "boom"} {
		raw, ns := r.sameUnderBoth(method, "p1", method)
		if method == "write" {
			for driver, s := range map[string]stored{"raw": raw, "namespace": ns} {
				if !strings.Contains(s.runLog, `writing "hello"`) || strings.Contains(s.runLog, "undefined") {
					t.Errorf("%s: the template log line does not read writing \"hello\":\n%s", driver, s.runLog)
				}
			}
		}
	}
	r.nothingLeft(emu)
}

// swamp's catalog reads the driver from the source: its type, name and
// config fields reach `swamp extension push --dry-run`.
func TestRealSwampExtensionMetadata(t *testing.T) {
	r := newSwampRepo(t, startEmu(t, nsemu.Options{}))
	for _, f := range []string{"manifest.yaml", "deno.json", "extensions/drivers/namespace.ts"} {
		data, err := os.ReadFile(filepath.Join("../../swamp", f))
		if err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(r.dir, "pkg", f)
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dest, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := r.swamp("extension", "push", "pkg/manifest.yaml", "--dry-run", "--json")
	var meta struct {
		Drivers []struct {
			Type, Name   string
			ConfigFields []struct{ Name string }
		}
	}
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&meta); err != nil || len(meta.Drivers) != 1 {
		t.Fatalf("push --dry-run: %v\n%s", err, out)
	}
	d := meta.Drivers[0]
	var fields []string
	for _, f := range d.ConfigFields {
		fields = append(fields, f.Name)
	}
	if d.Type != "@swamp/namespace" || d.Name != "Namespace" || !slices.Contains(fields, "machineType") || !slices.Contains(fields, "nsdriverPath") {
		t.Fatalf("push --dry-run lists the driver as %+v; want its type, name and config fields", d)
	}
}

// A driverConfig timeout fails the run saying so; SIGINT to swamp stops the
// run, the VM is destroyed, and nothing is left in the temp directory.
func TestRealSwampTimeoutAndInterrupt(t *testing.T) {
	emu := startEmu(t, nsemu.Options{})
	r := newSwampRepo(t, emu)
	defs, _ := filepath.Glob(filepath.Join(r.dir, "models", "command", "shell", "*.yaml"))
	if len(defs) != 1 {
		t.Fatalf("definitions %v", defs)
	}
	f, err := os.OpenFile(defs[0], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("driver: \"@swamp/namespace\"\ndriverConfig:\n  timeout: 2000\n")
	f.Close()
	if s := r.runMethod("hello", "execute", "", "run=sleep 20"); s.Succeeded || !strings.Contains(s.Error, "timed out after 2000ms") {
		t.Fatalf("driverConfig timeout 2000: want a failure saying timed out after 2000ms, got %+v", s)
	}

	cmd := r.command(r.launcher, "model", "method", "run", "hello", "execute", "--input", "run=sleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(2 * time.Minute); emu.Count("RunCommand") < 2 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond) // the timed-out run above made one
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	for end := time.Now().Add(time.Minute); len(emu.LiveInstances()) != 0 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if live := emu.LiveInstances(); len(live) != 0 {
		t.Errorf("after SIGINT to swamp, %v still alive", live)
	}
	r.noTempLeftovers()
}

func (r *swampRepo) noTempLeftovers() {
	r.t.Helper()
	entries, _ := os.ReadDir(r.tmp)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "nsdriver") || strings.HasPrefix(e.Name(), "nsemu") {
			r.t.Errorf("left in the temp directory: %s", e.Name())
		}
	}
}
