//go:build openstack

package glance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"strata/ci/openstack/ostest"
	"strata/controller/imagestore"
	"strata/controller/imagestore/glance"
)

func TestMain(m *testing.M) { os.Exit(ostest.Main(m)) }

// TestGlanceStoreAgainstRealGlance registers, finds, verifies and deletes
// images in Debian's glance-api; a wrong checksum deletes the upload.
func TestGlanceStoreAgainstRealGlance(t *testing.T) {
	s := ostest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ao, eo, _, err := clouds.Parse(clouds.WithLocations(s.CloudsYAML), clouds.WithCloudName(ostest.Cloud))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := config.NewProviderClient(ctx, ao)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := openstack.NewImageV2(pc, eo)
	if err != nil {
		t.Fatal(err)
	}
	st := &glance.Store{Client: ic, Poll: 200 * time.Millisecond}

	p := filepath.Join(t.TempDir(), "img.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "8M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img (ci/deps.sh build): %v: %s", err, out)
	}
	data, _ := os.ReadFile(p)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])

	img, err := st.Register(ctx, bytes.NewReader(data), imagestore.RegisterOptions{Name: "store-test", DiskFormat: "qcow2", SHA256: want,
		Properties: map[string]string{"purpose": "test"}})
	if err != nil {
		t.Fatal(err)
	}
	if img.SHA256 != want || img.Location != img.ID || img.SizeBytes != int64(len(data)) || img.Properties["purpose"] != "test" {
		t.Fatalf("registered: %+v", img)
	}
	got, err := st.Get(ctx, img.ID)
	if err != nil || got.ID != img.ID || got.SHA256 != want {
		t.Fatalf("get: %+v, %v", got, err)
	}
	if byName, err := st.Get(ctx, "store-test"); err != nil || byName.ID != img.ID {
		t.Fatalf("get by name: %+v, %v", byName, err)
	}
	if err := st.Verify(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	// Without an expected checksum, the store records the one it computed.
	img2, err := st.Register(ctx, bytes.NewReader(data), imagestore.RegisterOptions{Name: "store-test-2", DiskFormat: "qcow2"})
	if err != nil || img2.SHA256 != want {
		t.Fatalf("register without a checksum: %+v, %v", img2, err)
	}
	all, err := st.List(ctx)
	if err != nil || len(all) < 2 {
		t.Fatalf("list: %d, %v", len(all), err)
	}
	before := len(all)
	_, err = st.Register(ctx, bytes.NewReader(data), imagestore.RegisterOptions{Name: "store-test-bad", DiskFormat: "qcow2", SHA256: hex.EncodeToString(make([]byte, 32))})
	if !errors.Is(err, imagestore.ErrChecksumMismatch) {
		t.Fatalf("a wrong checksum: %v", err)
	}
	if all, _ := st.List(ctx); len(all) != before {
		t.Fatalf("the mismatched upload was left in Glance (%d images, were %d)", len(all), before)
	}
	for _, id := range []string{img.ID, img2.ID} {
		if err := st.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Get(ctx, img.ID); !errors.Is(err, imagestore.ErrNotFound) {
		t.Fatalf("deleted image: %v", err)
	}
}

// TestGlanceStoreRefusesHostileImages: Register refuses an image with an
// external data file (CVE-2024-32498 class) or a backing file before
// anything reaches Glance, and Verify — which runs before every boot on
// Nova — refuses one that someone else uploaded to Glance directly.
func TestGlanceStoreRefusesHostileImages(t *testing.T) {
	s := ostest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ao, eo, _, err := clouds.Parse(clouds.WithLocations(s.CloudsYAML), clouds.WithCloudName(ostest.Cloud))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := config.NewProviderClient(ctx, ao)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := openstack.NewImageV2(pc, eo)
	if err != nil {
		t.Fatal(err)
	}
	st := &glance.Store{Client: ic, Poll: 200 * time.Millisecond}
	// qemu-img creates (and truncates) the external data file it is given:
	// a file of the test's own, never a host file.
	tmp := t.TempDir()
	p := filepath.Join(tmp, "evil.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(tmp, "outside.data")+",data_file_raw=on", p, "8M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img (ci/deps.sh build): %v: %s", err, out)
	}
	data, _ := os.ReadFile(p)
	before, _ := st.List(ctx)
	if _, err := st.Register(ctx, bytes.NewReader(data), imagestore.RegisterOptions{Name: "store-test-evil", DiskFormat: "qcow2"}); !errors.Is(err, imagestore.ErrInvalid) ||
		!strings.Contains(err.Error(), "external data file") {
		t.Fatalf("Register of a hostile image: %v", err)
	}
	if after, _ := st.List(ctx); len(after) != len(before) {
		t.Fatalf("the refused image reached Glance (%d images, were %d)", len(after), len(before))
	}

	// Uploaded by someone else, straight to Glance, with the properties
	// strata records: Verify refuses to let it boot.
	sum := sha256.Sum256(data)
	created, err := images.Create(ctx, ic, images.CreateOpts{Name: "store-test-evil-direct", DiskFormat: "qcow2", ContainerFormat: "bare",
		Properties: map[string]string{glance.PropertySHA256: hex.EncodeToString(sum[:])}}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	defer images.Delete(context.WithoutCancel(ctx), ic, created.ID)
	if err := imagedata.Upload(ctx, ic, created.ID, bytes.NewReader(data)).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		img, err := images.Get(ctx, ic, created.ID).Extract()
		if err == nil && img.Status == images.ImageStatusActive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the directly uploaded image never became active: %+v %v", img, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := st.Verify(ctx, created.ID); !errors.Is(err, imagestore.ErrInvalid) || !strings.Contains(err.Error(), "external data file") {
		t.Fatalf("Verify of a hostile image in Glance: %v", err)
	}
}
