package aptsource

import (
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDeb822(t *testing.T) {
	root := t.TempDir()
	write(t, root, "etc/apt/sources.list.d/vendor.sources", `Types: deb
URIs: https://vendor.example.net/apt
Suites: nodistro
Components: main
`)
	write(t, root, "etc/apt/sources.list.d/debian.sources", `# a comment
Types: deb deb-src
URIs: http://apt.example.net/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://disabled.example.net/debian
Suites: bookworm
Enabled: no

Types: deb
URIs: http://security.example.net/debian-security
Suites: bookworm-security
Components: main
`)
	m, err := Find(root)
	if err != nil {
		t.Fatal(err)
	}
	if m.Debian != "http://apt.example.net/debian" || m.Security != "http://security.example.net/debian-security" {
		t.Fatalf("mirrors = %+v", m)
	}
}

func TestLegacyOneLineFormat(t *testing.T) {
	root := t.TempDir()
	write(t, root, "etc/apt/sources.list", `# deb http://commented.example.net/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://apt.example.net/debian bullseye main contrib
deb http://apt.example.net/debian-security bullseye/updates main
deb https://vendor.example.net/apt cloud-sdk main
`)
	write(t, root, "etc/apt/sources.list.d/ubuntu.list", "deb http://other-vendor.example.net/ubuntu jammy main\n")
	m, err := Find(root)
	if err != nil {
		t.Fatal(err)
	}
	if m.Debian != "http://apt.example.net/debian" || m.Security != "http://apt.example.net/debian-security" {
		t.Fatalf("mirrors = %+v", m)
	}
}

func TestNoDebianSources(t *testing.T) {
	root := t.TempDir()
	write(t, root, "etc/apt/sources.list", "deb http://other-vendor.example.net/ubuntu noble main\n")
	m, err := Find(root)
	if err != nil {
		t.Fatal(err)
	}
	if m.Debian != "" || m.Security != "" {
		t.Fatalf("an Ubuntu source was taken for Debian: %+v", m)
	}
}

func TestMalformedLine(t *testing.T) {
	root := t.TempDir()
	write(t, root, "etc/apt/sources.list", "dbe http://x.example.net/debian bookworm main\n")
	if _, err := Find(root); err == nil {
		t.Fatal("accepted a malformed line")
	}
}

func TestThisHost(t *testing.T) {
	// The build host is Debian: its own sources must yield a mirror, or
	// debian-minimal could not build without DIB_DISTRIBUTION_MIRROR.
	if _, err := os.Stat("/etc/debian_version"); err != nil {
		t.Fatal("this test runs on the Debian build host")
	}
	m, err := Find("/")
	if err != nil {
		t.Fatal(err)
	}
	if m.Debian == "" {
		t.Fatal("no Debian mirror found in this host's apt sources")
	}
}
