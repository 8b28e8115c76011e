package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/swamp-club/nsdriver"
)

// Help and flag errors, the same for every subcommand: -h/--help prints the
// usage to stdout (exit 0); an unknown flag says which known one was
// probably meant (exit 2).

// parseFlags parses args into fs. On -h/--help it prints head and the
// flags to stdout and reports done.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer, head string) (done bool, err error) {
	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, head+flagList(fs))
		return true, nil
	case err != nil:
		return false, usageError{flagProblem(fs, err) + "\n\n" + head + flagList(fs)}
	}
	return false, nil
}

// flagErrors match the flag package's messages, which speak of "-flag".
var (
	invalidValue = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-(\S+): (.*)$`)
	needsValue   = regexp.MustCompile(`^flag needs an argument: -(\S+)$`)
)

// flagProblem rewrites the flag package's error in the CLI's words
// (--flag), with a suggestion for an unknown flag.
func flagProblem(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	if m := invalidValue.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("--%s %s: %s", m[2], m[1], m[3])
	}
	if m := needsValue.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("--%s needs a value", m[1])
	}
	name, ok := strings.CutPrefix(msg, "flag provided but not defined: -")
	if !ok {
		return msg
	}
	name = strings.TrimPrefix(name, "-")
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if s := nsdriver.ClosestName(name, names); s != "" {
		return fmt.Sprintf("unknown flag %s; did you mean %s?", dashed(name), dashed(s))
	}
	return fmt.Sprintf("unknown flag %s", dashed(name))
}

// dashed is a flag as people type it: -i, --quiet.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// flagList renders fs's flags, one a line, with their defaults.
func flagList(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		left := dashed(f.Name)
		if name != "" {
			left += " " + name
		}
		fmt.Fprintf(&b, "  %-26s %s", left, usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		b.WriteByte('\n')
	})
	return b.String()
}
