package main

import (
	"fmt"
	"io"
	"runtime"
)

func runVersion(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("version", "", stdout)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ephemera %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
