package wire

import "golang.org/x/crypto/ssh"

// SSHConfig is the algorithms both ends of the agent protocol offer: no
// SHA-1 key exchange or MAC (x/crypto's defaults still offer
// diffie-hellman-group14-sha1, hmac-sha1 and hmac-sha1-96), only AEAD or
// counter-mode ciphers with SHA-2 MACs. Agents are baked into images and
// live for years, so the controller must keep accepting what an older
// agent offers: these are what x/crypto has offered by default, minus the
// SHA-1 ones.
func SSHConfig() ssh.Config {
	return ssh.Config{
		KeyExchanges: []string{ssh.KeyExchangeMLKEM768X25519, ssh.KeyExchangeCurve25519, ssh.KeyExchangeECDHP256,
			ssh.KeyExchangeECDHP384, ssh.KeyExchangeECDHP521},
		Ciphers: []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES256GCM, ssh.CipherAES128GCM,
			ssh.CipherAES256CTR, ssh.CipherAES192CTR, ssh.CipherAES128CTR},
		MACs: []string{ssh.HMACSHA256ETM, ssh.HMACSHA512ETM, ssh.HMACSHA256, ssh.HMACSHA512},
	}
}

// SSHPublicKeyAlgorithms are the signature algorithms an agent's key may
// authenticate with (agents make ed25519 keys): no ssh-rsa or ssh-dss
// (SHA-1) signature is offered or accepted.
var SSHPublicKeyAlgorithms = []string{ssh.KeyAlgoED25519}
