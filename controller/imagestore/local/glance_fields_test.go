package local_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"strata/controller/imagestore"
)

// TestRegisterRecordsGlanceChecksumsAndTakesAnID: the Glance API of the
// embedded mode hands out an id before the bytes arrive and reports MD5
// and SHA-512 as Glance does.
func TestRegisterRecordsGlanceChecksumsAndTakesAnID(t *testing.T) {
	ctx := context.Background()
	s, dir := newStore(t)
	data, err := os.ReadFile(qcow2(t, dir, "in.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	const id = "0b5e7c1a-2f3d-4e5f-8a9b-0c1d2e3f4a5b"
	img, err := s.Register(ctx, bytes.NewReader(data), imagestore.RegisterOptions{ID: id, Name: "x", DiskFormat: "qcow2",
		Properties: map[string]string{"strata_sha256": "abc"}})
	if err != nil {
		t.Fatal(err)
	}
	m5, s512 := md5.Sum(data), sha512.Sum512(data)
	got, err := s.Get(ctx, id)
	if err != nil || img.ID != id || got.Properties[imagestore.PropertyChecksum] != hex.EncodeToString(m5[:]) ||
		got.Properties[imagestore.PropertyHashAlgo] != "sha512" || got.Properties[imagestore.PropertyHash] != hex.EncodeToString(s512[:]) ||
		got.Properties["strata_sha256"] != "abc" {
		t.Fatalf("image %+v, %v", got, err)
	}
	for _, bad := range []string{id, "UPPER-case-id", "short"} {
		_, err := s.Register(ctx, bytes.NewReader(data), imagestore.RegisterOptions{ID: bad, Name: "y", DiskFormat: "qcow2"})
		if !errors.Is(err, imagestore.ErrInvalid) {
			t.Errorf("id %q: %v", bad, err)
		}
	}
	if all, _ := s.List(ctx); len(all) != 1 {
		t.Fatalf("refused registrations left images: %d", len(all))
	}
}
