package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
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

// flagProblem rewrites the flag package's error with a suggestion.
func flagProblem(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	name, ok := strings.CutPrefix(msg, "flag provided but not defined: -")
	if !ok {
		return msg
	}
	name = strings.TrimPrefix(name, "-")
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if s := closestName(name, names); s != "" {
		return fmt.Sprintf("unknown flag --%s; did you mean --%s?", name, s)
	}
	return fmt.Sprintf("unknown flag --%s", name)
}

// flagList renders fs's flags, one a line, with their defaults.
func flagList(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
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
