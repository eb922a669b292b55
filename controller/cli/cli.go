// Package cli holds the controller's commands: `strata controller ...`
// (serve, projects, users, flavors; OpenStack mode's Glance image store and
// Nova driver), `strata datastore ...` (what trove-manage did), `strata
// image ...` (the local image store; main adds `publish` from builder/cli)
// and `strata instance ...` (the management view of every project's
// instances).
// Each command parses flags and calls the controller's packages; none
// holds logic of its own.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"strata/controller/imagestore/local"
	"strata/controller/registry"
	"strata/controller/server"
	"strata/controller/store"
)

// Commands returns the controller, datastore and image commands.
func Commands() []*cobra.Command {
	return []*cobra.Command{newControllerCommand(), newDatastoreCommand(), newImageCommand(), newInstanceCommand()}
}

// stateFlags are the flags every command that opens the state shares.
type stateFlags struct {
	dir string
	dsn string
}

func defaultStateDir() string {
	if d := os.Getenv("STRATA_STATE_DIR"); d != "" {
		return d
	}
	return "/var/lib/strata"
}

func (f *stateFlags) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.dir, "state-dir", defaultStateDir(), "the controller's state directory ($STRATA_STATE_DIR)")
	cmd.PersistentFlags().StringVar(&f.dsn, "db", "", "database: a postgres:// URL, or an SQLite file (default STATE_DIR/controller.db)")
}

func (f *stateFlags) open(ctx context.Context) (*store.DB, error) {
	return server.OpenState(ctx, f.dir, f.dsn)
}

// withDB runs fn on the controller's database, closed after.
func (f *stateFlags) withDB(ctx context.Context, fn func(*store.DB) error) error {
	db, err := f.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(db)
}

// withRegistry runs fn on the version registry of the controller's
// database, closed after.
func (f *stateFlags) withRegistry(ctx context.Context, fn func(*registry.Registry) error) error {
	return f.withDB(ctx, func(db *store.DB) error { return fn(f.registry(db)) })
}

func (f *stateFlags) images(db *store.DB) *local.Store {
	return &local.Store{DB: db, Dir: filepath.Join(f.dir, "images")}
}

func (f *stateFlags) registry(db *store.DB) *registry.Registry {
	return &registry.Registry{DB: db}
}

func table(w io.Writer, header string, rows [][]any) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		for i, v := range r {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, v)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
