package register

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"strata/controller/imagestore"
	"strata/controller/imagestore/local"
	"strata/controller/registry"
	"strata/controller/server"
)

// defaultBootTimeout is `strata datastore version update`'s default.
const defaultBootTimeout = 15 * time.Minute

// registerLocal copies image into the local image store of the controller
// whose state is stateDir (checked against NAME.qcow2.sha256) and makes it
// the recipe's datastore version, loading the version's validation rules
// if the recipe names them: `strata image register` followed by `strata
// datastore update` and `strata datastore version update --from-recipe`.
func registerLocal(ctx context.Context, stateDir, recipePath, image string, out io.Writer) (*Result, error) {
	start := time.Now()
	r, err := loadRecipe(recipePath)
	if err != nil {
		return nil, err
	}
	d := r.Datastore
	want, err := checksum(image)
	if err != nil {
		return nil, err
	}
	db, err := server.OpenState(ctx, stateDir, "")
	if err != nil {
		return nil, fmt.Errorf("controller state %s: %w", stateDir, err)
	}
	defer db.Close()
	f, err := os.Open(image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	store := &local.Store{DB: db, Dir: filepath.Join(stateDir, "images")}
	img, err := store.Register(ctx, f, imagestore.RegisterOptions{
		Name: strings.TrimSuffix(filepath.Base(image), ".qcow2"), DiskFormat: "qcow2", SHA256: want,
		Properties: map[string]string{"datastore": d.Name, "datastore_version": d.Version},
	})
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	fmt.Fprintf(out, "image %s stored as %s (%.1f MiB, sha256 %s)\n", image, img.ID, float64(img.SizeBytes)/(1<<20), img.SHA256)

	reg := &registry.Registry{DB: db}
	if _, err := reg.UpdateDatastore(ctx, d.Name, ""); err != nil {
		return nil, fmt.Errorf("datastore %s: %w", d.Name, err)
	}
	_, findErr := reg.FindVersion(ctx, d.Name, d.Version)
	created := findErr != nil
	boot := time.Duration(d.BootTimeout) * time.Second
	if boot == 0 {
		boot = defaultBootTimeout
	}
	v, err := reg.UpdateVersion(ctx, registry.VersionSpec{
		Datastore: d.Name, Name: d.Version, Manager: d.Manager, ImageID: img.ID,
		Packages: d.Packages, Active: true, Port: d.Port, BootTimeout: boot,
	})
	if err != nil {
		return nil, fmt.Errorf("datastore version %s %s: %w", d.Name, d.Version, err)
	}
	fmt.Fprintf(out, "datastore version %s %s (%s): manager %s, image %s\n", v.DatastoreName, v.Name, v.ID, v.Manager, v.ImageID)
	if d.Rules != "" {
		data, err := os.ReadFile(d.Rules)
		if err != nil {
			return nil, fmt.Errorf("recipe %s: rules: %w", recipePath, err)
		}
		if v, err = reg.LoadRules(ctx, d.Name, d.Version, data, d.Rules); err != nil {
			return nil, fmt.Errorf("validation rules %s: %w", d.Rules, err)
		}
		fmt.Fprintf(out, "%d configuration parameters loaded from %s\n", len(v.Rules), d.Rules)
	}
	return &Result{ImageID: img.ID, Uploaded: true, VersionID: v.ID, VersionCreated: created, Seconds: time.Since(start).Seconds()}, nil
}

// checksum reads the digest strata build wrote to IMAGE.sha256.
func checksum(image string) (string, error) {
	b, err := os.ReadFile(image + ".sha256")
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "", errors.New(image + ".sha256 is empty")
	}
	return f[0], nil
}
