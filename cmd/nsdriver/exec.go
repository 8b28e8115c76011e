package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/swamp-club/nsdriver"
)

// nsdriver exec: one ExecutionRequest in, one ExecutionResult out.

func cmdExec(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	c := newCommon("exec")
	progress := c.fs.Bool("progress", false, "driver progress on stderr")
	writeResult := func(res nsdriver.ExecutionResult) {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(res)
	}
	failed := func(code int, msg string) (int, error) {
		writeResult(nsdriver.ExecutionResult{Status: nsdriver.ResultError, Error: msg, Outputs: []nsdriver.DriverOutput{}, Logs: []string{}})
		fmt.Fprintf(stderr, "nsdriver: %s\n", msg)
		return code, nil
	}
	if err := c.parse(args); err != nil {
		var ue usageError
		errors.As(err, &ue)
		return failed(exitUsage, ue.msg)
	}
	cfg, err := c.config()
	if err != nil {
		return failed(exitUsage, err.Error())
	}
	req, err := nsdriver.DecodeExecutionRequest(stdin)
	if err != nil {
		return failed(exitUsage, err.Error()+"; send one ExecutionRequest JSON document on stdin")
	}
	tgt, err := c.connect(&cfg, false, stderr, "exec")
	if err != nil {
		return failed(exitUsage, nsdriver.UserMessage(err))
	}
	defer tgt.close()
	d, err := nsdriver.New(cfg, nsdriver.WithLogger(c.logger(stderr, *progress)))
	if err != nil {
		return failed(exitUsage, nsdriver.UserMessage(err))
	}
	defer shutdown(d)
	res := d.Execute(ctx, req, nsdriver.Callbacks{OnLog: c.workloadLine(stderr)})
	writeResult(res)
	if res.Status != nsdriver.ResultSuccess {
		return exitResultError, nil
	}
	return exitOK, nil
}
