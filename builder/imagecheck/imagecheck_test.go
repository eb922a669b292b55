package imagecheck_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"strata/builder/imagecheck"
)

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %s (install qemu-utils: ci/deps.sh build): %v: %s", strings.Join(args, " "), err, out)
	}
}

// hostileDataFile makes a qcow2 whose data lives in victim, a file of this
// host, and writes secret into victim (qemu-img create empties it).
func hostileDataFile(t *testing.T, dir, victim, secret string, raw bool) string {
	img := filepath.Join(dir, "evil.qcow2")
	opt := "data_file=" + victim
	if raw {
		opt += ",data_file_raw=on"
	}
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", opt, img, "1M")
	if err := os.WriteFile(victim, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	return img
}

// The attack this package exists for, shown with the real qemu-img: an
// image naming a host file as its external data file, opened through an
// overlay as the local driver opens every image, reads that host file's
// bytes.
func TestAnExternalDataFileReadsTheHostsBytesThroughAnOverlay(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "shadow")
	secret := "root:$y$j9T$not-yours:19000:0:99999:7:::\n"
	img := hostileDataFile(t, dir, victim, secret, true)
	overlay := filepath.Join(dir, "overlay.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", img, overlay)
	out := filepath.Join(dir, "guest-sees.raw")
	qemuImg(t, "convert", "-O", "raw", overlay, out)
	b, _ := os.ReadFile(out)
	if !bytes.HasPrefix(b, []byte(secret)) {
		t.Fatalf("reading through the overlay gave %q, not the host file's bytes: the attack did not reproduce", b[:min(len(b), 60)])
	}
	_, err := imagecheck.File(context.Background(), img, "qcow2", imagecheck.Options{})
	if !errors.Is(err, imagecheck.ErrRefused) || !strings.Contains(err.Error(), "external data file") {
		t.Fatalf("File: %v, want a refusal naming the external data file", err)
	}
}

func TestFileAcceptsStandaloneImagesAndRefusesHostileOnes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", good, "16M")
	raw := filepath.Join(dir, "good.raw")
	qemuImg(t, "create", "-q", "-f", "raw", raw, "8M")
	for _, c := range []struct{ path, format string }{{good, "qcow2"}, {raw, "raw"}} {
		info, err := imagecheck.File(context.Background(), c.path, c.format, imagecheck.Options{})
		if err != nil || info.Format != c.format || info.VirtualSize <= 0 {
			t.Errorf("%s as %s: %+v, %v", c.path, c.format, info, err)
		}
	}

	backing := filepath.Join(dir, "backing.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", good, backing)
	dataFile := hostileDataFile(t, t.TempDir(), filepath.Join(dir, "victim"), "secret", false)
	dataFileRaw := hostileDataFile(t, t.TempDir(), filepath.Join(dir, "victim2"), "secret", true)
	vmdk := filepath.Join(dir, "disk.vmdk")
	qemuImg(t, "create", "-q", "-f", "vmdk", vmdk, "1M")
	descriptor := filepath.Join(dir, "descriptor.raw")
	// The extent it names is a file of the test's own: never a host file.
	os.WriteFile(descriptor, []byte("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \""+filepath.Join(dir, "extent")+"\" 0\n"), 0o644)
	// Encrypted (crypt method 1, qemu's old AES; LUKS is 2): made by hand,
	// as qemu-img takes seconds to derive a LUKS key.
	encrypted := filepath.Join(dir, "aes.qcow2")
	b, _ := os.ReadFile(good)
	binary.BigEndian.PutUint32(b[32:], 1)
	os.WriteFile(encrypted, b, 0o644)
	// The data-file bit alone, without the extension naming the file.
	bitOnly := filepath.Join(dir, "bit.qcow2")
	b, _ = os.ReadFile(good)
	binary.BigEndian.PutUint64(b[72:], binary.BigEndian.Uint64(b[72:])|1<<2)
	os.WriteFile(bitOnly, b, 0o644)
	unknownBit := filepath.Join(dir, "unknown.qcow2")
	b, _ = os.ReadFile(good)
	binary.BigEndian.PutUint64(b[72:], binary.BigEndian.Uint64(b[72:])|1<<40)
	os.WriteFile(unknownBit, b, 0o644)

	for name, c := range map[string]struct{ path, format, says string }{
		"backing file":              {backing, "qcow2", "backing file"},
		"external data file":        {dataFile, "qcow2", "external data file"},
		"external raw data file":    {dataFileRaw, "qcow2", "external data file"},
		"data-file bit alone":       {bitOnly, "qcow2", "external data file"},
		"unknown incompatible bit":  {unknownBit, "qcow2", "unknown qcow2 incompatible features"},
		"encrypted":                 {encrypted, "qcow2", "encrypted"},
		"qcow2 declared raw":        {good, "raw", "declared raw, but its header is qcow2"},
		"qcow2 with backing as raw": {backing, "raw", "declared raw"},
		"raw declared qcow2":        {raw, "qcow2", "no qcow2 header"},
		"vmdk declared raw":         {vmdk, "raw", "vmdk"},
		"vmdk descriptor as raw":    {descriptor, "raw", "vmdk (descriptor)"},
		"vmdk declared qcow2":       {vmdk, "qcow2", "no qcow2 header"},
		"another format":            {vmdk, "vmdk", `disk format "vmdk"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := imagecheck.File(context.Background(), c.path, c.format, imagecheck.Options{})
			if !errors.Is(err, imagecheck.ErrRefused) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("err = %v, want a refusal saying %q", err, c.says)
			}
		})
	}
}

// qemu-img opens what a header names (a data file, a backing chain): it
// only ever sees files whose header passed.
func TestQemuImgNeverSeesAHostileHeader(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "qemu-img-ran")
	fake := filepath.Join(dir, "qemu-img")
	os.WriteFile(fake, []byte("#!/bin/sh\ntouch "+marker+"\nexit 1\n"), 0o755)
	img := hostileDataFile(t, dir, filepath.Join(dir, "victim"), "secret", true)
	if _, err := imagecheck.File(context.Background(), img, "qcow2", imagecheck.Options{QemuImg: fake}); !errors.Is(err, imagecheck.ErrRefused) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("qemu-img was run on an image whose header names an external data file")
	}
}

func TestStreamPassesACleanImageUnchangedAndRefusesAHostileOneFirst(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", good, "16M")
	want, _ := os.ReadFile(good)
	r, err := imagecheck.Stream(bytes.NewReader(want), "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	if !bytes.Equal(got, want) {
		t.Fatalf("the stream changed the image: %d bytes in, %d out", len(want), len(got))
	}
	img := hostileDataFile(t, dir, filepath.Join(dir, "victim"), "secret", true)
	evil, _ := os.ReadFile(img)
	if _, err := imagecheck.Stream(bytes.NewReader(evil), "qcow2"); !errors.Is(err, imagecheck.ErrRefused) {
		t.Fatalf("a hostile stream: %v", err)
	}
	if _, err := imagecheck.Stream(bytes.NewReader(nil), "qcow2"); !errors.Is(err, imagecheck.ErrRefused) {
		t.Fatalf("an empty qcow2 stream: %v", err)
	}
}

// FuzzHeader: no header makes the parser panic or read out of bounds, and
// whatever it accepts as qcow2 names no backing or data file.
func FuzzHeader(f *testing.F) {
	dir := f.TempDir()
	good := filepath.Join(dir, "good.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", good, "1M").CombinedOutput(); err != nil {
		f.Fatalf("qemu-img: %v: %s", err, out)
	}
	b, _ := os.ReadFile(good)
	f.Add(b[:min(len(b), 4096)])
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"))
	f.Fuzz(func(t *testing.T, head []byte) {
		if imagecheck.Header(head, "qcow2") == nil {
			be := binary.BigEndian
			if be.Uint64(head[8:]) != 0 || (be.Uint32(head[4:]) == 3 && be.Uint64(head[72:])&4 != 0) {
				t.Fatalf("accepted a header with a backing or data file: %x", head[:min(len(head), 128)])
			}
		}
		_ = imagecheck.Header(head, "raw")
	})
}
