package local_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"strata/controller/imagestore"
	"strata/controller/imagestore/local"
	"strata/controller/store/storetest"
)

func qcow2(t *testing.T, dir, name string, extra ...string) string {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not found: install qemu-utils with `ci/deps.sh build` (or `make test`)")
	}
	p := filepath.Join(dir, name)
	args := append([]string{"create", "-q", "-f", "qcow2"}, extra...)
	args = append(args, p, "16M")
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	return p
}

func sum(t *testing.T, p string) string {
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

func newStore(t *testing.T) (*local.Store, string) {
	dir := t.TempDir()
	return &local.Store{DB: storetest.SQLite(t), Dir: filepath.Join(dir, "images")}, dir
}

func TestRegisterCopiesChecksumsAndVerifies(t *testing.T) {
	ctx := context.Background()
	s, dir := newStore(t)
	src := qcow2(t, dir, "in.qcow2")
	f, _ := os.Open(src)
	defer f.Close()
	img, err := s.Register(ctx, f, imagestore.RegisterOptions{Name: "mariadb-10.11", DiskFormat: "qcow2", SHA256: sum(t, src)})
	if err != nil {
		t.Fatal(err)
	}
	if img.SHA256 != sum(t, src) || img.Location == src || filepath.Dir(img.Location) != s.Dir {
		t.Fatalf("image = %+v", img)
	}
	st, err := os.Stat(img.Location)
	if err != nil || st.Mode().Perm() != 0o444 {
		t.Fatalf("stored file mode %v, %v: want read-only", st.Mode(), err)
	}
	if err := s.Verify(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "mariadb-10.11"); err != nil || got.ID != img.ID {
		t.Fatalf("get by name = %+v, %v", got, err)
	}
	// Someone changes the stored bytes: Verify says so.
	os.Chmod(img.Location, 0o644)
	fh, _ := os.OpenFile(img.Location, os.O_WRONLY|os.O_APPEND, 0)
	fh.Write([]byte("tampered"))
	fh.Close()
	if err := s.Verify(ctx, img.ID); !errors.Is(err, imagestore.ErrChecksumMismatch) {
		t.Fatalf("verify after tampering: %v", err)
	}
	if err := s.Delete(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img.Location); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("delete left the file")
	}
	if _, err := s.Get(ctx, img.ID); !errors.Is(err, imagestore.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestRegisterRefusesBadImagesAndKeepsNothing(t *testing.T) {
	ctx := context.Background()
	s, dir := newStore(t)
	good := qcow2(t, dir, "good.qcow2")
	backed := qcow2(t, dir, "backed.qcow2", "-b", good, "-F", "qcow2")
	// The CVE-2024-32498 class: the image's data is a file of this host.
	victim := filepath.Join(dir, "victim")
	dataFile := qcow2(t, dir, "data-file.qcow2", "-o", "data_file="+victim+",data_file_raw=on")
	cases := map[string]struct {
		file string
		opts imagestore.RegisterOptions
		want error
	}{
		"wrong checksum":   {good, imagestore.RegisterOptions{Name: "a", DiskFormat: "qcow2", SHA256: sumOf("other")}, imagestore.ErrChecksumMismatch},
		"backing file":     {backed, imagestore.RegisterOptions{Name: "b", DiskFormat: "qcow2"}, imagestore.ErrInvalid},
		"data file":        {dataFile, imagestore.RegisterOptions{Name: "g", DiskFormat: "qcow2"}, imagestore.ErrInvalid},
		"data file as raw": {dataFile, imagestore.RegisterOptions{Name: "h", DiskFormat: "raw"}, imagestore.ErrInvalid},
		"qcow2 as raw":     {good, imagestore.RegisterOptions{Name: "c", DiskFormat: "raw"}, imagestore.ErrInvalid},
		"unknown format":   {good, imagestore.RegisterOptions{Name: "d", DiskFormat: "vhd"}, imagestore.ErrInvalid},
		"bad name":         {good, imagestore.RegisterOptions{Name: "../x", DiskFormat: "qcow2"}, imagestore.ErrInvalid},
		"malformed sha256": {good, imagestore.RegisterOptions{Name: "e", DiskFormat: "qcow2", SHA256: "abc"}, imagestore.ErrInvalid},
	}
	for name, c := range cases {
		f, _ := os.Open(c.file)
		_, err := s.Register(ctx, f, c.opts)
		f.Close()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// Raw bytes that are not a qcow2, declared qcow2.
	if _, err := s.Register(ctx, bytes.NewReader(make([]byte, 4096)), imagestore.RegisterOptions{Name: "f", DiskFormat: "qcow2"}); !errors.Is(err, imagestore.ErrInvalid) {
		t.Errorf("raw as qcow2: %v", err)
	}
	imgs, _ := s.List(ctx)
	entries, _ := os.ReadDir(s.Dir)
	if len(imgs) != 0 || len(entries) != 0 {
		t.Fatalf("rejected registrations left %d records and %d files", len(imgs), len(entries))
	}
}

func sumOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
