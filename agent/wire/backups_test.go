package wire

import (
	"strings"
	"testing"
)

func TestStreamOpenValidate(t *testing.T) {
	if err := (StreamOpen{OpID: "backup-1", Index: 0}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []StreamOpen{{OpID: "", Index: 0}, {OpID: "x y", Index: 0}, {OpID: "a", Index: -1}, {OpID: "a", Index: MaxChainLength}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestRestoreArgsValidateNamesTheBadLink(t *testing.T) {
	d := StreamDigest{Bytes: 10, SHA256: strings.Repeat("ab", 32)}
	full := RestoreBackup{BackupID: "full", Stream: d, Compression: CompressionZstd}
	inc := RestoreBackup{BackupID: "inc", Incremental: true, Stream: d, Compression: CompressionZstd}
	if err := (RestoreArgs{Chain: []RestoreBackup{full, inc, inc}}).Validate(); err != nil {
		t.Fatal(err)
	}
	badDigest := inc
	badDigest.Stream.SHA256 = "XYZ"
	badComp := inc
	badComp.Compression = "gzip"
	for want, a := range map[string]RestoreArgs{
		"at least the full backup":               {},
		"chain[0]: backup inc is incremental":    {Chain: []RestoreBackup{inc}},
		"chain[1]: backup full is a full backup": {Chain: []RestoreBackup{full, full}},
		"chain[1] (inc): stream digest: sha256":  {Chain: []RestoreBackup{full, badDigest}},
		`compression "gzip" is not supported`:    {Chain: []RestoreBackup{full, badComp}},
		"at most 64":                             {Chain: make([]RestoreBackup, MaxChainLength+1)},
	} {
		err := a.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q, got %v", want, err)
		}
	}
}

func TestBackupArgsValidate(t *testing.T) {
	if err := (BackupArgs{BackupID: "0f3c-aa"}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (BackupArgs{BackupID: "../x"}).Validate(); err == nil {
		t.Fatal("path-like backup id accepted")
	}
}
