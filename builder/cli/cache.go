package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"strata/builder/cache"
)

// NewCacheCommand returns `strata cache`.
func NewCacheCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "cache", Short: "Manage the image cache"}
	var dir string
	var age time.Duration
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Delete cached trees and finished images not used recently (downloaded packages stay)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cache.Open(dir)
			if err != nil {
				return err
			}
			freed, err := c.Prune(age)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "freed %.1f MiB from %s\n", float64(freed)/(1<<20), c.Dir)
			return nil
		},
	}
	prune.Flags().StringVar(&dir, "image-cache", defaultCache(), "the cache directory")
	prune.Flags().DurationVar(&age, "older-than", 7*24*time.Hour, "delete entries unused for longer than this")
	cmd.AddCommand(prune)
	return cmd
}
