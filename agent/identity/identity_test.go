package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyIsCreatedPrivateAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	id, err := Load(dir, "inst-1")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, keyFile))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %04o", st.Mode().Perm())
	}
	if id.Enrolled || id.Signer.PublicKey().Type() != "ssh-ed25519" {
		t.Fatalf("fresh identity %+v", id)
	}
	again, err := Load(dir, "inst-1")
	if err != nil || again.Fingerprint() != id.Fingerprint() {
		t.Fatalf("key not kept: %v", err)
	}
}

func TestEnrollmentRecordBindsTheStateToOneInstance(t *testing.T) {
	dir := t.TempDir()
	id, _ := Load(dir, "inst-1")
	if err := id.MarkEnrolled(); err != nil {
		t.Fatal(err)
	}
	again, err := Load(dir, "inst-1")
	if err != nil || !again.Enrolled {
		t.Fatalf("enrolled state lost: %v", err)
	}
	if _, err := Load(dir, "inst-2"); err == nil || !strings.Contains(err.Error(), "belongs to instance inst-1") {
		t.Fatalf("other instance: %v", err)
	}
	// A replaced key does not inherit the enrollment.
	os.Remove(filepath.Join(dir, keyFile))
	if _, err := Load(dir, "inst-1"); err == nil || !strings.Contains(err.Error(), "enrollment record is for key") {
		t.Fatalf("replaced key: %v", err)
	}
}

func TestReadableKeyIsRefused(t *testing.T) {
	dir := t.TempDir()
	Load(dir, "i")
	os.Chmod(filepath.Join(dir, keyFile), 0o644)
	if _, err := Load(dir, "i"); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Fatalf("err = %v", err)
	}
}
