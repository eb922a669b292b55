// Command strata builds database guest images from elements, publishes them,
// and runs the controller that manages the instances launched from them.
//
// main only wires the command tree; the work lives in builder/ and controller/.
// It is also where those rooms meet besides agent/wire: it hands the
// builder's boot test the controller's agent endpoint.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"strata/builder/boottest"
	buildcli "strata/builder/cli"
	"strata/controller/agentendpoint"
	ctlcli "strata/controller/cli"
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
	root.AddCommand(buildcli.NewBuildCommand(version), buildcli.NewBootTestCommand(bootTestEndpoint), buildcli.NewCacheCommand())
	for _, c := range ctlcli.Commands() {
		if c.Name() == "image" {
			// One `strata image` group: the controller's store commands
			// plus publishing, which is the image pipeline's.
			c.AddCommand(buildcli.NewPublishCommand())
		}
		root.AddCommand(c)
	}

	// SIGINT/SIGTERM cancel the context: a build unwinds (hooks stopped,
	// nothing left mounted, no partial output) and exits 130.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Called as disk-image-create (a symlink to strata), run `strata build`
	// with the same arguments, so DIB command lines run unchanged.
	if filepath.Base(os.Args[0]) == "disk-image-create" {
		root.SetArgs(append([]string{"build"}, os.Args[1:]...))
	}
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "strata:", err)
		if errors.Is(ctx.Err(), context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

// bootTestEndpoint gives `strata boot-test --agent` the controller's agent
// endpoint over an in-memory store.
func bootTestEndpoint(hostKey ssh.Signer, log *slog.Logger) (boottest.Endpoint, error) {
	ep, err := agentendpoint.NewMemEndpoint(hostKey, log)
	if err != nil {
		return nil, err
	}
	return ep, nil
}
