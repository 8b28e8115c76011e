package nsdriver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// A fleet command never depends on its output stream. The API has no
// re-attach, command id or signal, and a stream can break (a proxy, an
// HTTP/2 reset) while the command goes on, so a command that lived on its
// stream would be judged ended, and its busy VM destroyed, by a network
// fault. Instead every fleet command starts detached (its own session)
// from the first call, its output going to size-capped segment files in
// the VM's tmpfs and its exit status to a file; the fleet follows the
// output by byte offset, following again after a cut, so that no line is
// lost or repeated, and destroys the VM only once the status exists.

const (
	// fleetSegmentBytes is the size at which an output file is closed and
	// the next begun; the follower deletes segments it has delivered.
	fleetSegmentBytes = 1 << 20
	// fleetUnreadSegments bounds what a stream may hold unread in the VM's
	// memory (64 MiB): past it, output is dropped, and counted in a line
	// that says so, until the fleet reads again.
	fleetUnreadSegments = 64
	// fleetFollowPoll is how often the follower looks for new output: lines
	// arrive within about this long.
	fleetFollowPoll = "0.5"
)

// fleetStartScript starts the command detached and prints the run's
// directory once the detached side has its own session. It is idempotent
// for a run id, so a start call whose answer was lost can be repeated. Its
// arguments: the run id, the command, the capper (fleetCapperAWK), the
// detached side (fleetDetachedScript), the segment size and the unread
// bound. It needs setsid, which util-linux and busybox both have. Secrets
// are in its environment only, which the command inherits; no file holds
// them.
const fleetStartScript = `set -e
command -v setsid >/dev/null 2>&1 || { echo "nsdriver: a fleet needs setsid (util-linux or busybox) in the image" >&2; exit 1; }
base=${TMPDIR:-/dev/shm}
{ [ -d "$base" ] && [ -w "$base" ]; } || base=/tmp
d=$base/nsdriver-fleet-$1
if mkdir -m 700 "$d" 2>/dev/null; then
  mkfifo "$d/out.pipe" "$d/err.pipe"
  setsid sh -c "$4" nsdriver-fleet "$d" "$2" "$3" "$5" "$6" </dev/null >/dev/null 2>&1 &
fi
# The detached side must have left this call's process group before the
# call ends: a server may kill the group with the call.
i=0
until [ -e "$d/started" ]; do
  i=$((i + 1))
  if [ "$i" -gt 600 ]; then echo "nsdriver: the fleet command did not start within 60s" >&2; exit 1; fi
  sleep 0.1
done
printf '%s\n' "$d"
`

// fleetDetachedScript runs in its own session: the cappers read the
// command's output through FIFOs, the command runs in a session of its own
// (so that what it leaves running can be killed with it, as a command run
// without a fleet loses its leftovers), and the status file appears only
// once every line is in the output files.
const fleetDetachedScript = `d=$1
: >"$d/started"
# mawk reads a pipe in blocks unless told otherwise: lines would wait.
if awk -W version 2>&1 | grep -q mawk; then awk="awk -W interactive"; else awk=awk; fi
LC_ALL=C $awk -v dir="$d" -v name=out -v seg="$4" -v keep="$5" "$3" <"$d/out.pipe" & o=$!
LC_ALL=C $awk -v dir="$d" -v name=err -v seg="$4" -v keep="$5" "$3" <"$d/err.pipe" & e=$!
setsid sh -c "$2" >"$d/out.pipe" 2>"$d/err.pipe" </dev/null & c=$!
wait "$c"; code=$?
kill -KILL "-$c" 2>/dev/null
# A leftover outside the command's session may hold the pipes open: the
# status must not wait for it forever.
( sleep 5; kill -KILL "$o" "$e" 2>/dev/null ) & w=$!
wait "$o" "$e"
kill "$w" 2>/dev/null
echo "$code" >"$d/status.tmp" && mv "$d/status.tmp" "$d/status"
`

// fleetCapperAWK writes its input to segment files named by the offset of
// their first byte (zero-padded, so that a glob lists them in order),
// flushing every line, and drops output while the follower is
// fleetUnreadSegments behind.
const fleetCapperAWK = `
function open_segment() { f = sprintf("%s/%s.%015.0f", dir, name, total); starts[nseg++] = f; used = 0 }
function behind(   old, r) {
	old = starts[nseg - 1 - keep]
	r = (getline x < old)
	close(old)
	return r >= 0
}
function put(s) {
	printf "%s", s > f
	fflush(f)
	total += length(s); used += length(s)
	if (used >= seg) {
		close(f); open_segment()
		blocked = nseg > keep && behind()
	}
}
function note() { return sprintf("[nsdriver: %d bytes of output dropped: the fleet was not reading]\n", dropped) }
BEGIN { total = 0; nseg = 0; open_segment() }
{
	line = $0 "\n"
	if (blocked && (blocked = behind())) { dropped += length(line); next }
	if (dropped > 0) { put(note()); dropped = 0 }
	put(line)
}
END { if (dropped > 0) { printf "%s", note() > f } }
`

// fleetFollowScript prints a run's output from the given offsets, stdout's
// to stdout and stderr's to stderr, every fleetFollowPoll seconds, deleting
// the segments before them (delivered), and exits 0 once the status exists
// and everything before it was printed. Its arguments: the directory and
// the two offsets.
const fleetFollowScript = `d=$1; out=$2; err=$3
[ -d "$d" ] || { echo "nsdriver: $d is gone" >&2; exit 3; }
# emit NAME OFFSET: prints NAME's bytes from OFFSET; sets pos to the new offset.
emit() {
  pos=$2
  while :; do
    cur=; next=
    for f in "$d/$1".[0-9]*; do
      [ -e "$f" ] || continue
      s=${f##*.}; s=${s#"${s%%[!0]*}"}; s=${s:-0}
      if [ "$s" -le "$pos" ]; then
        [ -z "$cur" ] || rm -f "$cur"
        cur=$f; cs=$s
      else
        next=$f; break
      fi
    done
    [ -n "$cur" ] || return 0
    size=$(wc -c <"$cur"); size=$((size + 0))
    if [ $((cs + size)) -gt "$pos" ]; then
      tail -c +$((pos - cs + 1)) "$cur" | head -c $((cs + size - pos))
      pos=$((cs + size))
    fi
    [ -n "$next" ] || return 0
  done
}
while :; do
  if [ -e "$d/status" ]; then final=1; else final=; fi
  emit out "$out"; out=$pos
  emit err "$err" >&2; err=$pos
  [ -z "$final" ] || exit 0
  sleep ` + fleetFollowPoll + ` 2>/dev/null || sleep 1
done
`

// detachedRun is one fleet command started detached in a VM, and how much
// of each stream the fleet has received.
type detachedRun struct {
	rc        *remote // with the command's environment: the start call only
	follow    *remote // with none
	dir       string
	delivered [2]int64 // bytes received: stdout, stderr
}

// startDetached starts the command. A start whose answer was lost is
// repeated: the run id makes the second call find the first's command.
func (f *Fleet) startDetached(ctx context.Context, inst *instance) (*detachedRun, error) {
	run := &detachedRun{
		rc:     newRemote(f.d.client, f.logger, inst, workloadEnv(f.d.cfg.Env, nil)),
		follow: newRemote(f.d.client, f.logger, inst, nil),
	}
	argv := []string{"sh", "-c", fleetStartScript, "nsdriver-fleet", f.vms.newID(), f.opts.Script, fleetCapperAWK,
		fleetDetachedScript, strconv.Itoa(fleetSegmentBytes), strconv.Itoa(fleetUnreadSegments)}
	var lastErr error
	for attempt := 0; attempt < 4; attempt++ {
		if attempt > 0 && !sleepCtx(ctx, f.backoff.backoff(attempt-1)) {
			return nil, ctx.Err()
		}
		resp, err := f.d.client.RunCommandSync(ctx, run.rc.endpoint, run.rc.request(argv))
		if err != nil {
			if ctx.Err() != nil || !startRetryable(err) {
				return nil, err
			}
			lastErr = err
			continue
		}
		if resp.ExitCode != 0 {
			return nil, fmt.Errorf("starting the fleet command failed (exit %d): %s", resp.ExitCode, strings.TrimSpace(string(resp.Stderr)))
		}
		run.dir = strings.TrimSpace(string(resp.Stdout))
		return run, nil
	}
	return nil, lastErr
}

// startRetryable: the start's answer was lost or the server was briefly
// away; a repeated start finds the first one's command.
func startRetryable(err error) bool {
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrStreamTruncated) || CodeOf(err) == CodeUnavailable
}

// followOnce streams the run's output from what was delivered until the
// follower exits; it reports whether the status exists (the command ended).
func (f *Fleet) followOnce(ctx context.Context, run *detachedRun, emit func(OutputStream, []byte)) (bool, error) {
	argv := []string{"sh", "-c", fleetFollowScript, "nsdriver-follow", run.dir,
		strconv.FormatInt(run.delivered[0], 10), strconv.FormatInt(run.delivered[1], 10)}
	code, err := f.d.client.RunCommand(ctx, run.follow.endpoint, run.follow.request(argv), func(s OutputStream, data []byte) {
		if s == StreamStdout {
			run.delivered[0] += int64(len(data))
		} else {
			run.delivered[1] += int64(len(data))
		}
		emit(s, data)
	})
	if err != nil {
		return false, err
	}
	if code != 0 {
		return false, fmt.Errorf("the output follower exited %d", code)
	}
	return true, nil
}

// exitStatus reads the ended command's exit code.
func (f *Fleet) exitStatus(ctx context.Context, run *detachedRun) (int, error) {
	resp, err := f.d.client.RunCommandSync(ctx, run.follow.endpoint, run.follow.request([]string{"cat", run.dir + "/status"}))
	if err != nil {
		return 0, err
	}
	code, perr := strconv.Atoi(strings.TrimSpace(string(resp.Stdout)))
	if resp.ExitCode != 0 || perr != nil {
		return 0, fmt.Errorf("reading the fleet command's exit status: exit %d: %s", resp.ExitCode, strings.TrimSpace(string(resp.Stderr)))
	}
	return code, nil
}

// errVMGone: the VM is no longer running, so its command is lost.
var errVMGone = errors.New("the VM stopped running")

// vmRunning reports whether the VM still runs; an API error is returned
// as is (the VM may well be running).
func (f *Fleet) vmRunning(ctx context.Context, id string) error {
	resp, err := f.d.client.DescribeInstance(ctx, &DescribeInstanceRequest{InstanceID: id})
	switch {
	case CodeOf(err) == CodeNotFound:
		return errVMGone
	case err != nil:
		return err
	case resp.Metadata != nil && resp.Metadata.Status != StatusRunning:
		return fmt.Errorf("%w (%s)", errVMGone, resp.Metadata.Status)
	}
	return nil
}

// followToEnd follows the run until its exit status exists and returns it.
// A broken stream on a running VM is followed again; it ends with an error
// only when ctx ends, the VM stops running, or nothing has worked for
// fleetMaxAPIErrors.
func (f *Fleet) followToEnd(ctx context.Context, id string, run *detachedRun, emit func(OutputStream, []byte)) (int, error) {
	var failingSince time.Time
	for attempt := 0; ; attempt++ {
		before := run.delivered
		ended, err := f.followOnce(ctx, run, emit)
		if ended {
			var code int
			if code, err = f.exitStatus(ctx, run); err == nil {
				return code, nil
			}
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if run.delivered != before {
			failingSince, attempt = time.Time{}, 0
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		}
		if gone := f.vmRunning(ctx, id); errors.Is(gone, errVMGone) {
			return 0, fmt.Errorf("%w; the output stream ended with: %v", gone, err)
		}
		if time.Since(failingSince) >= fleetMaxAPIErrors {
			return 0, fmt.Errorf("the command's output could not be followed for %s: %w", fleetMaxAPIErrors, err)
		}
		f.logger.Warn("fleet output stream lost", "instance", id, "error", UserMessage(err))
		if !sleepCtx(ctx, f.refollow.backoff(attempt)) {
			return 0, ctx.Err()
		}
	}
}
