package nsemu

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// An instance's processes are real processes on this machine. A command can
// leave its process group (setsid, as a detached worker does), so killing
// the groups of the calls in flight is not enough: every command carries
// instanceTag in its environment, which its descendants inherit, and a
// destroyed instance's tagged processes are killed wherever they went, as a
// VM's would die with it.

const instanceTag = "NSEMU_INSTANCE"

func tagEnv(dir string) string { return instanceTag + "=" + dir }

// killTagged kills every process whose environment carries dir's tag.
func killTagged(dir string) {
	want := []byte(tagEnv(dir) + "\x00")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return // not Linux: the groups' kill is all there is
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, want...)) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
