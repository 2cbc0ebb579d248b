// Command star-deploy deploys applications to fleets of servers from a Starlark Deployfile.
// See README.md, or run star-deploy --help.
package main

import (
	"os"

	"github.com/star-deploy/star-deploy/internal/cli"
	"github.com/star-deploy/star-deploy/runtime/output"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.IO{
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Color:  output.ColorEnabled(os.Stdout),
	}))
}
