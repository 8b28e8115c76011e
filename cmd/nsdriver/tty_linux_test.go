package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// -i with a terminal on stdin is refused before anything runs: the API has
// no interactive stdin, so the command would wait for input nobody can type.
func TestRunStdinRefusesATerminal(t *testing.T) {
	_, tty := openPTY(t)
	cmd := exec.Command(binary, "run", "-i", "--", "cat")
	cmd.Stdin = tty
	r := runCmd(t, cmd)
	if r.code != 2 || !strings.Contains(r.stderr, "stdin is a terminal") || strings.Contains(r.stderr, "creating") {
		t.Fatalf("run -i on a terminal: want exit 2 saying stdin is a terminal before any instance; got exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if !isTerminal(tty) {
		t.Fatal("isTerminal says a pseudo-terminal is not one")
	}
}

// openPTY opens a pseudo-terminal pair, closed when the test ends.
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	var unlock int32
	var n uint32
	if err := ioctl(ptmx, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	if err := ioctl(ptmx, syscall.TIOCGPTN, unsafe.Pointer(&n)); err != nil {
		t.Fatalf("naming the pseudo-terminal: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return ptmx, tty
}

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}
