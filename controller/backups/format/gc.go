package format

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"strata/controller/objectstore"
)

// BackupPrefix is where a backup's objects live: root/id. Collect relies
// on this layout.
func BackupPrefix(root, id string) string { return root + "/" + id }

// CollectOptions tune Collect.
type CollectOptions struct {
	// MinAge spares objects modified more recently than this: a backup
	// that started after the caller took its list of live ids is not
	// collected under it. Zero means one hour.
	MinAge time.Duration
	// Now is the current time (time.Now if zero).
	Now time.Time
}

// Collected is what Collect did.
type Collected struct {
	// Removed are the objects deleted, by backup id.
	Removed map[string][]string
	// Spared counts objects of dead backups kept because they are newer
	// than MinAge.
	Spared int
}

// Collect removes the objects below root of every backup whose id is not
// in live: the segments of failed, aborted or deleted backups, and
// anything else stored under root/<id>/. Objects newer than MinAge are
// spared. The caller passes every backup it still knows, in any state
// (running ones included).
func Collect(ctx context.Context, store objectstore.Store, root string, live map[string]bool, opts CollectOptions) (Collected, error) {
	res := Collected{Removed: map[string][]string{}}
	if opts.MinAge == 0 {
		opts.MinAge = time.Hour
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	objs, err := store.List(ctx, root+"/")
	if err != nil {
		return res, fmt.Errorf("collect backups below %s: %w", root, err)
	}
	var errs []error
	for _, o := range objs {
		id, _, ok := strings.Cut(strings.TrimPrefix(o.Name, root+"/"), "/")
		if !ok || live[id] {
			continue // not in a backup's directory, or a live backup's
		}
		if opts.Now.Sub(o.Modified) < opts.MinAge {
			res.Spared++
			continue
		}
		if err := store.Delete(ctx, o.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Removed[id] = append(res.Removed[id], o.Name)
	}
	for _, names := range res.Removed {
		sort.Strings(names)
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("collect backups below %s: %w", root, err)
	}
	return res, nil
}
