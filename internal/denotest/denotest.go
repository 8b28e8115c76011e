// Package denotest finds Deno for the tests that need it: NSDRIVER_DENO,
// then .deno/bin/deno in the project (what scripts/setup-deno installs),
// then PATH. Without one a test is skipped with a line saying how to get
// it, unless NSDRIVER_REQUIRE_DENO=1 (set by scripts/test) makes it fail.
package denotest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

const howTo = "Deno not found: run ./scripts/setup-deno (or set NSDRIVER_DENO to a deno binary, or put deno on PATH)"

// Path returns the deno binary, or skips (fails, under
// NSDRIVER_REQUIRE_DENO=1) the test.
func Path(t testing.TB) string {
	t.Helper()
	if p := Find(); p != "" {
		return p
	}
	if os.Getenv("NSDRIVER_REQUIRE_DENO") == "1" {
		t.Fatal(howTo + " — NSDRIVER_REQUIRE_DENO=1 requires it")
	}
	t.Skip(howTo)
	return ""
}

// Find returns the deno binary, or "".
func Find() string {
	if p := os.Getenv("NSDRIVER_DENO"); p != "" {
		return p
	}
	if root := projectRoot(); root != "" {
		p := filepath.Join(root, ".deno", "bin", "deno")
		if info, err := os.Stat(p); err == nil && info.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("deno"); err == nil {
		return p
	}
	return ""
}

// PathEnv is PATH with Deno's folder first, for emulated images.
func PathEnv() string {
	if p := Find(); p != "" {
		return filepath.Dir(p) + string(os.PathListSeparator) + os.Getenv("PATH")
	}
	return os.Getenv("PATH")
}

// projectRoot is the nearest folder above the working directory with a
// go.mod.
func projectRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
