package publish

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// digests are the checksums of the image file: our own (SHA-256, as the
// build's .sha256 file names it) and the two Glance computes (checksum is
// MD5, os_hash_value SHA-512 by default).
type digests struct {
	SHA256, MD5, SHA512 string
	Size                int64
}

// hashFile reads path once and computes all three digests.
func hashFile(ctx context.Context, path string) (digests, error) {
	var d digests
	f, err := os.Open(path)
	if err != nil {
		return d, err
	}
	defer f.Close()
	s256, m5, s512 := sha256.New(), md5.New(), sha512.New()
	n, err := io.CopyBuffer(io.MultiWriter(s256, m5, s512), ctxReader{ctx, f}, make([]byte, 1<<20))
	if err != nil {
		return d, fmt.Errorf("reading %s: %w", path, err)
	}
	d.SHA256, d.MD5, d.SHA512, d.Size = hex.EncodeToString(s256.Sum(nil)), hex.EncodeToString(m5.Sum(nil)), hex.EncodeToString(s512.Sum(nil)), n
	return d, nil
}

// recordedSHA256 reads the build's IMAGE.sha256 file ("HEX  NAME", as
// sha256sum writes it).
func recordedSHA256(image string) (string, error) {
	data, err := os.ReadFile(image + ".sha256")
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%s.sha256 is missing: publish images as `strata build` writes them (image, .sha256 and .manifest.json side by side)", image)
	}
	if err != nil {
		return "", err
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 || len(fields[0]) != 64 || strings.Trim(strings.ToLower(fields[0]), "0123456789abcdef") != "" {
		return "", fmt.Errorf("%s.sha256: not a SHA-256 checksum line", image)
	}
	return strings.ToLower(fields[0]), nil
}

// ctxReader stops a long read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
