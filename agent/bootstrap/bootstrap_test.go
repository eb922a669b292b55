package bootstrap

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"strata/agent/wire"
	"strata/agent/wire/wiretest"
)

func doc(t *testing.T, instance string) []byte {
	b, _ := json.Marshal(wire.Bootstrap{
		Format: 1, InstanceID: instance, Controllers: []string{"10.0.2.2:2222"},
		ControllerHostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(wiretest.NewSigner(t).PublicKey()))),
		EnrollmentToken:   wire.NewEnrollmentToken(),
		Datastore:         wire.DatastoreRef{Manager: "mariadb", Version: "10.11"},
	})
	return b
}

func write(t *testing.T, dir, rel string, data []byte) {
	p := filepath.Join(dir, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func personality(t *testing.T, dir string, content []byte) {
	write(t, dir, "openstack/latest/meta_data.json", []byte(`{"uuid":"x","files":[{"path":"/etc/other","content_path":"/content/0000"},{"path":"/etc/strata/bootstrap.json","content_path":"/content/0001"}]}`))
	write(t, dir, "openstack/content/0001", content)
}

func TestFromFileFlag(t *testing.T) {
	p := filepath.Join(t.TempDir(), "b.json")
	os.WriteFile(p, doc(t, "inst-file"), 0o600)
	b, where, err := Load(Source{File: p, ConfigDrive: "/nonexistent"})
	if err != nil || b.InstanceID != "inst-file" || where != p {
		t.Fatalf("%+v %q %v", b, where, err)
	}
	_, _, err = Load(Source{File: p + ".missing"})
	if err == nil || !strings.Contains(err.Error(), "bootstrap file") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestFromConfigDrive(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "strata/bootstrap.json", doc(t, "inst-drive"))
	b, where, err := Load(Source{ConfigDrive: dir})
	if err != nil || b.InstanceID != "inst-drive" || !strings.HasSuffix(where, "strata/bootstrap.json") {
		t.Fatalf("%+v %q %v", b, where, err)
	}
}

func TestFromNovaPersonalityFile(t *testing.T) {
	dir := t.TempDir()
	personality(t, dir, doc(t, "inst-nova"))
	b, where, err := Load(Source{ConfigDrive: dir})
	if err != nil || b.InstanceID != "inst-nova" || !strings.Contains(where, "content/0001") {
		t.Fatalf("%+v %q %v", b, where, err)
	}
}

func TestBothPlacesMustAgree(t *testing.T) {
	dir := t.TempDir()
	same := doc(t, "inst-1")
	write(t, dir, "strata/bootstrap.json", same)
	personality(t, dir, same)
	if _, _, err := Load(Source{ConfigDrive: dir}); err != nil {
		t.Fatalf("identical copies: %v", err)
	}
	personality(t, dir, doc(t, "inst-2"))
	_, _, err := Load(Source{ConfigDrive: dir})
	if err == nil || !strings.Contains(err.Error(), "inconsistent bootstrap") {
		t.Fatalf("differing copies: %v", err)
	}
}

func TestMissingAndMalformedSayWhat(t *testing.T) {
	cases := []struct {
		name  string
		setup func(dir string)
		want  string
	}{
		{"no drive", func(dir string) { os.RemoveAll(dir) }, "does not exist"},
		{"empty drive", func(dir string) {}, "neither strata/bootstrap.json nor an OpenStack personality file"},
		{"garbled", func(dir string) { write(t, dir, "strata/bootstrap.json", []byte("{not json")) }, "not a valid bootstrap JSON document"},
		{"invalid field", func(dir string) {
			write(t, dir, "strata/bootstrap.json", []byte(`{"format":1,"instance_id":"a b"}`))
		}, "instance_id:"},
		{"garbled meta_data", func(dir string) { write(t, dir, "openstack/latest/meta_data.json", []byte("{")) }, "meta_data.json is not valid JSON"},
		{"traversal content_path", func(dir string) {
			write(t, dir, "openstack/latest/meta_data.json", []byte(`{"files":[{"path":"/etc/strata/bootstrap.json","content_path":"/../../etc/shadow"}]}`))
		}, "not of the form /content/NNNN"},
		{"dangling content_path", func(dir string) {
			write(t, dir, "openstack/latest/meta_data.json", []byte(`{"files":[{"path":"/etc/strata/bootstrap.json","content_path":"/content/0009"}]}`))
		}, "cannot be read"},
		{"oversized", func(dir string) {
			write(t, dir, "strata/bootstrap.json", make([]byte, wire.MaxBootstrapSize+1))
		}, "larger than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(dir)
			_, _, err := Load(Source{ConfigDrive: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}
