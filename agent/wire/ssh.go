package wire

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"
)

// aesGCMHardware: this processor says it has AES and carry-less
// multiply instructions. Under emulation it may say so too (qemu's TCG
// with -cpu max, as strata runs guests without KVM), and there they are
// slow: in qemu-user, one SSH channel ran 3.8 MB/s with AES-256-GCM and
// 24 MB/s with ChaCha20-Poly1305. So preferAESGCM also times the two.
var aesGCMHardware = (cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) || (cpu.ARM64.HasAES && cpu.ARM64.HasPMULL) ||
	(cpu.S390X.HasAES && cpu.S390X.HasAESGCM)

// preferAESGCM: AES-GCM has hardware and seals 64 KiB faster than
// x/crypto's ChaCha20 (the cipher SSH's ChaCha20-Poly1305 uses, without
// its Poly1305) encrypts them here: the best of three tries each, well
// under a millisecond natively and a tenth of a second emulated, once per
// process.
var preferAESGCM = sync.OnceValue(func() bool {
	if !aesGCMHardware {
		return false
	}
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return false
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return false
	}
	return aesGCMTime(gcm) < chachaTime(key)
})

func aesGCMTime(gcm cipher.AEAD) time.Duration {
	buf := make([]byte, 64<<10, 64<<10+gcm.Overhead())
	nonce := make([]byte, gcm.NonceSize())
	return bestOf(func() { gcm.Seal(buf[:0], nonce, buf, nil) })
}

func chachaTime(key []byte) time.Duration {
	buf := make([]byte, 64<<10)
	c, err := chacha20.NewUnauthenticatedCipher(key, make([]byte, chacha20.NonceSize))
	if err != nil {
		return time.Duration(1<<63 - 1)
	}
	return bestOf(func() { c.XORKeyStream(buf, buf) })
}

// bestOf is the shortest of three runs of f, after one that warms up.
func bestOf(f func()) time.Duration {
	best := time.Duration(1<<63 - 1)
	for i := range 4 {
		began := time.Now()
		f()
		if d := time.Since(began); i > 0 {
			best = min(best, d)
		}
	}
	return best
}

// SSHConfig is the algorithms both ends of the agent protocol offer: no
// SHA-1 key exchange or MAC (x/crypto's defaults still offer
// diffie-hellman-group14-sha1, hmac-sha1 and hmac-sha1-96), only AEAD or
// counter-mode ciphers with SHA-2 MACs. Agents are baked into images and
// live for years, so the controller must keep accepting what an older
// agent offers: these are what x/crypto has offered by default, minus the
// SHA-1 ones. The client's order chooses the cipher: AES-256-GCM first
// where the processor has AES-GCM instructions that are fast
// (preferAESGCM; x/crypto's ChaCha20 has no assembly on amd64: it cost a
// backup's data channel nearly a quarter of each end's CPU),
// ChaCha20-Poly1305 first elsewhere.
func SSHConfig() ssh.Config {
	return ssh.Config{
		KeyExchanges: []string{ssh.KeyExchangeMLKEM768X25519, ssh.KeyExchangeCurve25519, ssh.KeyExchangeECDHP256,
			ssh.KeyExchangeECDHP384, ssh.KeyExchangeECDHP521},
		Ciphers: ciphers(),
		MACs:    []string{ssh.HMACSHA256ETM, ssh.HMACSHA512ETM, ssh.HMACSHA256, ssh.HMACSHA512},
	}
}

func ciphers() []string {
	aead := []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES256GCM, ssh.CipherAES128GCM}
	if preferAESGCM() {
		aead = []string{ssh.CipherAES256GCM, ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305}
	}
	return append(aead, ssh.CipherAES256CTR, ssh.CipherAES192CTR, ssh.CipherAES128CTR)
}

// SSHPublicKeyAlgorithms are the signature algorithms an agent's key may
// authenticate with (agents make ed25519 keys): no ssh-rsa or ssh-dss
// (SHA-1) signature is offered or accepted.
var SSHPublicKeyAlgorithms = []string{ssh.KeyAlgoED25519}
