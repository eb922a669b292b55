package backups

import (
	"strings"
	"testing"

	"strata/controller/registry"
)

func TestCompatibleVersions(t *testing.T) {
	v := func(id, ds, manager, name string) registry.Version {
		return registry.Version{ID: id, DatastoreID: ds, DatastoreName: ds, Manager: manager, Name: name}
	}
	maria1011 := v("a", "mariadb", "mariadb", "10.11")
	for _, c := range []struct {
		src, dst registry.Version
		want     string // "" = compatible
	}{
		{maria1011, maria1011, ""},
		{maria1011, v("b", "mariadb", "mariadb", "10.11.6"), ""},
		{maria1011, v("b", "mariadb", "mariadb", "11.4"), "same major version"},
		{v("b", "mariadb", "mariadb", "10.11.6"), maria1011, "newer than"},
		{v("p", "postgresql", "postgresql", "15"), v("q", "postgresql", "postgresql", "15.4"), ""},
		{v("p", "postgresql", "postgresql", "15"), v("q", "postgresql", "postgresql", "16"), "same major version"},
		{v("r", "redis", "redis", "7"), v("s", "redis", "redis", "7.2"), ""},
		{v("r", "redis", "redis", "7.2"), v("s", "redis", "redis", "7"), "newer than"},
		{maria1011, v("p", "postgresql", "postgresql", "15"), "not postgresql"},
	} {
		err := compatible(c.src, c.dst)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s %s → %s %s: %v, want %q", c.src.DatastoreName, c.src.Name, c.dst.DatastoreName, c.dst.Name, err, c.want)
		}
	}
}
