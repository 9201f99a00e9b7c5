// Command ephemera runs an Ephemera node and talks to running ones.
package main

import "os"

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}
