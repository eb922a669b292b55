package manifest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDpkgPackagesReadsInstalledOnly(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "var/lib/dpkg"), 0o755)
	os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(`Package: zlib1g
Status: install ok installed
Architecture: amd64
Source: zlib (1:1.2.13.dfsg-1)
Version: 1:1.2.13.dfsg-1
Description: compression library
 runtime

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b7
`), 0o644)
	pkgs, err := DpkgPackages(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 2 || pkgs[0].Name != "bash" || pkgs[1].Name != "zlib1g" || pkgs[1].Source != "zlib" || pkgs[1].Version != "1:1.2.13.dfsg-1" {
		t.Fatalf("packages = %+v", pkgs)
	}
	if pkgs, err := DpkgPackages(t.TempDir()); err != nil || pkgs != nil {
		t.Fatalf("a tree without dpkg: %v %v", pkgs, err)
	}
}

func TestManifestRoundTripAndSPDX(t *testing.T) {
	dir := t.TempDir()
	m := &Manifest{
		FormatVersion: Version, Image: "db", Builder: "test", Created: time.Unix(1, 0).UTC(), Arch: "amd64",
		Packages: []Package{{Name: "mariadb-server", Version: "1:10.11.6-0+deb12u1", Arch: "amd64", Source: "mariadb"}},
		Outputs:  []Output{{File: "db.qcow2", Format: "qcow2", SHA256: "ab", Size: 1}},
		Agent:    &Agent{Version: "v1", SHA256: "cd"},
		Inputs:   Inputs{PhaseKeys: map[string]string{"final": "k"}},
	}
	if err := m.Write(filepath.Join(dir, "m.json")); err != nil {
		t.Fatal(err)
	}
	back, err := Read(filepath.Join(dir, "m.json"))
	if err != nil || back.Image != "db" || back.Agent.SHA256 != "cd" {
		t.Fatalf("read back %+v, %v", back, err)
	}
	os.WriteFile(filepath.Join(dir, "old.json"), []byte(`{"format_version": 99}`), 0o644)
	if _, err := Read(filepath.Join(dir, "old.json")); err == nil || !strings.Contains(err.Error(), "format 99") {
		t.Fatalf("unknown format: %v", err)
	}
	if err := m.WriteSPDX(filepath.Join(dir, "s.json"), "debian"); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct {
			Name         string
			SPDXID       string
			ExternalRefs []struct{ ReferenceLocator string } `json:"externalRefs"`
		}
		Relationships []struct{ RelationshipType string } `json:"relationships"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "s.json"))
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.SPDXVersion != "SPDX-2.3" || len(doc.Packages) != 3 || len(doc.Relationships) != 3 {
		t.Fatalf("spdx = %+v", doc)
	}
	purl := doc.Packages[1].ExternalRefs[0].ReferenceLocator
	if purl != "pkg:deb/debian/mariadb-server@1:10.11.6-0+deb12u1?arch=amd64&upstream=mariadb" {
		t.Errorf("purl = %s", purl)
	}
	for _, p := range doc.Packages {
		if strings.ContainsAny(p.SPDXID, ":+~ ") {
			t.Errorf("SPDX id %q has characters SPDX forbids", p.SPDXID)
		}
	}
}
