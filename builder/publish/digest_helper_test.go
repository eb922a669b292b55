package publish_test

import (
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"os"
	"testing"
)

type fileDigests struct {
	md5, sha512 string
	size        int
}

func digestsOf(t *testing.T, path string) fileDigests {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := md5.Sum(data)
	s := sha512.Sum512(data)
	return fileDigests{hex.EncodeToString(m[:]), hex.EncodeToString(s[:]), len(data)}
}
