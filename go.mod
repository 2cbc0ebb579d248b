module github.com/star-deploy/star-deploy

go 1.26.8

require (
	al.essio.dev/pkg/shellescape v1.6.1
	github.com/mattn/go-isatty v0.0.24
	github.com/spf13/pflag v1.0.10
	go.starlark.net v0.0.0-20260908191801-89a6a09411d5
)

require golang.org/x/sys v0.49.0 // indirect
