package format

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
)

const (
	// DefaultChunkSize is the plaintext bytes per sealed chunk.
	DefaultChunkSize = 64 << 10
	maxChunkSize     = 16 << 20
	// DefaultSegmentSize is the stored bytes per segment (whole chunks):
	// small enough that one lost upload costs little to redo, large
	// enough that a 1 TiB backup has ~16 000 segments.
	DefaultSegmentSize = 64 << 20
	overhead           = 16 // GCM tag per chunk
	streamAAD          = "strata backup stream v1"
)

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// nonce is the STREAM nonce of chunk i: the counter big-endian in bytes
// 3..10, byte 11 set on the last chunk. The data key is fresh per backup,
// so a counter never repeats under one key.
func nonce(dst *[12]byte, i uint64, last bool) []byte {
	*dst = [12]byte{}
	binary.BigEndian.PutUint64(dst[3:11], i)
	if last {
		dst[11] = 1
	}
	return dst[:]
}
