package nsdriver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `nsdriver exec` as swamp runs it: a separate process per execution,
// measured by its wall time and its peak RSS.

// rssLauncherEnv makes the test binary a launcher (see TestMain): it runs
// the command in NSDRIVER_RSS_LAUNCH (JSON argv) and reports the command's
// wall time and peak RSS. A child's peak RSS counts its parent's at the
// fork, so it is measured under this small process, not the benchmark.
const rssLauncherEnv = "NSDRIVER_RSS_LAUNCH"

func launchAndReportMaxRSS() int {
	var argv []string
	if err := json.Unmarshal([]byte(os.Getenv(rssLauncherEnv)), &argv); err != nil || len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "launcher: bad argv:", err)
		return 2
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, rssLauncherEnv+"=") })
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "launcher:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "\nwall-ns %d maxrss-kib %d\n", wall.Nanoseconds(), cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
	return cmd.ProcessState.ExitCode()
}

// runExec runs `nsdriver exec` on request under the launcher and returns
// its wall time and peak RSS in MiB.
func runExec(b *testing.B, emu separateEmulator, request []byte) (time.Duration, float64) {
	b.Helper()
	return launch(b, emu, request, emu.bin, "exec", "--endpoint", emu.endpoint, "--token", emu.token)
}

// launch runs argv under the launcher, pointed at emu, with stdin.
func launch(b *testing.B, emu separateEmulator, stdin []byte, argv ...string) (time.Duration, float64) {
	b.Helper()
	encoded, _ := json.Marshal(argv)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), rssLauncherEnv+"="+string(encoded))
	if emu.certFile != "" {
		cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+emu.certFile)
	}
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = io.Discard
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("%v: %s", err, stderr.String())
	}
	var ns, kib int64
	_, report, _ := strings.Cut(stderr.String(), "\nwall-ns ")
	if _, err := fmt.Sscanf(report, "%d maxrss-kib %d", &ns, &kib); err != nil {
		b.Fatalf("no report in %q", stderr.String())
	}
	return time.Duration(ns), float64(kib) / 1024
}

// BenchmarkExecTrue is the floor of one `nsdriver exec`: `true` on a
// zero-latency emulator, over plain HTTP and over HTTPS, beside a Go
// hello-world and `nsdriver version` run the same way (medians).
func BenchmarkExecTrue(b *testing.B) {
	plain, secure := startSeparateEmulator(b), separateTLSEmulator(b)
	hello := filepath.Join(b.TempDir(), "hello")
	if err := os.WriteFile(hello+".go", []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := goTool("build", "-o", hello, hello+".go").CombinedOutput(); err != nil {
		b.Fatalf("%v %s", err, out)
	}
	request := []byte(`{"methodName":"m","methodArgs":{"run":"true"}}`)
	var helloMs, versionMs, plainMs, tlsMs []float64
	ms := func(d time.Duration, _ float64) float64 { return float64(d.Microseconds()) / 1000 }
	for b.Loop() {
		helloMs = append(helloMs, ms(launch(b, plain, nil, hello)))
		versionMs = append(versionMs, ms(launch(b, plain, nil, plain.bin, "version")))
		plainMs = append(plainMs, ms(runExec(b, plain, request)))
		tlsMs = append(tlsMs, ms(runExec(b, secure, request)))
	}
	b.ReportMetric(median(helloMs), "go-hello-ms")
	b.ReportMetric(median(versionMs), "version-ms")
	b.ReportMetric(median(plainMs), "exec-true-http-ms")
	b.ReportMetric(median(tlsMs), "exec-true-https-ms")
}

// BenchmarkExecLargeOutput runs `nsdriver exec` for 64 MiB of stdout and
// reports the process's peak RSS against the output's size.
func BenchmarkExecLargeOutput(b *testing.B) {
	emu := separateTLSEmulator(b)
	request := fmt.Appendf(nil, `{"methodName":"m","methodArgs":{"run":"head -c %d /dev/zero"}}`, largeOutput)
	var rssMiB float64
	var wall time.Duration
	for b.Loop() {
		w, rss := runExec(b, emu, request)
		wall += w
		rssMiB = max(rssMiB, rss)
	}
	b.ReportMetric(rssMiB, "peak-rss-MiB")
	b.ReportMetric(rssMiB/(largeOutput>>20), "peak-rss/output")
	b.ReportMetric(largeOutput/(1<<20)/(wall.Seconds()/float64(b.N)), "MiB/s")
}

// BenchmarkExecLargeMethodArgs runs a bundle through `nsdriver exec` with
// a small argument and with a 10 MiB one (random base64 text, which does
// not compress), and reports what the large one adds: peak RSS and wall
// time, medians over the iterations.
func BenchmarkExecLargeMethodArgs(b *testing.B) {
	denoPath(b)
	emu := separateTLSEmulator(b)
	bundle := base64.StdEncoding.EncodeToString([]byte(
		`export const model = { methods: { m: { execute(args, ctx) { ctx.writeResource("r", "n", { n: args.x.length }); } } } };`))
	noise := make([]byte, 10<<20*3/4)
	rng := rand.NewChaCha8([32]byte{7})
	_, _ = rng.Read(noise)
	request := func(x string) []byte {
		return fmt.Appendf(nil, `{"methodName":"m","methodArgs":{"x":%q},"modelType":"t","modelId":"i","bundle":%q}`, x, bundle)
	}
	small, large := request("small"), request(base64.StdEncoding.EncodeToString(noise))
	var addedRSS, addedWall []float64
	for b.Loop() {
		w0, r0 := runExec(b, emu, small)
		w1, r1 := runExec(b, emu, large)
		addedRSS = append(addedRSS, r1-r0)
		addedWall = append(addedWall, float64((w1 - w0).Milliseconds()))
	}
	b.ReportMetric(median(addedRSS), "added-rss-MiB")
	b.ReportMetric(median(addedWall), "added-wall-ms")
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}
