package mariadb

// SetFault makes account updates fail at the named step (see fault) until
// the returned function is called.
func SetFault(f func(step string) error) (restore func()) {
	old := fault
	fault = f
	return func() { fault = old }
}
