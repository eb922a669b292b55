package main

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
	"strata/agent/wire/wiretest"
)

func runMain(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	// The logger writes to the process's stderr; capture it.
	r, w, _ := os.Pipe()
	saved := os.Stderr
	os.Stderr = w
	code := run(args, &out, &errOut)
	w.Close()
	os.Stderr = saved
	var logged bytes.Buffer
	logged.ReadFrom(r)
	return code, out.String() + errOut.String() + logged.String()
}

func goodBootstrap(t *testing.T) wire.Bootstrap {
	return wire.Bootstrap{
		Format: 1, InstanceID: "inst-main", Controllers: []string{"10.0.2.2:2222"},
		ControllerHostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(wiretest.NewSigner(t).PublicKey()))),
		EnrollmentToken:   wire.NewEnrollmentToken(),
		Datastore:         wire.DatastoreRef{Manager: "mariadb", Version: "10.11"},
	}
}

func writeJSON(t *testing.T, v any) string {
	p := filepath.Join(t.TempDir(), "bootstrap.json")
	b, _ := json.Marshal(v)
	os.WriteFile(p, b, 0o600)
	return p
}

func TestVersion(t *testing.T) {
	code, out := runMain(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "strata-agent dev (commit unknown") {
		t.Fatalf("%d %q", code, out)
	}
}

func TestCheckAcceptsAGoodBootstrap(t *testing.T) {
	code, out := runMain(t, "--check", "--state-dir", t.TempDir(), "--bootstrap", writeJSON(t, goodBootstrap(t)))
	if code != 0 || !strings.Contains(out, "is valid: instance inst-main, mariadb 10.11") {
		t.Fatalf("%d %q", code, out)
	}
}

func TestRefusesToStartAndSaysWhy(t *testing.T) {
	noToken := goodBootstrap(t)
	noToken.EnrollmentToken = ""
	unknown := goodBootstrap(t)
	unknown.Datastore.Manager = "mongodb"
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing token", []string{"--bootstrap", writeJSON(t, noToken)}, "enrollment_token: missing"},
		{"garbled file", []string{"--bootstrap", writeJSON(t, "not an object")}, "not a valid bootstrap JSON document"},
		{"missing file", []string{"--bootstrap", "/nonexistent/b.json"}, "no such file"},
		{"no config drive", []string{"--config-drive", "/nonexistent"}, "config drive directory /nonexistent does not exist"},
		{"unknown datastore", []string{"--bootstrap", writeJSON(t, unknown)}, "is not one of mariadb, postgresql, redis"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runMain(t, append(tc.args, "--state-dir", t.TempDir())...)
			if code != exitConfig || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, output %q; want %d and %q", code, out, exitConfig, tc.want)
			}
		})
	}
	if code, _ := runMain(t, "--no-such-flag"); code != 2 {
		t.Fatalf("unknown flag: exit %d", code)
	}
}

// The binary the Makefile builds is static and carries its version.
func TestBinaryIsStaticAndStamped(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "strata-agent")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-s -w -X main.version=v9.9.9 -X main.commit=abc123", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "strata-agent v9.9.9 (commit abc123") {
		t.Fatalf("--version: %q %v", out, err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatal("binary is dynamically linked")
		}
	}
	st, _ := os.Stat(bin)
	if st.Size() > 15<<20 {
		t.Fatalf("binary is %d bytes, over the 15 MiB budget", st.Size())
	}
}

// -network-config writes the units for the drive's network_data.json and
// exits without a bootstrap; no file writes nothing; a bad one fails,
// saying what and that DHCP stays.
func TestNetworkConfigFromTheConfigDrive(t *testing.T) {
	drive, dir := t.TempDir(), filepath.Join(t.TempDir(), "network")
	code, out := runMain(t, "-config-drive", drive, "-network-config", dir)
	if code != 0 || !strings.Contains(out, "no openstack/latest/network_data.json on the config drive") {
		t.Fatalf("no data: exit %d, %q", code, out)
	}
	data := filepath.Join(drive, "openstack/latest/network_data.json")
	os.MkdirAll(filepath.Dir(data), 0o700)
	os.WriteFile(data, []byte(`{"links": [{"id": "tapa", "type": "bridge", "mtu": 1450, "ethernet_mac_address": "fa:16:3e:01:02:03"},
	  {"id": "vl", "type": "vlan", "vlan_link": "tapa"}],
	 "networks": [{"id": "network0", "type": "ipv4", "link": "tapa", "ip_address": "10.213.7.9", "netmask": "255.255.255.0",
	   "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.213.7.1"}]}]}`), 0o600)
	code, out = runMain(t, "-config-drive", drive, "-network-config", dir)
	unit := filepath.Join(dir, "10-strata-netdata-fa163e010203.network")
	if code != 0 || !strings.Contains(out, unit+": link tapa (fa:16:3e:01:02:03): 10.213.7.9/24") || !strings.Contains(out, `left to DHCP: links[1] ("vl")`) {
		t.Fatalf("exit %d, %q", code, out)
	}
	if b, err := os.ReadFile(unit); err != nil || !strings.Contains(string(b), "Address=10.213.7.9/24\n") || !strings.Contains(string(b), "Gateway=10.213.7.1\n") {
		t.Fatalf("unit %q, %v", b, err)
	}
	os.WriteFile(data, []byte(`{"links": [{"id": "tapa", "ethernet_mac_address": "fa:16:3e:01:02:03\nDNS=1.1.1.1"}]}`), 0o600)
	code, out = runMain(t, "-config-drive", drive, "-network-config", dir)
	if code != 1 || !strings.Contains(out, "ethernet_mac_address") || !strings.Contains(out, "interfaces keep DHCP") {
		t.Fatalf("bad data: exit %d, %q", code, out)
	}
}
