package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// stderr for people and programs: progress sentences, JSON lines, notices.

// logger builds stderr's logger: human lines, or JSON with source=driver.
// On the CLI's own emulator, the human lines say "emulator", never "VM",
// and that there is no charge.
func (c *common) logger(stderr io.Writer, verbose bool, tgt *target) *slog.Logger {
	if c.quiet || !verbose {
		return slog.New(slog.DiscardHandler)
	}
	if c.jsonLogs {
		return slog.New(slog.NewJSONHandler(stderr, nil)).With("source", "driver")
	}
	return slog.New(&humanHandler{w: stderr, emulated: tgt.emulated})
}

// workloadLine writes the workload's stderr lines: verbatim, or as JSON
// lines with source=workload.
func (c *common) workloadLine(stderr io.Writer) func(string) {
	if c.jsonLogs {
		l := slog.New(slog.NewJSONHandler(stderr, nil)).With("source", "workload")
		return func(line string) { l.Info(line) }
	}
	return func(line string) { fmt.Fprintln(stderr, line) }
}

// notice writes one line for the user, even under --quiet: as a JSON
// record with --json-logs, else as "nsdriver: …".
func (c *common) notice(stderr io.Writer, msg string) {
	if c.jsonLogs {
		slog.New(slog.NewJSONHandler(stderr, nil)).Warn(msg, "source", "driver")
		return
	}
	fmt.Fprintln(stderr, "nsdriver: "+msg)
}

// humanHandler prints "nsdriver: <message> k=v …" lines for a person, in
// the emulator's words once the API is known to be one.
type humanHandler struct {
	w        io.Writer
	emulated func() bool
	attrs    []slog.Attr
}

func (h *humanHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

// humanTemplates render the driver's progress messages as sentences;
// {key} is replaced by the attribute's value.
var humanTemplates = map[string]string{
	"creating instance":          "creating a {machineType} {arch} instance in region {region} (image {image})",
	"instance ready":             "VM {instance} ready after {bootMs} ms",
	"uploading bundle":           "uploading {kib} KiB ({compressedKib} KiB compressed) in {calls} call(s)",
	"running":                    "running on {instance}",
	"instance destroyed":         "VM {instance} destroyed",
	"cost":                       "estimated cost ${estimatedCostUsd} ({unitMinutes} unit minutes over {seconds} s)",
	"fleet started":              "fleet {fleet}: keeping up to {size} VM(s) running",
	"fleet VM ready":             "slot {slot}: VM {instance} ready after {bootMs} ms",
	"fleet command ended":        "slot {slot}: VM {instance}: the command {outcome}; destroyed {destroyed}; estimated cost ${estimatedCostUsd}",
	"fleet stopped launching":    "{failedInARow} runs in a row failed: no more launches; running commands finish",
	"fleet boot failed":          "slot {slot}: VM {instance} failed to boot: {reason} ({inARow} in a row); replacing it",
	"fleet quota":                "slot {slot}: the workspace limits the fleet ({reason}); waiting",
	"fleet API error":            "slot {slot}: {error}; retrying",
	"fleet command failed":       "slot {slot}: VM {instance}: {error}",
	"fleet started on demand":    "fleet {fleet}: {min} to {max} VM(s), as --demand says",
	"fleet demand":               "demand: {waiting} job(s) waiting; {covering} starting VM(s) cover some; {alive} alive",
	"fleet demand failed":        "--demand failed: {error}; launching nothing new until it answers (running VMs go on)",
	"fleet demand answers again": "--demand answers again",
	"fleet command ready":        "slot {slot}: VM {instance}: ready for work after {readyMs} ms",
	"fleet output stream lost":   "VM {instance}: the output stream broke ({error}); the command goes on: following again",
}

// emulatorTemplates are humanTemplates for an emulator: the CLI's own, or
// an API that said it is one (before its first answer, "creating" says
// "instance", true of both).
var emulatorTemplates = map[string]string{
	"creating instance":          "creating a {machineType} {arch} emulator instance (image {image}; commands run on this machine)",
	"instance ready":             "emulator instance {instance} ready after {bootMs} ms",
	"uploading bundle":           "uploading {kib} KiB ({compressedKib} KiB compressed) in {calls} call(s)",
	"running":                    "running on emulator instance {instance}",
	"instance destroyed":         "emulator instance {instance} destroyed",
	"cost":                       "no charge: the emulator runs on this machine (on Namespace this would be about {unitMinutes} unit minutes)",
	"fleet started":              "fleet {fleet}: keeping up to {size} emulator instance(s) running (commands run on this machine)",
	"fleet VM ready":             "slot {slot}: emulator instance {instance} ready after {bootMs} ms",
	"fleet command ended":        "slot {slot}: emulator instance {instance}: the command {outcome}; destroyed {destroyed}; no charge",
	"fleet stopped launching":    "{failedInARow} runs in a row failed: no more launches; running commands finish",
	"fleet boot failed":          "slot {slot}: emulator instance {instance} failed to boot: {reason} ({inARow} in a row); replacing it",
	"fleet quota":                "slot {slot}: the emulator's quota limits the fleet ({reason}); waiting",
	"fleet API error":            "slot {slot}: {error}; retrying",
	"fleet command failed":       "slot {slot}: emulator instance {instance}: {error}",
	"fleet started on demand":    "fleet {fleet}: {min} to {max} emulator instance(s), as --demand says (commands run on this machine)",
	"fleet demand":               "demand: {waiting} job(s) waiting; {covering} starting instance(s) cover some; {alive} alive",
	"fleet demand failed":        "--demand failed: {error}; launching nothing new until it answers (running instances go on)",
	"fleet demand answers again": "--demand answers again",
	"fleet command ready":        "slot {slot}: emulator instance {instance}: ready for work after {readyMs} ms",
	"fleet output stream lost":   "emulator instance {instance}: the output stream broke ({error}); the command goes on: following again",
}

func (h *humanHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := append([]slog.Attr(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
	line := r.Message
	templates := humanTemplates
	if h.emulated() {
		templates = emulatorTemplates
	}
	if tmpl, ok := templates[r.Message]; ok {
		line = tmpl
		for _, a := range attrs {
			line = strings.ReplaceAll(line, "{"+a.Key+"}", fmt.Sprint(a.Value.Any()))
		}
	} else {
		for _, a := range attrs {
			line += fmt.Sprintf(" %s=%v", a.Key, a.Value.Any())
		}
	}
	_, err := io.WriteString(h.w, "nsdriver: "+line+"\n")
	return err
}

func (h *humanHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &humanHandler{w: h.w, emulated: h.emulated, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h *humanHandler) WithGroup(string) slog.Handler { return h }
