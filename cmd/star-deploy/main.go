// Command star-deploy deploys applications to fleets of servers from a Starlark Deployfile.
// See README.md, or run star-deploy --help.
package main

import (
	"os"

	"github.com/star-deploy/star-deploy/internal/cli"
	"github.com/star-deploy/star-deploy/runtime/output"
)

func main() {
	os.Exit(run())
}

// run is the whole program: it runs star-deploy with the process's arguments and standard streams
// and returns the exit status. The end-to-end tests run the binary through it too.
func run() int {
	return cli.Main(os.Args[1:], cli.IO{
		Stdout:   os.Stdout,
		Stderr:   os.Stderr,
		Terminal: output.IsTerminal(os.Stdout),
		Color:    output.ColorEnabled(os.Stdout),
	})
}
