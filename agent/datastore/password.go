package datastore

import "crypto/rand"

// GeneratePassword returns a password of 52 base32 characters (260 bits)
// from crypto/rand.
func GeneratePassword() string { return rand.Text() + rand.Text() }
