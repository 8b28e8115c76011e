package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/swamp-club/nsdriver"
	"github.com/swamp-club/nsdriver/nsemu"
)

// Where a command runs: Namespace, or an in-process emulator.

// target is where the driver will run: Namespace, or an in-process emulator.
type target struct {
	emu   *nsemu.Server
	token nsdriver.TokenSource // where calls get their token
	close func()
	// api is the client or driver in use, once there is one: it knows
	// whether the API answering is an emulator (a pasted `nsdriver
	// emulator` too).
	api atomic.Pointer[emulatedAPI]
}

// emulatedAPI is what says whether the API is nsemu: a Driver or a Fleet.
type emulatedAPI interface{ Emulated() bool }

// use records the driver or fleet the command talks through.
func (t *target) use(api emulatedAPI) { t.api.Store(&api) }

// emulated reports whether commands run on an emulator: the CLI's own, or
// an API that said it is one.
func (t *target) emulated() bool {
	if t.emu != nil {
		return true
	}
	api := t.api.Load()
	return api != nil && (*api).Emulated()
}

// connect decides where to run. With --emulator, or with no token anywhere
// when fallback is allowed, it starts an in-process emulator and points cfg
// at it; otherwise a missing token is an error saying how to fix it.
func (c *common) connect(cfg *nsdriver.Config, allowFallback bool, stderr io.Writer, command string) (*target, error) {
	if !c.emulator {
		src, err := nsdriver.NewTokenSource(cfg.Token, cfg.TokenFile)
		if err == nil {
			if msg := nsdriver.Deprecation(src); msg != "" {
				c.notice(stderr, msg)
			}
			return &target{token: src, close: func() {}}, nil
		}
		if !errors.Is(err, nsdriver.ErrNoToken) {
			return nil, err
		}
		if !allowFallback {
			return nil, usageError{fmt.Sprintf("%s needs a Namespace token: set NAMESPACE_TOKEN, pass --token or --token-file, run `nsc login`, or pass --emulator to use the local emulator", command)}
		}
		c.notice(stderr, "no Namespace token found; using the built-in emulator: the command runs on this machine, not in a VM (set NAMESPACE_TOKEN or run `nsc login` to use Namespace)")
	}
	emu, err := nsemu.Start(nsemu.Options{DefaultPath: emulatorPath()})
	if err != nil {
		return nil, err
	}
	cfg.Endpoint, cfg.Token, cfg.TokenFile = emu.URL(), emu.Token(), ""
	return &target{emu: emu, token: nsdriver.StaticToken(emu.Token()), close: func() { _ = emu.Close() }}, nil
}

// emulatorPath is the host PATH, with NSDRIVER_DENO's folder first so that
// bundle mode finds Deno.
func emulatorPath() string {
	path := os.Getenv("PATH")
	if deno := os.Getenv("NSDRIVER_DENO"); deno != "" {
		path = filepath.Dir(deno) + string(os.PathListSeparator) + path
	}
	return path
}
