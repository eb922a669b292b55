package redis

// SetFault makes account updates fail at the named step (see fault) until
// the returned function is called.
func SetFault(f func(step string) error) (restore func()) {
	old := fault
	fault = f
	return func() { fault = old }
}

// ForgetUsersDigest drops the cached users digest: the next UsersDigest
// reads the server.
func (m *Manager) ForgetUsersDigest() {
	m.digest.mu.Lock()
	defer m.digest.mu.Unlock()
	m.digest.digest = ""
}
