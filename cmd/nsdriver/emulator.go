package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/swamp-club/nsdriver/nsemu"
)

// nsdriver emulator: nsemu in the foreground, with the shell lines that
// point another shell at it.

const emulatorUsage = `Usage: nsdriver emulator [flags]

Serves nsemu, the local emulator of Namespace's compute API, until
interrupted. Commands run as processes on this machine, not in a VM.
It first prints export lines to paste into another shell.

Flags:
`

func cmdEmulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nsdriver emulator", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to listen on (the emulator runs commands on this machine)")
	token := fs.String("token", "", "bearer token to require (default: random)")
	session := fs.String("session-token", "", "also serve the session exchange for this session token, and print NSC_TOKEN_FILE/NSC_IAM_ENDPOINT lines that go through the nsc login path")
	boot := fs.Duration("boot", 0, "instance boot time, e.g. 300ms")
	rtt := fs.Duration("rtt", 0, "latency added when a call starts, e.g. 25ms")
	useTLS := fs.Bool("tls", false, "serve HTTPS (HTTP/2 by ALPN, as production) with a fresh self-signed certificate, and print an SSL_CERT_FILE line that trusts it")
	if done, err := parseFlags(fs, args, stdout, emulatorUsage); done || err != nil {
		return err
	}
	if err := checkLoopbackListen(*listen); err != nil {
		return err
	}
	emu, err := nsemu.Start(nsemu.Options{Listen: *listen, Token: *token, SessionToken: *session, BootTime: *boot, RTT: *rtt,
		DefaultPath: emulatorPath(), TLS: *useTLS})
	if err != nil {
		return err
	}
	defer emu.Close()
	dir, err := os.MkdirTemp("", "nsdriver-emulator-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	exports := [][2]string{{"NSC_ENDPOINT", emu.URL()}}
	if *useTLS {
		// SSL_CERT_FILE replaces the system's roots for the pasted shell,
		// which then trusts only the emulator.
		pemFile := filepath.Join(dir, "emulator-cert.pem")
		if err := os.WriteFile(pemFile, emu.CertPEM(), 0o644); err != nil {
			return err
		}
		exports = append(exports, [2]string{"SSL_CERT_FILE", pemFile})
	}
	if *session != "" {
		file := filepath.Join(dir, "token.json")
		if err := os.WriteFile(file, []byte(fmt.Sprintf("{\"session_token\": %q}\n", *session)), 0o600); err != nil {
			return err
		}
		exports = append(exports, [2]string{"NSC_TOKEN_FILE", file}, [2]string{"NSC_IAM_ENDPOINT", emu.URL()})
	} else {
		exports = append(exports, [2]string{"NAMESPACE_TOKEN", emu.Token()})
	}
	for _, e := range exports {
		fmt.Fprintf(stdout, "export %s=%s\n", e[0], shellQuote(e[1]))
	}
	fmt.Fprintln(stderr, "nsdriver: emulator serving; paste the export lines above into another shell. Commands run on this machine, not in a VM. Ctrl-C stops it.")
	<-ctx.Done()
	fmt.Fprintln(stderr, "nsdriver: emulator stopped; calls served: "+callSummary(emu))
	return nil
}

// callSummary counts the calls the emulator served, per method.
func callSummary(emu *nsemu.Server) string {
	counts := map[string]int{}
	for _, c := range emu.Calls() {
		counts[c.Method]++
	}
	if len(counts) == 0 {
		return "none"
	}
	var parts []string
	for _, m := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s %d", m, counts[m]))
	}
	return strings.Join(parts, ", ")
}

// checkLoopbackListen refuses a --listen that is not loopback: the
// emulator executes what its callers send on this machine.
func checkLoopbackListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError{fmt.Sprintf("--listen %q: want HOST:PORT, e.g. 127.0.0.1:8080", addr)}
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return usageError{fmt.Sprintf("--listen %s is not a loopback address: the emulator runs the commands it is sent on this machine, so it only listens on 127.0.0.1, ::1 or localhost", addr)}
	}
	return nil
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:@%+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
