package wire

import (
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"
)

// aesGCMHardware: this processor has AES and carry-less multiply
// instructions, so AES-GCM runs at gigabytes a second; without them
// (an emulated guest, an old processor) ChaCha20-Poly1305 is faster.
var aesGCMHardware = (cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) || (cpu.ARM64.HasAES && cpu.ARM64.HasPMULL) ||
	(cpu.S390X.HasAES && cpu.S390X.HasAESGCM)

// SSHConfig is the algorithms both ends of the agent protocol offer: no
// SHA-1 key exchange or MAC (x/crypto's defaults still offer
// diffie-hellman-group14-sha1, hmac-sha1 and hmac-sha1-96), only AEAD or
// counter-mode ciphers with SHA-2 MACs. Agents are baked into images and
// live for years, so the controller must keep accepting what an older
// agent offers: these are what x/crypto has offered by default, minus the
// SHA-1 ones. The client's order chooses the cipher: AES-256-GCM first
// where the processor has AES-GCM instructions (x/crypto's ChaCha20 has
// no assembly on amd64: it cost a backup's data channel nearly a quarter
// of each end's CPU), ChaCha20-Poly1305 first elsewhere.
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
	if aesGCMHardware {
		aead = []string{ssh.CipherAES256GCM, ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305}
	}
	return append(aead, ssh.CipherAES256CTR, ssh.CipherAES192CTR, ssh.CipherAES128CTR)
}

// SSHPublicKeyAlgorithms are the signature algorithms an agent's key may
// authenticate with (agents make ed25519 keys): no ssh-rsa or ssh-dss
// (SHA-1) signature is offered or accepted.
var SSHPublicKeyAlgorithms = []string{ssh.KeyAlgoED25519}
