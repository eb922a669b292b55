// Package transport is the agent's end of the wire: the outbound SSH client
// that dials the controller (the guest listens on no port), pins the
// controller's host key, enrolls once with the one-time token, keeps one
// session up with keepalives and reconnects with backoff, sends
// heartbeats, hands every operation channel to an OperationHandler, and
// opens the data channels (OpenStream) a backup or restore operation
// streams its data over.
//
// What travels and how it is framed is the contract in strata/agent/wire;
// the controller's end (the SSH server) is controller/agentendpoint. This
// package imports nothing of strata but wire, and holds no operation
// semantics: running an operation at most once is agent/ops's job.
package transport
