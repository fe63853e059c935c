// Command paddock runs the Paddock platform and is its CLI.
package main

import (
	"context"
	"os"

	"paddock.dev/paddock/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
