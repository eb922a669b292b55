package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"strata/controller/imagestore"
)

func newImageCommand() *cobra.Command {
	var sf stateFlags
	cmd := &cobra.Command{Use: "image", Short: "Images: the controller's local store, and publishing to Glance and as datastore versions"}
	sf.register(cmd)

	var name, format string
	register := &cobra.Command{
		Use:   "register FILE",
		Short: "Copy an image into the store, recording and checking its SHA-256",
		Long: `Copy FILE into the image store. Its SHA-256 is recorded; if FILE.sha256
exists (as strata build writes it) the copy must match it. An image that is
not a standalone image of its format is refused before it is stored: a
backing file, an external data file (either could name any file of this
host), encryption, or a format other than the declared one (checked in the
header and with qemu-img info).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			if name == "" {
				name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
			}
			if format == "" {
				format = strings.TrimPrefix(filepath.Ext(path), ".")
				if format == "img" {
					format = "raw"
				}
			}
			want := ""
			if data, err := os.ReadFile(path + ".sha256"); err == nil {
				if fields := strings.Fields(string(data)); len(fields) > 0 {
					want = fields[0]
				}
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			img, err := sf.images(db).Register(cmd.Context(), f, imagestore.RegisterOptions{Name: name, DiskFormat: format, SHA256: want})
			if err != nil {
				return err
			}
			checked := "recorded"
			if want != "" {
				checked = "matches " + filepath.Base(path) + ".sha256"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "registered %s as %s (%s, %.1f MiB, sha256 %s %s)\n", path, img.Name, img.DiskFormat,
				float64(img.SizeBytes)/(1<<20), img.SHA256, checked)
			fmt.Fprintln(cmd.OutOrStdout(), img.ID)
			return nil
		},
	}
	register.Flags().StringVar(&name, "name", "", "image name (default: the file name without extension)")
	register.Flags().StringVar(&format, "format", "", "qcow2 or raw (default: from the file extension)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the stored images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			imgs, err := sf.images(db).List(cmd.Context())
			if err != nil {
				return err
			}
			var rows [][]any
			for _, i := range imgs {
				rows = append(rows, []any{i.ID, i.Name, i.DiskFormat, fmt.Sprintf("%.1f", float64(i.SizeBytes)/(1<<20)), i.SHA256[:16], i.CreatedAt.Format("2006-01-02 15:04")})
			}
			table(cmd.OutOrStdout(), "ID\tNAME\tFORMAT\tMIB\tSHA256\tCREATED", rows)
			return nil
		},
	}
	verify := &cobra.Command{
		Use:   "verify IMAGE",
		Short: "Re-hash a stored image and compare it with the recorded checksum",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			if err := sf.images(db).Verify(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ok")
			return nil
		},
	}
	del := &cobra.Command{
		Use:   "delete IMAGE",
		Short: "Delete a stored image no datastore version uses",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			store := sf.images(db)
			img, err := store.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			users, err := sf.registry(db).VersionsUsingImage(cmd.Context(), img.ID)
			if err != nil {
				return err
			}
			if len(users) > 0 {
				return fmt.Errorf("image %s is used by datastore version %s %s; point it at another image first", img.ID, users[0].DatastoreName, users[0].Name)
			}
			return store.Delete(cmd.Context(), img.ID)
		},
	}
	cmd.AddCommand(register, list, verify, del)
	return cmd
}
