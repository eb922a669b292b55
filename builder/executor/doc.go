// Package executor runs element hooks: on the build host, or inside an image
// root (chroot). The element engine is handed an Executor and never calls
// chroot or mount itself, so the same hooks can also run on a live machine
// over SSH (see the Packer provisioner).
//
// The local executors run every command inside fresh Linux mount and PID
// namespaces. The chroot's /proc, /sys, /dev, /run and the hooks directory
// are mounted in that private namespace, so they disappear with it: a hook
// that fails, a build that is interrupted, even a builder that is killed
// with SIGKILL leaves no mount behind and no process running in the image
// root (the kernel kills a PID namespace's processes when its first process
// exits).
//
// This package must not know about elements, phases or images: it runs a
// command with an environment in a place and reports how it ended.
package executor
