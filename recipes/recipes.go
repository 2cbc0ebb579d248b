// Package recipes holds star-deploy's built-in recipe libraries, written in Starlark and embedded
// in the binary. A Deployfile loads them as load("@star//NAME.star", ...).
package recipes

import "embed"

// FS holds the libraries, by file name.
//
//go:embed *.star
var FS embed.FS
