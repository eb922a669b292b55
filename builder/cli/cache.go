package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"strata/builder/cache"
	"strata/builder/recipe"
)

// NewCacheCommand returns `strata cache`.
func NewCacheCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "cache", Short: "Manage the image cache"}
	var dir string
	var age time.Duration
	var maxSize string
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Delete cached trees and finished images not used recently, or beyond a size (downloaded packages stay)",
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
			if cmd.Flags().Changed("max-size") {
				n, err := parseCacheMax(maxSize)
				if err != nil {
					return err
				}
				if n > 0 {
					freed += c.Trim(n, time.Now())
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "freed %.1f MiB from %s\n", float64(freed)/(1<<20), c.Dir)
			return nil
		},
	}
	prune.Flags().StringVar(&dir, "image-cache", defaultCache(), "the cache directory")
	prune.Flags().DurationVar(&age, "older-than", 7*24*time.Hour, "delete entries unused for longer than this")
	prune.Flags().StringVar(&maxSize, "max-size", "", "also delete the least recently used entries until the rest fit in this (30GiB, 500M)")
	cmd.AddCommand(prune)
	return cmd
}

// defaultCacheMax bounds the cache a build leaves behind: every build adds
// trees and images, and an unbounded cache fills its disk.
const defaultCacheMax = "30GiB"

// parseCacheMax reads --cache-max-size / --max-size: a size, or 0 for none.
func parseCacheMax(s string) (int64, error) {
	if strings.TrimSpace(s) == "0" {
		return 0, nil
	}
	n, err := recipe.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("cache size: %w", err)
	}
	return n, nil
}
