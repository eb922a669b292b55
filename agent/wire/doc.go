// Package wire is the one contract between the strata guest agent and the
// controller: the bootstrap document the agent boots from, the messages and
// operation kinds both sides exchange, their framing, the version and
// validation rules, and the key, token and request helpers both ends need.
// It holds the contract only. Each end lives with its owner: the agent's
// outbound SSH client in strata/agent/transport, the controller's SSH
// endpoint (Server, its Store, MemStore) in strata/controller/agentendpoint.
//
// The builder, the agent and the controller meet only here: the controller
// imports this package and nothing else of agent/; the agent and the
// builder import nothing of controller/ (ci/imports_test.go checks it).
// Keep it that way: wire must not import other strata packages, must not
// know about any datastore's internals, and must not grow either end's
// code or controller policy (timeouts that end in ERROR, task state): it
// says what moves, the two sides decide.
//
// Protocol (version 1), all over one SSH connection the agent dials:
//
//   - SSH user "strata-agent". The agent offers its own ed25519 key. An
//     enrolled key authenticates alone. An unknown key gets a partial success
//     and must then present the one-time enrollment token as a password; the
//     server redeems the token and binds the key to the token's instance in
//     one atomic store call. The instance is always derived from the key (or
//     the token), never from anything the agent claims.
//   - Global request "hello@strata-v1" (agent → controller, JSON Hello):
//     answered with JSON Welcome naming the instance the key belongs to.
//   - Global request "heartbeat@strata-v1" (agent → controller, JSON
//     Heartbeat): answered true if stored, false if dropped as stale.
//   - Global request "keepalive@openssh.com", both directions.
//   - Channel "op@strata-v1" (controller → agent), one per operation:
//     the controller writes one framed Operation; the agent answers with a
//     framed OpReply carrying an Ack, then one carrying the Result.
//   - Channel "stream@strata-v1" (agent → controller), opened by a running
//     backup or restore operation for its data, and accepted only for an
//     operation the controller sent this agent and waits on (the rules are
//     in backups.go).
//
// Frames are a 4-byte big-endian length followed by that many bytes of JSON,
// at most MaxMessageSize bytes.
package wire
