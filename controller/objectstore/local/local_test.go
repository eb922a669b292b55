package local

import (
	"os"
	"path/filepath"
	"testing"

	"strata/controller/objectstore"
	"strata/controller/objectstore/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) objectstore.Store {
			s, err := New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Parts: func(t *testing.T, s objectstore.Store) []string {
			entries, err := os.ReadDir(s.(*Store).parts())
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, e := range entries {
				out = append(out, filepath.Join("parts", e.Name()))
			}
			return out
		},
	})
}

// The file system cannot hold "a" and "a/b" at once: the second Put is
// refused as an invalid name, and the first object stays intact.
func TestObjectAndDirectoryClash(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := s.Put(ctx, "a/b", storetest.Data(1, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "a", storetest.Data(1, 10)); err == nil {
		t.Fatal("Put(a) over the directory of a/b succeeded")
	}
	if o, err := s.Stat(ctx, "a/b"); err != nil || o.Size != 10 {
		t.Fatalf("a/b after the refused Put: %+v, %v", o, err)
	}
	if _, err := s.Stat(ctx, "a"); err == nil {
		t.Fatal("Stat(a) found the directory as an object")
	}
}
