package tasks

// OwnerOf names the process pid as a lease owner, as an engine in it
// would (tests fake the leases of other controller processes).
func OwnerOf(pid int) string {
	o := self()
	o.pid, o.start, o.engine = pid, procStart(pid), "0000"
	return o.String()
}
