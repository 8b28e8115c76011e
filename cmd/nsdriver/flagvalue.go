package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// How a config flag's text becomes its config value: checked as it is
// parsed, so that a wrong value is reported with the flag's own name.

type flagKind int

const (
	textFlag flagKind = iota
	boolFlag
	intFlag
	sizeFlag
)

// configValue is a config flag's flag.Value: the text given, and the
// value it means.
type configValue struct {
	kind  flagKind
	text  string
	value any
}

func (v *configValue) String() string { return v.text }

// IsBoolFlag lets --bare stand alone for --bare=true.
func (v *configValue) IsBoolFlag() bool { return v.kind == boolFlag }

func (v *configValue) Set(text string) error {
	switch v.kind {
	case boolFlag:
		b, err := strconv.ParseBool(text)
		if err != nil {
			return errors.New("want true or false")
		}
		v.value = b
	case intFlag:
		n, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
		if err != nil {
			return errors.New("want a whole number")
		}
		v.value = n
	case sizeFlag:
		n, err := parseSize(text)
		if err != nil {
			return err
		}
		v.value = n
	default:
		v.value = text
	}
	v.text = text
	return nil
}

// sizeUnits are the suffixes a size may carry, as GNU tools read them:
// K, KiB = 1024; KB = 1000; likewise M and G. Case does not matter.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
}

// parseSize reads a byte count: 1048576, 512KiB, 64MiB, 1G, 10MB.
func parseSize(text string) (int64, error) {
	t := strings.TrimSpace(text)
	i := len(t) - len(strings.TrimLeft(t, "0123456789"))
	n, err := strconv.ParseInt(t[:i], 10, 64)
	unit, ok := sizeUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if err != nil || !ok {
		return 0, errors.New("want a size: bytes, or a number with KiB, MiB or GiB (KB, MB, GB are powers of 1000)")
	}
	if n > (1<<63-1)/unit {
		return 0, fmt.Errorf("%s is too large", text)
	}
	return n * unit, nil
}
