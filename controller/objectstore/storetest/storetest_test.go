package storetest

import (
	"bytes"
	"io"
	"testing"
)

// Data must not depend on how it is read: the suite compares a stream
// read by a driver with one read by io.Copy.
func TestDataIndependentOfReadSizes(t *testing.T) {
	whole, _ := io.ReadAll(Data(9, 1000))
	var pieces []byte
	r := Data(9, 1000)
	buf := make([]byte, 7)
	for {
		n, err := r.Read(buf[:1+len(pieces)%7])
		pieces = append(pieces, buf[:n]...)
		if err != nil {
			break
		}
	}
	if len(whole) != 1000 || !bytes.Equal(whole, pieces) {
		t.Fatalf("Data read whole (%d bytes) and in pieces (%d bytes) differ", len(whole), len(pieces))
	}
}
