package wire

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshPair connects a client and a server that both offer SSHConfig(), the
// client preferring ciphers in that order, over loopback TCP, and
// returns one channel's two ends.
func sshPair(tb testing.TB, ciphers []string) (ssh.Channel, ssh.Channel) {
	tb.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	scfg := &ssh.ServerConfig{Config: SSHConfig(), NoClientAuth: true}
	scfg.AddHostKey(signer)
	ccfg := &ssh.ClientConfig{Config: SSHConfig(), User: "bench", HostKeyCallback: ssh.FixedHostKey(signer.PublicKey())}
	if ciphers != nil {
		ccfg.Ciphers = ciphers
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		ch  ssh.Channel
		err error
	}
	got := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- accepted{err: err}
			return
		}
		_, chans, reqs, err := ssh.NewServerConn(c, scfg)
		if err != nil {
			got <- accepted{err: err}
			return
		}
		go ssh.DiscardRequests(reqs)
		nc := <-chans
		ch, creqs, err := nc.Accept()
		if err == nil {
			go ssh.DiscardRequests(creqs)
		}
		got <- accepted{ch, err}
	}()
	conn, err := ssh.Dial("tcp", ln.Addr().String(), ccfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	ch, reqs, err := conn.OpenChannel("bench", nil)
	if err != nil {
		tb.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	a := <-got
	if a.err != nil {
		tb.Fatal(a.err)
	}
	return ch, a.ch
}

func TestSSHConfigPrefersAESGCMOnlyWhereItIsFast(t *testing.T) {
	c := SSHConfig()
	all := []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305,
		ssh.CipherAES256CTR, ssh.CipherAES192CTR, ssh.CipherAES128CTR}
	if got := slices.Sorted(slices.Values(c.Ciphers)); !slices.Equal(got, slices.Sorted(slices.Values(all))) {
		t.Fatalf("ciphers offered %v, want exactly %v (older agents must keep connecting)", c.Ciphers, all)
	}
	want := ssh.CipherChaCha20Poly1305
	if preferAESGCM() {
		want = ssh.CipherAES256GCM
	}
	if c.Ciphers[0] != want {
		t.Fatalf("first cipher %s, want %s (AES-GCM hardware: %v, faster: %v)", c.Ciphers[0], want, aesGCMHardware, preferAESGCM())
	}
	if !aesGCMHardware && preferAESGCM() {
		t.Fatal("AES-GCM preferred without its instructions")
	}
	t.Logf("AES-GCM hardware %v; AES-256-GCM sealed 64 KiB in %v, ChaCha20 encrypted them in %v", aesGCMHardware, sealTimeOf(t, false), sealTimeOf(t, true))
}

// BenchmarkSSHChannel is one SSH data channel's throughput over loopback
// (both ends in this process, as the agent's and the controller's are),
// for each AEAD cipher the agent may prefer.
func BenchmarkSSHChannel(b *testing.B) {
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	for _, cipher := range []string{ssh.CipherAES256GCM, ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305} {
		b.Run(cipher, func(b *testing.B) {
			w, r := sshPair(b, []string{cipher})
			const size = 256 << 20
			b.SetBytes(size)
			for b.Loop() {
				done := make(chan error, 1)
				go func() {
					_, err := io.CopyN(io.Discard, r, size)
					done <- err
				}()
				for n := 0; n < size; n += len(buf) {
					if _, err := w.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func sealTimeOf(t *testing.T, chacha bool) time.Duration {
	key := make([]byte, 32)
	if chacha {
		return chachaTime(key)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aesGCMTime(gcm)
}
