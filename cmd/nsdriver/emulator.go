package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/swamp-club/nsdriver/nsemu"
)

// cmdEmulator serves nsemu in the foreground until interrupted.
func cmdEmulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nsdriver emulator", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	token := fs.String("token", "", "bearer token to require (default: random)")
	boot := fs.Duration("boot", 0, "instance boot time")
	rtt := fs.Duration("rtt", 0, "latency added when a call starts")
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Sprintf("%v (flags: --listen ADDR --token T --boot D --rtt D)", err)}
	}
	emu, err := nsemu.Start(nsemu.Options{Listen: *listen, Token: *token, BootTime: *boot, RTT: *rtt, DefaultPath: emulatorPath()})
	if err != nil {
		return err
	}
	defer emu.Close()
	fmt.Fprintf(stdout, "NSC_ENDPOINT=%s\nNAMESPACE_TOKEN=%s\n", emu.URL(), emu.Token())
	fmt.Fprintln(stderr, "nsdriver: emulator serving; commands run on this machine, not in a VM. Ctrl-C stops it.")
	<-ctx.Done()
	return nil
}
