package disk

import (
	"bytes"
	"regexp"
	"testing"
)

func TestDeriveIDsDeterministic(t *testing.T) {
	a, b := DeriveIDs([]byte("seed-1")), DeriveIDs([]byte("seed-1"))
	if a != b {
		t.Fatalf("same seed gave different IDs:\n%+v\n%+v", a, b)
	}
	c := DeriveIDs([]byte("seed-2"))
	if a.RootFS == c.RootFS || a.Disk == c.Disk || a.ESPVolumeID == c.ESPVolumeID {
		t.Fatalf("different seeds share IDs:\n%+v\n%+v", a, c)
	}
}

func TestDeriveIDsDistinctAndWellFormed(t *testing.T) {
	ids := DeriveIDs([]byte("x"))
	all := []UUID{ids.Disk, ids.BIOSBootPart, ids.ESPPart, ids.RootPart, ids.RootFS, ids.RootHashSeed}
	canon := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[UUID]bool{}
	for _, u := range all {
		if seen[u] {
			t.Errorf("UUID %s derived twice", u)
		}
		seen[u] = true
		if !canon.MatchString(u.String()) {
			t.Errorf("%s is not a canonical version-4 UUID", u)
		}
	}
	if ids.ESPVolumeID == 0 {
		t.Error("ESP volume id is 0")
	}
	if err := ids.validate(true); err != nil {
		t.Error(err)
	}
	if err := (IDs{}).validate(false); err == nil {
		t.Error("zero IDs validated")
	}
}

func TestUUIDParseAndGPTBytes(t *testing.T) {
	u, err := ParseUUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
	if err != nil {
		t.Fatal(err)
	}
	if u.String() != "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" {
		t.Errorf("String() = %s", u)
	}
	if u != TypeESP {
		t.Errorf("parsed ESP type %s != TypeESP %s", u, TypeESP)
	}
	// The ESP type GUID as it appears on disk (UEFI spec, mixed-endian).
	want := []byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}
	g := u.gptBytes()
	if !bytes.Equal(g[:], want) {
		t.Errorf("gptBytes = % x, want % x", g, want)
	}
	for _, bad := range []string{"", "c12a7328f81f11d2ba4b00a0c93ec93b", "g12a7328-f81f-11d2-ba4b-00a0c93ec93b"} {
		if _, err := ParseUUID(bad); err == nil {
			t.Errorf("ParseUUID(%q) succeeded", bad)
		}
	}
}

func TestESPVolumeIDString(t *testing.T) {
	ids := IDs{ESPVolumeID: 0x0a1b2c3d}
	if s := ids.ESPVolumeIDString(); s != "0A1B-2C3D" {
		t.Errorf("ESPVolumeIDString = %s, want 0A1B-2C3D", s)
	}
}
