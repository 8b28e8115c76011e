package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/swamp-club/nsdriver"
)

// nsdriver exec: one ExecutionRequest in, one ExecutionResult out.

const execUsage = `Usage: nsdriver exec [flags] [FILE|-] [flags]

Runs one ExecutionRequest (JSON, from FILE or stdin) in a fresh Namespace
VM and prints one ExecutionResult JSON document on stdout, in every case.
stderr carries the workload's log lines as they arrive. Exit code: 0
success, 1 an error result, 2 unreadable input or a usage error.

Flags:
`

func cmdExec(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	c := newCommon("exec", execUsage, nil)
	progress := c.fs.Bool("progress", false, "driver progress on stderr")
	writeResult := func(res nsdriver.ExecutionResult) {
		// Streamed: a large output's base64 is never built whole in memory.
		bw := bufio.NewWriterSize(stdout, 64<<10)
		_ = res.WriteJSON(bw)
		_ = bw.Flush()
	}
	failed := func(code int, msg string) (int, error) {
		writeResult(nsdriver.ExecutionResult{Status: nsdriver.ResultError, Error: msg, Outputs: []nsdriver.DriverOutput{}, Logs: []string{}})
		fmt.Fprintf(stderr, "nsdriver: %s\n", msg)
		return code, nil
	}
	done, files, err := c.parseInterspersed(args, stdout)
	if done {
		return exitOK, nil
	}
	if err != nil {
		var ue usageError
		errors.As(err, &ue)
		return failed(exitUsage, ue.msg)
	}
	if len(files) > 1 {
		return failed(exitUsage, fmt.Sprintf("exec takes one request file, got %d: %s", len(files), strings.Join(files, " ")))
	}
	cfg, err := c.config()
	if err != nil {
		return failed(exitUsage, err.Error())
	}
	input, name := stdin, "stdin"
	if len(files) == 1 && files[0] != "-" {
		f, err := os.Open(files[0])
		if err != nil {
			return failed(exitUsage, fmt.Sprintf("reading the request: %v", err))
		}
		defer f.Close()
		input, name = f, files[0]
	}
	data, err := io.ReadAll(input)
	if err != nil {
		return failed(exitUsage, fmt.Sprintf("reading the request from %s: %v", name, err))
	}
	req, err := nsdriver.DecodeExecutionRequest(bytes.NewReader(data))
	if err != nil {
		return failed(exitUsage, fmt.Sprintf("%v (from %s); send one ExecutionRequest JSON document", err, name))
	}
	if strings.TrimSpace(req.MethodName) == "" {
		return failed(exitUsage, fmt.Sprintf("the request (from %s) has no methodName: it names the method to run and, without resourceSpecs, the output", name))
	}
	for _, w := range nsdriver.ExecutionRequestWarnings(data) {
		c.notice(stderr, w)
	}
	tgt, err := c.connect(&cfg, false, stderr, "exec")
	if err != nil {
		return failed(exitUsage, nsdriver.UserMessage(err))
	}
	defer tgt.close()
	d, err := nsdriver.New(cfg, nsdriver.WithClientOptions(nsdriver.WithTokenSource(tgt.token)), nsdriver.WithLogger(c.logger(stderr, *progress, tgt)))
	if err != nil {
		return failed(exitUsage, nsdriver.UserMessage(err))
	}
	tgt.use(d)
	defer shutdown(d)
	// Streamed: a large output is neither joined nor encoded whole in memory.
	bw := bufio.NewWriterSize(stdout, 64<<10)
	res, _ := d.ExecuteJSON(ctx, req, nsdriver.Callbacks{OnLog: c.workloadLine(stderr)}, bw)
	_ = bw.Flush()
	if res.Status != nsdriver.ResultSuccess {
		return exitResultError, nil
	}
	return exitOK, nil
}
