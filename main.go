// Command strata builds database guest images from elements, publishes them,
// and runs the controller that manages the instances launched from them.
//
// main only wires the command tree; the work lives in builder/ and controller/.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Stamped by the Makefile (-ldflags -X).
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	root := &cobra.Command{
		Use:           "strata",
		Short:         "Build database guest images and run the instances launched from them",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version + " (" + commit + ")",
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "strata:", err)
		os.Exit(1)
	}
}
